"""Measurements of one model: cost from the graph, wall-clock time in Keras and in LiteRT.

TFLite files come from the project's converter (`edge.export`); their latency
is timed here rather than with `edge.benchmark`, whose fixed run count would not
fit B7 at 600 px into the study's time budget.

Cost (params, MACs, activations) comes from `keras_effnet.profile`. Times are
medians over repetitions after one warm-up call, with a repetition budget so that
B7 at 600 px stays affordable on a 2-core CPU (issue 5: B0..B7 measure-only in
15 minutes): at least `min_reps`, at most `max_reps`, and no new repetition once
`budget_s` seconds have been spent. Every row says how many repetitions it used.
"""

from __future__ import annotations

import dataclasses
import statistics
import time

import numpy as np


@dataclasses.dataclass(frozen=True)
class Timing:
    """Repetition policy of one timed measurement."""

    min_reps: int = 3
    max_reps: int = 20
    budget_s: float = 5.0


def timed(fn, timing: Timing) -> tuple[float, int]:
    """Call `fn` once to warm up, then repeatedly; return (median seconds, repetitions)."""
    fn()
    times = []
    spent = 0.0
    while len(times) < timing.max_reps and (len(times) < timing.min_reps or spent < timing.budget_s):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        spent += times[-1]
    return statistics.median(times), len(times)


def random_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Uniform 0..255 float32 pixels: what the models take; timing does not depend on content."""
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


def cost(model) -> dict:
    import keras_effnet

    p = keras_effnet.profile(model)
    return {"params": p.params, "trainable_params": p.trainable_params, "macs": p.macs, "activations": p.activations}


def device_name() -> str:
    """'gpu' when TensorFlow sees one (Keras then runs there), else 'cpu'."""
    import tensorflow as tf

    return "gpu" if tf.config.list_logical_devices("GPU") else "cpu"


def keras_latency(model, size: int, batch_size: int, timing: Timing) -> dict:
    """Inference time of `model` on a batch of `batch_size` (Keras 3, training=False, no XLA).

    A `tf.function` around the call is what `model.predict` runs, without its
    per-call data-adapter overhead, which would dominate batch-1 latency of small models.
    XLA stays off: on the study's 2-core CPU it made B0 ~10x slower (REFERENCE section 4).
    """
    import tensorflow as tf

    x = tf.constant(random_images(batch_size, size))
    call = tf.function(lambda t: model(t, training=False), jit_compile=False)
    seconds, reps = timed(lambda: call(x).numpy(), timing)
    return {"seconds_per_batch": seconds, "reps": reps, "batch_size": batch_size,
            "latency_ms": seconds * 1e3, "images_per_sec": batch_size / seconds}


def convert(saved_model_dir: str, precision: str, representative=None) -> bytes:
    """The project's one converter (edge.export, issue 4): "float32", or "int8" post-training quantization.

    int8 is full-integer with uint8 input and output (what ships to a phone),
    calibrated on `representative` images (N x S x S x 3, 0..255).
    """
    from edge import export

    if precision not in ("float32", "int8"):
        raise ValueError(f"precision must be 'float32' or 'int8', got {precision!r}.")
    return export.convert_saved_model(saved_model_dir, precision, representative=representative, io_dtype="uint8")


def litert_latency(tflite_path: str, threads: int, timing: Timing, seed: int = 0) -> dict:
    """Batch-1 latency of a .tflite file in the LiteRT interpreter with XNNPACK (its default CPU delegate)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=tflite_path, num_threads=threads)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    size = int(inp["shape"][1])
    x = random_images(1, size, seed)
    if np.issubdtype(inp["dtype"], np.integer):
        scale, zero = inp["quantization"]
        x = np.clip(np.round(x / scale + zero), np.iinfo(inp["dtype"]).min, np.iinfo(inp["dtype"]).max)
    interpreter.set_tensor(inp["index"], x.astype(inp["dtype"]))
    seconds, reps = timed(interpreter.invoke, timing)
    return {"latency_ms": seconds * 1e3, "reps": reps, "batch_size": 1, "threads": threads}
