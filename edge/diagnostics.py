"""Which layers an int8 model gets wrong: float vs int8 intermediate outputs, per tensor.

Post-training int8 of swish+SE EfficientNets can lose more than 15 top-1 points with no hint of where
(tensorflow/tpu#549). Both .tflite files run on the same images with LiteRT's
`experimental_preserve_all_tensors`, every op output of the int8 model is dequantized and compared with the
float32 model's output of the same Keras layer and op, and the tensors with the largest relative RMS error
are named (the usual suspects: SE gates, swish outputs, the stem).

Tensors are matched by (Keras layer, TFLite op, occurrence), the layer read from the tensor name that the
converter derives from the Keras graph. This is meant for post-training int8, whose graph and weights are the
float model's; a QAT model has fine-tuned weights, so its differences from the float model are not errors.
Runs without XNNPACK (see `litert.TFLiteModel`).
"""

from __future__ import annotations

import re
import warnings

import numpy as np

from edge import litert

_SUFFIX = re.compile(r"_\d+$")


def _layer(tensor_name: str) -> str | None:
    parts = tensor_name.split(";")[0].split("/")
    if len(parts) < 3:
        return None
    return _SUFFIX.sub("", parts[1].removeprefix("quant_"))


def _outputs(path: str, image) -> dict:
    """{(layer, op, k): float array} for every op output of one run."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "preserve_all_tensors is for debugging": that is the point
        model = litert.TFLiteModel(path, preserve_all_tensors=True)
    model.predict_one(image)
    interp = model.interpreter
    details = {t["index"]: t for t in interp.get_tensor_details()}
    out, seen = {}, {}
    for op in interp._get_ops_details():
        if op["op_name"] in ("QUANTIZE", "DEQUANTIZE", "DELEGATE"):
            continue
        for index in op["outputs"]:
            t = details.get(index)
            if t is None:
                continue
            layer = _layer(t["name"])
            if layer is None:
                continue
            key0 = (layer, op["op_name"])
            k = seen.get(key0, 0)
            seen[key0] = k + 1
            value = interp.get_tensor(index)
            if np.dtype(value.dtype).kind in "iu":
                scale, zero = t["quantization"]
                if not scale:
                    continue
                value = (value.astype(np.float32) - zero) * scale
            out[(layer, op["op_name"], k)] = value.astype(np.float32)
    return out


def layer_errors(float_tflite: str, int8_tflite: str, images, *, top: int = 10) -> list[dict]:
    """The `top` tensors of `int8_tflite` with the largest relative RMS error against `float_tflite`, averaged
    over `images` (float32 0..255): [{"tensor": "layer:OP", "rel_rmse", "max_abs"}], largest first."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"images must be a non-empty batch (N, H, W, 3), got shape {images.shape}.")
    rel: dict = {}
    worst: dict = {}
    for image in images:
        ref = _outputs(float_tflite, image)
        got = _outputs(int8_tflite, image)
        for key in ref.keys() & got.keys():
            a, b = ref[key], got[key]
            if a.shape != b.shape:
                continue
            diff = b - a
            rms_ref = float(np.sqrt(np.mean(a * a)))
            rel.setdefault(key, []).append(float(np.sqrt(np.mean(diff * diff))) / (rms_ref + 1e-6))
            worst[key] = max(worst.get(key, 0.0), float(np.abs(diff).max()))
    if not rel:
        raise ValueError(f"no tensor of {int8_tflite!r} could be matched with {float_tflite!r} by layer and op.")
    rows = [
        {
            "tensor": f"{layer}:{op}" + (f"#{k}" if k else ""),
            "rel_rmse": float(np.mean(v)),
            "max_abs": worst[(layer, op, k)],
        }
        for (layer, op, k), v in rel.items()
    ]
    rows.sort(key=lambda r: -r["rel_rmse"])
    return rows[:top]
