"""Which ops of a .tflite file the TFLite GPU delegate (Android OpenCL/OpenGL, iOS Metal) would not take.

An op the GPU delegate refuses runs on the CPU, and each switch between the GPU and the CPU copies the tensor
across; a model that EfficientNet users report "falling back to CPU" on a phone has such ops. The verdict per
format is read from TensorFlow's own checker, `tf.lite.experimental.Analyzer.analyze(model_content=...,
gpu_compatibility=True)`, which prints the graph with a line `GPU COMPATIBILITY WARNING: <why>` under each op
the delegate would refuse (the checker is tensorflow/lite/tools/versioning/gpu_compatibility.cc, the rules the
delegate's model builder applies). It prints to stdout; the text is captured and parsed.

Some TensorFlow wheels print "Your model looks compatible with GPU delegate" for every model: TensorFlow
2.21.0 and ai-edge-litert 2.3.0 on x86_64 do, even for SEGMENT_SUM, which the checker's own source refuses
("Not supported op"). `analyzer_checks()` finds this out by analysing such a model once; when the Analyzer does
not check, the verdict comes from `RULES` instead (`source` says which), a transcription of the checker for
the ops keras_effnet exports can contain: the ops its switch accepts, and its refusal of int16 tensors
(DEQUANTIZE of int16; the delegate computes in float16/float32 and takes int8/uint8 only as quantized
tensors it dequantizes).
"""

from __future__ import annotations

import contextlib
import functools
import io
import re

import numpy as np

# The ops gpu_compatibility.cc's switch accepts (each with its own conditions); anything else is "Not supported op".
GPU_OPS = frozenset(
    {
        "ABS",
        "ADD",
        "ADD_N",
        "ATAN2",
        "AVERAGE_POOL_2D",
        "BATCH_MATMUL",
        "CAST",
        "CEIL",
        "CONCATENATION",
        "CONV_2D",
        "COS",
        "CUMSUM",
        "DENSIFY",
        "DEPTH_TO_SPACE",
        "DEPTHWISE_CONV_2D",
        "DEQUANTIZE",
        "DIV",
        "DYNAMIC_UPDATE_SLICE",
        "ELU",
        "EMBEDDING_LOOKUP",
        "EQUAL",
        "EXP",
        "FLOOR",
        "FLOOR_DIV",
        "FLOOR_MOD",
        "FULLY_CONNECTED",
        "GATHER",
        "GELU",
        "GREATER",
        "GREATER_EQUAL",
        "HARD_SWISH",
        "LEAKY_RELU",
        "LESS",
        "LESS_EQUAL",
        "LOG",
        "LOGICAL_AND",
        "LOGISTIC",
        "LSTM",
        "MAX_POOL_2D",
        "MAXIMUM",
        "MEAN",
        "MINIMUM",
        "MIRROR_PAD",
        "MUL",
        "NEG",
        "NOT_EQUAL",
        "ONE_HOT",
        "PACK",
        "PAD",
        "PADV2",
        "POW",
        "PRELU",
        "QUANTIZE",
        "REDUCE_MAX",
        "REDUCE_MIN",
        "REDUCE_PROD",
        "RELU",
        "RELU6",
        "RELU_N1_TO_1",
        "RESHAPE",
        "RESIZE_BILINEAR",
        "RESIZE_NEAREST_NEIGHBOR",
        "RSQRT",
        "SELECT",
        "SELECT_V2",
        "SIGN",
        "SIN",
        "SLICE",
        "SOFTMAX",
        "SPACE_TO_DEPTH",
        "SPLIT",
        "SPLIT_V",
        "SQRT",
        "SQUARE",
        "SQUARED_DIFFERENCE",
        "STRIDED_SLICE",
        "SUB",
        "SUM",
        "TANH",
        "TILE",
        "TRANSPOSE",
        "TRANSPOSE_CONV",
    }
)
RULES = "rules transcribed from gpu_compatibility.cc (this TensorFlow's Analyzer does not run its GPU check)"
ANALYZER = "tf.lite.experimental.Analyzer (gpu_compatibility=True)"
# Preference among formats the delegate takes whole: the GPU computes in float16 by default, so float16 weights
# lose nothing there and halve the file; float32 next; quantized files are dequantized on the GPU.
PREFERENCE = ("float16", "float32", "dynamic", "int8", "int8_mixed", "qat_int8", "int16x8")

_OP_LINE = re.compile(r"^\s*Op#(\d+) (\S+?)\(")
_WARNING = "GPU COMPATIBILITY WARNING:"


def analyzer_text(tflite: bytes) -> str:
    """What `Analyzer.analyze(model_content=tflite, gpu_compatibility=True)` prints."""
    import tensorflow as tf

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        tf.lite.experimental.Analyzer.analyze(model_content=bytes(tflite), gpu_compatibility=True)
    return out.getvalue()


def parse(text: str) -> list[dict]:
    """The ops of an Analyzer printout that carry a GPU warning: [{"index", "op", "why"}], in graph order."""
    found, last = [], None
    for line in text.splitlines():
        m = _OP_LINE.match(line)
        if m:
            last = {"index": int(m.group(1)), "op": m.group(2)}
            continue
        stripped = line.strip()
        if stripped.startswith(_WARNING) and last is not None and "Subgraph#" not in stripped:
            found.append({**last, "why": stripped[len(_WARNING) :].strip()})
    return found


def _canary() -> bytes:
    """A float model with one op the checker refuses (SEGMENT_SUM: not in its switch)."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([4], tf.float32)])
    def f(x):
        return tf.math.segment_sum(x, tf.constant([0, 0, 1, 1]))

    return tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f).convert()


@functools.lru_cache(maxsize=1)
def analyzer_checks() -> bool:
    """True when this TensorFlow's Analyzer flags an op its GPU checker refuses (see the module docstring)."""
    return any(o["op"] == "SEGMENT_SUM" for o in parse(analyzer_text(_canary())))


def rule_check(tflite: bytes) -> list[dict]:
    """The ops of `tflite` that `RULES` refuse: [{"index", "op", "why"}], in graph order."""
    from edge import litert

    tensors, ops = litert.graph(tflite)
    dtypes = {i: np.dtype(t["dtype"]) for i, t in tensors.items()}
    out = []
    for op in ops:
        name = op["op_name"]
        tensors = [i for i in list(op["inputs"]) + list(op["outputs"]) if i >= 0]
        if name not in GPU_OPS:
            out.append({"index": int(op["index"]), "op": name, "why": f"Not supported op {name}"})
        elif any(dtypes.get(i) == np.int16 for i in tensors):
            out.append(
                {
                    "index": int(op["index"]),
                    "op": name,
                    "why": "int16 tensor (the GPU delegate takes float, and int8/uint8 as quantized)",
                }
            )
    return out


def verdict(tflite: bytes) -> dict:
    """{"gpu_compatible", "not_on_gpu": [{"index", "op", "why"}], "source"} for one .tflite file."""
    if analyzer_checks():
        left, source = parse(analyzer_text(tflite)), ANALYZER
    else:
        left, source = rule_check(tflite), RULES
    return {"gpu_compatible": not left, "not_on_gpu": left, "source": source}


def recommend(verdicts: dict) -> dict:
    """The format to use with the GPU delegate, from {format: verdict}: the first of `PREFERENCE` the delegate
    takes whole; {"format": None, "reason"} when none is."""
    whole = [f for f in PREFERENCE if f in verdicts and verdicts[f].get("gpu_compatible")]
    if not whole:
        return {"format": None, "reason": "no format runs whole on the GPU delegate; see the ops per format."}
    best = whole[0]
    why = {
        "float16": "the GPU delegate computes in float16 by default, so float16 weights lose nothing and halve "
        "the file",
        "float32": "float weights, no dequantization on the GPU",
    }.get(best, "the only format the delegate takes whole")
    return {"format": best, "reason": f"every op runs on the GPU delegate; {why}."}


def summary(v: dict) -> str:
    """One line for a table: 'all ops' or 'N ops not: OP (why); ...'."""
    if v.get("error"):
        return f"not checked: {v['error']}"
    left = v["not_on_gpu"]
    if not left:
        return "all ops"
    by_why: dict[str, list[str]] = {}
    for o in left:
        by_why.setdefault(o["why"], []).append(o["op"])
    return f"{len(left)} ops not: " + "; ".join(f"{', '.join(sorted(set(ops)))} ({why})" for why, ops in by_why.items())
