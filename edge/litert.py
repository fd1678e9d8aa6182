"""Running a .tflite file with LiteRT (`ai_edge_litert`), the maintained successor of the deprecated
`tf.lite.Interpreter`.

Two APIs, each for what it does best:

- `TFLiteModel` (the Interpreter API) for predictions: it hides the input quantization (uint8/int8 inputs are
  quantized from 0..255 pixels with the model's own scale and zero point) and returns float32 probabilities.
  It applies the XNNPACK delegate by default (op resolver "AUTO"); `undelegated_ops` names the ops it leaves
  to LiteRT's reference kernels.
- `compiled_latency` (the `CompiledModel` API, what Android's LiteRT and LiteRT's own `litert-benchmark` /
  `benchmark_litert_model` run) for latency and for `fully_accelerated`. Timing the Interpreter from Python
  adds per-invoke overhead that the CompiledModel path does not have, and small models show it most.
"""

from __future__ import annotations

import collections
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
        "median_ms": float(np.median(ms)),
        "p10_ms": float(np.percentile(ms, 10)),
        "p90_ms": float(np.percentile(ms, 90)),
        "min_ms": float(ms.min()),
        "max_ms": float(ms.max()),
        "p5_ms": float(np.percentile(ms, 5)),
        "p95_ms": float(np.percentile(ms, 95)),
        "std_ms": float(ms.std()),
        "runs": int(ms.size),
    }


def op_counts(model) -> dict[str, int]:
    """{op name: count} of a .tflite (a path or its bytes), in the file's own graph (no delegate applied)."""
    _, ops = graph(model)
    return dict(sorted(collections.Counter(op["op_name"] for op in ops).items()))


def graph(model) -> tuple[dict[int, dict], list[dict]]:
    """The tensors (by index) and the ops, in order, of a .tflite (a path or its bytes): the file's own graph,
    as LiteRT's Interpreter details them (`_plain_interpreter`)."""
    interp = _plain_interpreter(model)
    return {t["index"]: t for t in interp.get_tensor_details()}, interp._get_ops_details()


def _plain_interpreter(model):
    """A LiteRT Interpreter of a .tflite (a path or its bytes) without the default delegates, tensors allocated:
    the file's own graph, for reading its ops and tensors."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kwargs = {"experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
    if isinstance(model, (bytes, bytearray)):
        interp = Interpreter(model_content=bytes(model), **kwargs)
    else:
        interp = Interpreter(model_path=os.fspath(model), **kwargs)
    interp.allocate_tensors()
    return interp


# Why XNNPACK leaves an op to LiteRT's reference kernels, for the cases this project's exports can produce.
_NOT_ON_XNNPACK = {
    ("QUANTIZE", "uint8", "int8"): "XNNPACK has no uint8 -> int8 requantization (use --io_dtype=float32 or int8)",
    ("QUANTIZE", "int8", "uint8"): "XNNPACK has no int8 -> uint8 requantization (use --io_dtype=float32 or int8)",
    ("SOFTMAX", "int8", "int8"): "XNNPACK has no quantized softmax",
    ("SOFTMAX", "uint8", "uint8"): "XNNPACK has no quantized softmax",
}


def undelegated_ops(model, *, num_threads: int = 1) -> list[dict]:
    """The ops of a .tflite that the XNNPACK delegate leaves to the reference kernels: [{op, index, input, output,
    why}], in graph order; empty when the whole graph runs on XNNPACK.

    After delegation the execution plan holds DELEGATE nodes and the ops they did not take. Walking back from
    the outputs through producers (a DELEGATE node first: it produces its partition's outputs) finds exactly
    the plan's own ops.
    """
    from ai_edge_litert.interpreter import Interpreter

    if isinstance(model, (bytes, bytearray)):
        interp = Interpreter(model_content=bytes(model), num_threads=num_threads)
    else:
        interp = Interpreter(model_path=os.fspath(model), num_threads=num_threads)
    interp.allocate_tensors()
    details = {t["index"]: t for t in interp.get_tensor_details()}
    ops = interp._get_ops_details()
    by_delegate, by_op = {}, {}
    for op in ops:
        for t in op["outputs"]:
            (by_delegate if op["op_name"] == "DELEGATE" else by_op)[t] = op
    todo = [d["index"] for d in interp.get_output_details()]
    seen, left = set(), {}
    while todo:
        t = todo.pop()
        if t in seen:
            continue
        seen.add(t)
        op = by_delegate.get(t) or by_op.get(t)
        if op is None:
            continue
        if op["op_name"] != "DELEGATE":
            left[op["index"]] = op
        todo.extend(i for i in op["inputs"] if i >= 0)

    def dtype(index):
        return np.dtype(details[index]["dtype"]).name if index in details else "?"

    produced = set(by_op) | set(by_delegate)
    graph_inputs = {d["index"] for d in interp.get_input_details()}
    out = []
    for index in sorted(left):
        op = left[index]
        inputs = [int(i) for i in op["inputs"] if i >= 0 and i in details]
        activations = [i for i in inputs if i in produced or i in graph_inputs]
        weights = [i for i in inputs if i not in produced and i not in graph_inputs]
        first_in = dtype(activations[0]) if activations else "-"
        first_out = dtype(int(op["outputs"][0])) if len(op["outputs"]) else "-"
        why = _NOT_ON_XNNPACK.get((op["op_name"], first_in, first_out))
        if why is None and "int16" in (first_in, first_out):
            why = "XNNPACK has no 16-bit activation kernels"
        if why is None and first_in == "float32" and any(dtype(w) == "int8" for w in weights):
            why = "XNNPACK has no dynamic-range kernel (int8 weights, float activations) for this op"
        out.append(
            {
                "op": op["op_name"],
                "index": int(index),
                "input": first_in,
                "output": first_out,
                "why": why or "not supported by the XNNPACK delegate for these types",
            }
        )
    return out


def compiled_latency(model, *, num_threads: int = 1, runs: int = 50, warmup: int = 5, seed: int = 0) -> dict:
    """Latency of one batch-1 inference with LiteRT's CompiledModel API on the CPU (XNNPACK), as
    `litert-benchmark` measures it: the input written once, then `warmup` untimed and `runs` timed
    `run_by_name` calls. Returns `latency_stats` plus `fully_accelerated` (every op on the accelerator).
    """
    from ai_edge_litert.compiled_model import CompiledModel
    from ai_edge_litert.hardware_accelerator import HardwareAccelerator
    from ai_edge_litert.options import CpuOptions, Options

    options = Options(
        hardware_accelerators=HardwareAccelerator.CPU, cpu_options=CpuOptions(num_threads=int(num_threads))
    )
    if isinstance(model, (bytes, bytearray)):
        compiled = CompiledModel.from_buffer(bytes(model), options=options)
    else:
        compiled = CompiledModel.from_file(os.fspath(model), options=options)
    signature = next(iter(compiled.get_signature_list()))
    in_details = compiled.get_input_tensor_details(signature)
    inputs = {name: compiled.create_input_buffer_by_name(signature, name) for name in in_details}
    outputs = {
        name: compiled.create_output_buffer_by_name(signature, name)
        for name in compiled.get_output_tensor_details(signature)
    }
    rng = np.random.default_rng(seed)
    for name, buffer in inputs.items():
        d = in_details[name]
        dtype = np.dtype(d["dtype"])
        low, high = (np.iinfo(dtype).min, np.iinfo(dtype).max) if dtype.kind in "iu" else (0.0, 255.0)
        buffer.write(rng.uniform(low, high, size=d["shape"]).astype(dtype))
    for _ in range(warmup):
        compiled.run_by_name(signature, inputs, outputs)
    times = np.empty(runs, dtype=np.float64)
    for i in range(runs):
        start = time.perf_counter()
        compiled.run_by_name(signature, inputs, outputs)
        times[i] = time.perf_counter() - start
    stats = latency_stats(times)
    stats["fully_accelerated"] = bool(compiled.is_fully_accelerated())
    stats["api"] = "CompiledModel"
    stats["threads"] = int(num_threads)
    compiled.close()
    return stats
