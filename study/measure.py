"""Measurements of the members: cost from the graph, wall-clock time in Keras and in LiteRT, in rounds.

Timing on a shared machine: another process taking a core for a few seconds slows whatever is being timed
at that moment. Timing one member after another puts that whole slowdown on one member and can invert the
ranking; timing in interleaved rounds (A B C, A B C, ...) spreads it over every member, and the median over
rounds discards it. Each *cell* (one member on one backend) is warmed up once; each round then takes one
*sample* per cell: the mean time of as many calls as fill `sample_s` (at least one), so that a 1 ms call is
not timed alone at the timer's resolution and a 2 s call is not repeated.

Thread counts are fixed before TensorFlow starts (intra-op = `threads`, inter-op = 1) and LiteRT gets the
same `threads`; both are recorded with the results.

TFLite files come from the project's converter (`edge.export`) and run in `edge.litert` (LiteRT with
XNNPACK, its default CPU delegate).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time

import numpy as np


@dataclasses.dataclass(frozen=True)
class Rounds:
    """How many interleaved rounds, and the least time one sample of a cell fills."""

    rounds: int = 7
    sample_s: float = 0.2
    max_calls: int = 50


BACKENDS = ("keras_b1", "keras_batch", "litert_float32", "litert_int8")


def random_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Uniform 0..255 float32 pixels: what the models take; timing does not depend on content."""
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


def cost(model) -> dict:
    import keras_effnet
    from study import members

    p = keras_effnet.profile(model)
    return {
        "params": p.params,
        "trainable_params": p.trainable_params,
        "macs": p.macs,
        "activations": p.activations,
        "layers": members.layer_count(model),
    }


def fix_threads(threads: int) -> dict:
    """Set TensorFlow's thread pools (before it starts); return the counts in effect."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass  # TensorFlow already started in this process (tests): the counts in effect are recorded below
    return {
        "tf_intra_op": tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count(),
        "tf_inter_op": tf.config.threading.get_inter_op_parallelism_threads() or os.cpu_count(),
        "litert": threads,
    }


def device_name() -> str:
    """'gpu' when TensorFlow sees one (Keras then runs there), else 'cpu'."""
    import tensorflow as tf

    return "gpu" if tf.config.list_logical_devices("GPU") else "cpu"


def keras_call(model, size: int, batch_size: int, seed: int = 0):
    """A no-argument function running `model` on one batch (Keras 3, training=False, no XLA).

    A `tf.function` around the call is what `model.predict` runs, without its per-call data-adapter
    overhead, which would dominate batch-1 latency of small models. XLA stays off: on a 2-core CPU it made B0
    about 10x slower.
    """
    import tensorflow as tf

    x = tf.constant(random_images(batch_size, size, seed))
    call = tf.function(lambda t: model(t, training=False), jit_compile=False)
    return lambda: call(x).numpy()


def litert_call(tflite_path: str, threads: int, seed: int = 0):
    """A no-argument function running one batch-1 invoke of a .tflite file (input set once)."""
    from edge import litert

    model = litert.TFLiteModel(tflite_path, num_threads=threads)
    image = random_images(1, model.input_shape[1], seed)[0]
    return lambda: model.time_invokes(image, runs=1, warmup=0)


def warm_up(fn, rounds: Rounds) -> int:
    """Call `fn` once untimed (tracing, allocation), then once timed; return the calls one sample needs."""
    fn()
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    return max(1, min(rounds.max_calls, math.ceil(rounds.sample_s / max(seconds, 1e-9))))


def sample(fn, calls: int) -> float:
    """Seconds per call, the mean of `calls` back-to-back calls."""
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def load_average() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def one_round(cells: dict, calls: dict) -> dict:
    """One sample of every cell, in the given order: {cell id: seconds per call}."""
    return {cid: sample(fn, calls[cid]) for cid, fn in cells.items()}


def peak_rss_gb() -> float:
    """The largest resident set this process (and its waited-for children) reached, in GB."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) * 1024 / 1e9


def tree_rss_bytes(root: int | None = None) -> int:
    """Resident memory of process `root` (default: this one) and all its descendants, from /proc (Linux); 0
    where /proc is not there."""
    root = root or os.getpid()
    parents, rss = {}, {}
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            parents[pid] = int(fields[1])
            rss[pid] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    tree, frontier = {root}, [root]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier and p not in tree]
        tree.update(children)
        frontier = children
    return sum(rss.get(p, 0) for p in tree)


class MemoryWatch:
    """The peak resident memory of this process and its children together (the conversion workers), sampled
    every `interval` seconds on a background thread: what the machine must hold, which neither process's own
    peak shows when two or three of them run at once."""

    def __init__(self, interval: float = 0.5):
        import threading

        self.interval = interval
        self.peak = tree_rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="study-memory-watch", daemon=True)

    def _run(self):
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, tree_rss_bytes())

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, tree_rss_bytes())

    @property
    def peak_gb(self) -> float:
        return self.peak / 1e9
