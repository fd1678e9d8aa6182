"""Host latency of .tflite files: `python -m edge.benchmark FILE.tflite... [--threads 1,2,4] [--json]` (issue 4).

The LiteRT interpreter with its default XNNPACK delegate, batch 1, a random 0..255 image (latency does not
depend on pixel values), `warmup` untimed invokes, then `runs` timed ones; the median and the spread
(p10, p90, min, max, std) per file and thread count. On a shared machine the median is the figure to quote.
"""

from __future__ import annotations

import json
import os
import platform

import numpy as np

from edge import litert


def benchmark(path: str, *, threads=(1,), warmup: int = 5, runs: int = 50, seed: int = 0) -> list[dict]:
    """One row per thread count: file, bytes, threads, input dtype and the latency statistics in ms."""
    for name, value, low in (("warmup", warmup, 0), ("runs", runs, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")
    threads = tuple(threads)
    if not threads or any(isinstance(t, bool) or not isinstance(t, int) or t < 1 for t in threads):
        raise ValueError(f"threads must be integers >= 1, got {threads!r}.")
    path = os.fspath(path)
    rows = []
    for n in threads:
        model = litert.TFLiteModel(path, num_threads=n)
        image = np.random.default_rng(seed).uniform(0, 255, size=model.input_shape[1:]).astype(np.float32)
        stats = litert.latency_stats(model.time_invokes(image, runs=runs, warmup=warmup))
        rows.append({"file": path, "bytes": os.path.getsize(path), "threads": n, "input_dtype": model.input_dtype,
                     "input_shape": list(model.input_shape), "warmup": warmup, **stats})
    return rows


def host() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}"


def format_rows(rows: list[dict]) -> str:
    lines = ["| file | MB | threads | input | median ms | p10-p90 ms | min-max ms | runs |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {os.path.basename(r['file'])} | {r['bytes'] / 1e6:.2f} | {r['threads']} | {r['input_dtype']} "
            f"| {r['median_ms']:.2f} | {r['p10_ms']:.2f}-{r['p90_ms']:.2f} | {r['min_ms']:.2f}-{r['max_ms']:.2f} | {r['runs']} |"
        )
    return "\n".join(lines)


def main(argv):
    from edge import flags as edge_flags

    cfg = edge_flags.benchmark_config(argv)
    rows = [row for f in cfg.files for row in benchmark(f, threads=cfg.threads, warmup=cfg.warmup, runs=cfg.runs)]
    if cfg.json:
        print(json.dumps({"host": host(), "results": rows}, indent=1))
    else:
        print(f"host: {host()}")
        print(format_rows(rows))


if __name__ == "__main__":
    from absl import app

    from edge import flags as _flags  # noqa: F401  (defines the flags)

    app.run(main)
