"""Running a .tflite file with the LiteRT interpreter (`ai_edge_litert`), the maintained successor of the
deprecated `tf.lite.Interpreter` (REFERENCE.md section 3).

LiteRT applies the XNNPACK delegate to CPU graphs by default (its op resolver "AUTO"), for float and int8 alike;
`TFLiteModel` hides the input quantization (uint8/int8 inputs are quantized from 0..255 pixels with the
model's own scale and zero point) and always returns dequantized float32 probabilities.
"""

from __future__ import annotations

import os
import time

import numpy as np


def _interpreter_class():
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter


class TFLiteModel:
    """One classifier .tflite (a path or its bytes) on the LiteRT interpreter, batch 1."""

    def __init__(self, model, *, num_threads: int = 1, preserve_all_tensors: bool = False):
        """`preserve_all_tensors=True` keeps every intermediate tensor readable; it also turns XNNPACK off, since
        a delegate computes its partition's intermediates internally and leaves their tensors stale."""
        Interpreter = _interpreter_class()
        kwargs = {"num_threads": int(num_threads), "experimental_preserve_all_tensors": preserve_all_tensors}
        if preserve_all_tensors:
            from ai_edge_litert.interpreter import OpResolverType

            kwargs["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        if isinstance(model, (bytes, bytearray)):
            self.path = None
            self.interpreter = Interpreter(model_content=bytes(model), **kwargs)
        else:
            path = os.fspath(model)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"tflite file {path!r} does not exist.")
            self.path = path
            try:
                self.interpreter = Interpreter(model_path=path, **kwargs)
            except (ValueError, RuntimeError) as exc:
                raise ValueError(f"tflite file {path!r} could not be loaded by LiteRT: {exc}") from None
        self.interpreter.allocate_tensors()
        inputs = self.interpreter.get_input_details()
        outputs = self.interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(f"expected a classifier with 1 input and 1 output, got {len(inputs)} and {len(outputs)}.")
        self.input = inputs[0]
        self.output = outputs[0]
        self.input_shape = tuple(int(d) for d in self.input["shape"])

    @property
    def input_dtype(self) -> str:
        return np.dtype(self.input["dtype"]).name

    @property
    def output_dtype(self) -> str:
        return np.dtype(self.output["dtype"]).name

    def _set_input(self, image):
        image = np.asarray(image, dtype=np.float32)
        if image.ndim == 3:
            image = image[None]
        if tuple(image.shape) != self.input_shape:
            raise ValueError(f"image batch of shape {image.shape} does not fit the model input {self.input_shape}.")
        dtype = np.dtype(self.input["dtype"])
        if dtype.kind in "iu":
            scale, zero = self.input["quantization"]
            info = np.iinfo(dtype)
            image = np.clip(np.round(image / scale + zero), info.min, info.max).astype(dtype)
        else:
            image = image.astype(dtype)
        self.interpreter.set_tensor(self.input["index"], image)

    def _get_output(self):
        out = self.interpreter.get_tensor(self.output["index"])
        if np.dtype(out.dtype).kind in "iu":
            scale, zero = self.output["quantization"]
            out = (out.astype(np.float32) - zero) * scale
        return out.astype(np.float32)

    def predict_one(self, image) -> np.ndarray:
        self._set_input(image)
        self.interpreter.invoke()
        return self._get_output()[0]

    def predict(self, images) -> np.ndarray:
        """Probabilities for a stack of HxWx3 images with pixels 0..255, one invoke per image."""
        return np.stack([self.predict_one(image) for image in images]) if len(images) else np.zeros((0,), np.float32)

    def time_invokes(self, image, *, runs: int, warmup: int) -> np.ndarray:
        """Seconds per invoke, `runs` times after `warmup` untimed ones (the input is set once)."""
        self._set_input(image)
        for _ in range(warmup):
            self.interpreter.invoke()
        times = np.empty(runs, dtype=np.float64)
        for i in range(runs):
            start = time.perf_counter()
            self.interpreter.invoke()
            times[i] = time.perf_counter() - start
        return times

    def op_names(self) -> list[str]:
        return sorted({op["op_name"] for op in self.interpreter._get_ops_details()})


def latency_stats(seconds: np.ndarray) -> dict:
    """Median and spread (in ms) of per-invoke times."""
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    return {
        "median_ms": float(np.median(ms)), "p10_ms": float(np.percentile(ms, 10)),
        "p90_ms": float(np.percentile(ms, 90)), "min_ms": float(ms.min()), "max_ms": float(ms.max()),
        "std_ms": float(ms.std()), "runs": int(ms.size),
    }
