"""Host latency of .tflite files, and our B0 against keras.applications' B0 converted the plain way.

    keras-effnet-benchmark --model=E/model_float32.tflite,E/model_int8.tflite [--threads=1,2] [--json]
    keras-effnet-benchmark --model=E                     # every .tflite in a folder
    keras-effnet-benchmark --compare_keras_applications --image_size=224

Latency is LiteRT's CompiledModel API on the CPU (XNNPACK), batch 1, as `litert-benchmark` (the tool in
ai-edge-litert) and Android's LiteRT run it: `warmup` untimed runs, then `runs` timed ones; the median and the
spread per file and thread count, and whether every op ran on XNNPACK. `--interpreter` adds the Interpreter
API's figure beside it: timed from Python, each `invoke()` carries a fixed overhead that CompiledModel's
`run_by_name` does not, which shows most on small models. On a shared machine the median is the figure to quote.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import shutil
import tempfile

import numpy as np

from common import cli, markdown
from edge import litert


def benchmark(
    path: str, *, threads=(1,), warmup: int = 5, runs: int = 50, seed: int = 0, interpreter: bool = False
) -> list[dict]:
    """One row per thread count: file, bytes, threads, input dtype/shape, CompiledModel latency statistics in
    ms, fully_accelerated; with `interpreter`, the Interpreter API's median as `interpreter_median_ms`."""
    for name, value, low in (("warmup", warmup, 0), ("runs", runs, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")
    threads = tuple(threads)
    if not threads or any(isinstance(t, bool) or not isinstance(t, int) or t < 1 for t in threads):
        raise ValueError(f"threads must be integers >= 1, got {threads!r}.")
    path = os.fspath(path)
    rows = []
    for n in threads:
        model = litert.TFLiteModel(path, num_threads=n)  # also checks that the file is a loadable model
        stats = litert.compiled_latency(path, num_threads=n, runs=runs, warmup=warmup, seed=seed)
        row = {
            "file": path,
            "bytes": os.path.getsize(path),
            "input_dtype": model.input_dtype,
            "input_shape": list(model.input_shape),
            "warmup": warmup,
            **stats,
        }
        if interpreter:
            image = np.random.default_rng(seed).uniform(0, 255, size=model.input_shape[1:]).astype(np.float32)
            row["interpreter_median_ms"] = litert.latency_stats(model.time_invokes(image, runs=runs, warmup=warmup))[
                "median_ms"
            ]
        rows.append(row)
    return rows


def host() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, {_cpu_model()}"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def load_average() -> str:
    try:
        return "%.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        return "unknown"


BENCHMARK_COLUMNS = (
    "file",
    "MB",
    "threads",
    "input",
    "median ms",
    "p5-p95 ms",
    "min-max ms",
    "runs",
    "all ops on XNNPACK",
)


def format_rows(rows: list[dict]) -> str:
    """The benchmark rows as a Markdown table; an Interpreter column when any row timed the Interpreter too."""
    interp = any("interpreter_median_ms" in r for r in rows)
    header = BENCHMARK_COLUMNS + (("Interpreter median ms",) if interp else ())
    cells = [
        [
            os.path.basename(r["file"]),
            f"{r['bytes'] / 1e6:.2f}",
            r["threads"],
            r["input_dtype"],
            f"{r['median_ms']:.2f}",
            f"{r['p5_ms']:.2f}-{r['p95_ms']:.2f}",
            f"{r['min_ms']:.2f}-{r['max_ms']:.2f}",
            r["runs"],
            "yes" if r["fully_accelerated"] else "no",
        ]
        + ([f"{r['interpreter_median_ms']:.2f}" if "interpreter_median_ms" in r else "-"] if interp else [])
        for r in rows
    ]
    return markdown.table(header, cells)


def compare_keras_applications(
    image_size: int = 224, *, threads: int = 1, runs: int = 50, warmup: int = 5, images: int = 4, seed: int = 0
) -> dict:
    """Our B0 (`edge.convert`'s float32 path) against keras.applications EfficientNetB0 converted the plain way
    (`ExportArchive`, then `TFLiteConverter.from_saved_model`), both with the same random weights, in one run.

    keras.applications' B0 is built with `weights=None` and its weights copied into ours by layer name (the
    names are the same); the outputs on the same images must then agree, and the latency ratio says what the
    exporter's graph costs or saves. Returns both latencies, their ratio, op counts and the output difference.
    """
    import tensorflow as tf

    import keras_effnet
    from edge import convert
    from keras_effnet import keras_versions
    from keras_effnet import twin as twin_lib

    keras = keras_versions.keras3()
    theirs = keras.applications.EfficientNetB0(weights=None, input_shape=(image_size, image_size, 3))
    ours = keras_effnet.build(0, input_shape=(image_size, image_size, 3), classes=1000)
    twin_lib.copy_weights(theirs, ours)
    work = tempfile.mkdtemp(prefix="edge-compare-")
    try:
        ours_blob = convert.convert(ours, "float32")
        archive = keras.export.ExportArchive()
        archive.track(theirs)
        archive.add_endpoint(
            "serve", theirs.call, input_signature=[tf.TensorSpec([1, image_size, image_size, 3], tf.float32)]
        )
        archive.write_out(os.path.join(work, "plain"), verbose=False)
        plain_blob = tf.lite.TFLiteConverter.from_saved_model(os.path.join(work, "plain")).convert()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    x = np.random.default_rng(seed).uniform(0, 255, size=(images, image_size, image_size, 3)).astype(np.float32)
    ours_probs = litert.TFLiteModel(ours_blob).predict(x)
    plain_probs = litert.TFLiteModel(plain_blob).predict(x)
    # Interleave the two timings so that load on a shared machine hits both alike.
    ours_t, plain_t = [], []
    for _ in range(3):
        ours_t.append(litert.compiled_latency(ours_blob, num_threads=threads, runs=runs, warmup=warmup)["median_ms"])
        plain_t.append(litert.compiled_latency(plain_blob, num_threads=threads, runs=runs, warmup=warmup)["median_ms"])
    ours_ms, plain_ms = float(np.median(ours_t)), float(np.median(plain_t))
    return {
        "image_size": image_size,
        "threads": threads,
        "runs": runs,
        "ours_ms": ours_ms,
        "keras_applications_ms": plain_ms,
        "ratio_ours_over_keras_applications": ours_ms / plain_ms,
        "ours_ops": litert.op_counts(ours_blob),
        "keras_applications_ops": litert.op_counts(plain_blob),
        "ours_bytes": len(ours_blob),
        "keras_applications_bytes": len(plain_blob),
        "max_abs_output_diff": float(np.abs(ours_probs - plain_probs).max()),
        "same_top1": bool((ours_probs.argmax(1) == plain_probs.argmax(1)).all()),
        "host": host(),
        "load_average": load_average(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"),
    }


def tflite_files(paths) -> list[str]:
    """The .tflite files named by `paths` (files, or folders whose .tflite files are taken, sorted)."""
    out = []
    for p in paths:
        if os.path.isdir(p):
            found = sorted(os.path.join(p, f) for f in os.listdir(p) if f.endswith(".tflite"))
            if not found:
                raise cli.UsageError("model", p, "a .tflite file or a folder holding some (it holds none)")
            out += found
        elif not os.path.isfile(p):
            raise cli.UsageError("model", p, "an existing .tflite file or folder (it does not exist)")
        else:
            out.append(p)
    return out


@dataclasses.dataclass(frozen=True)
class BenchmarkConfig:
    """The flags of `keras-effnet-benchmark`."""

    model: tuple[str, ...] = cli.flag((), ".tflite files or folders of them, comma-separated.", group="input")
    threads: tuple[int, ...] = cli.flag((1,), "CPU thread counts, comma-separated.", group="timing")
    warmup: int = cli.flag(5, "Untimed runs per file and thread count.", group="timing")
    runs: int = cli.flag(50, "Timed runs per file and thread count.", group="timing")
    interpreter: bool = cli.flag(
        False, "Also time the Interpreter API (from Python) beside CompiledModel.", group="timing"
    )
    compare_keras_applications: bool = cli.flag(
        False, "Time our B0 against keras.applications' B0 converted the plain way.", group="comparison"
    )
    image_size: int = cli.flag(224, "Image size of --compare_keras_applications.", group="comparison")
    json: bool = cli.flag(False, "Print JSON instead of a table.", group="output")

    def __post_init__(self):
        if not self.model and not self.compare_keras_applications:
            raise cli.UsageError("--model is required (or --compare_keras_applications)")
        for t in self.threads or (0,):
            cli.positive("threads", t)
        cli.positive("runs", self.runs)
        cli.positive("image_size", self.image_size)
        if self.warmup < 0:
            raise cli.UsageError("warmup", self.warmup, "an integer >= 0")


def run(config: BenchmarkConfig) -> None:
    files = tflite_files(config.model)
    for f in files:
        try:
            litert.TFLiteModel(f)
        except ValueError as exc:
            raise cli.UsageError("model", f, f"a .tflite model ({exc})") from None
    rows = [
        row
        for f in files
        for row in benchmark(
            f, threads=config.threads, warmup=config.warmup, runs=config.runs, interpreter=config.interpreter
        )
    ]
    comparison = None
    if config.compare_keras_applications:
        comparison = compare_keras_applications(
            config.image_size, threads=config.threads[0], runs=config.runs, warmup=config.warmup
        )
    if config.json:
        print(
            json.dumps(
                {"host": host(), "load_average": load_average(), "results": rows, "comparison": comparison}, indent=1
            )
        )
        return
    print(f"host: {host()}; load average {load_average()}")
    if rows:
        print(format_rows(rows))
    if comparison:
        c = comparison
        print(
            f"B0 {c['image_size']} px, {c['threads']} thread(s): ours {c['ours_ms']:.2f} ms, keras.applications "
            f"plain conversion {c['keras_applications_ms']:.2f} ms, ratio {c['ratio_ours_over_keras_applications']:.3f}; "
            f"max output difference {c['max_abs_output_diff']:.2g}, same top-1: {c['same_top1']}"
        )


def main(argv=None) -> int:
    return cli.main(
        BenchmarkConfig,
        run,
        argv,
        prog="keras-effnet-benchmark",
        description="Host latency of .tflite files with LiteRT's CompiledModel API (XNNPACK).",
    )


if __name__ == "__main__":
    cli.run_main(main)
