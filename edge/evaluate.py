"""Evaluation of each .tflite file against the Keras float model, the GPU-delegate verdicts, and the
recommendation of which file to ship.

Each file is run by LiteRT on the evaluation images and compared with the Keras float model; its latency is
measured with LiteRT's CompiledModel API (what `litert-benchmark` and Android's LiteRT run), and the ops
XNNPACK does not take are named with the reason.
"""

from __future__ import annotations

import numpy as np

from edge import gpu_delegate, litert

# The recommendation ships the fastest format whose top-1 is within this many points of the Keras float model;
# int8_mixed is searched for when PTQ int8 is further away than this.
MAX_TOP1_DROP_POINTS = 1.0


def evaluate_tflite(
    path, images, labels, keras_probs, *, threads: int = 1, latency_runs: int = 50, warmup: int = 5
) -> dict:
    """Top-1 (when `labels` is given), agreement of its top-1 with the Keras float model, largest probability
    difference, op counts, the ops XNNPACK does not take, and CompiledModel latency."""
    model = litert.TFLiteModel(path, num_threads=threads)
    probs = model.predict(images)
    top1 = probs.argmax(axis=1)
    keras_top1 = np.asarray(keras_probs).argmax(axis=1)
    timing = litert.compiled_latency(path, num_threads=threads, runs=latency_runs, warmup=warmup)
    row = {
        "agreement_with_keras": float((top1 == keras_top1).mean()),
        "max_prob_diff": float(np.abs(probs - keras_probs).max()),
        "latency_ms": timing["median_ms"],
        "latency_p5_ms": timing["p5_ms"],
        "latency_p95_ms": timing["p95_ms"],
        "latency_threads": int(threads),
        "latency_api": timing["api"],
        "fully_accelerated": timing["fully_accelerated"],
        "not_on_xnnpack": litert.undelegated_ops(path, num_threads=threads),
        "op_counts": litert.op_counts(path),
        "input_dtype": model.input_dtype,
        "output_dtype": model.output_dtype,
    }
    if labels is not None:
        row["top1"] = float((top1 == np.asarray(labels)).mean())
    return row


def _quality(row: dict, labelled: bool) -> float:
    return row["top1"] if labelled else row["agreement_with_keras"]


def recommend(rows: list[dict], keras_top1: float | None) -> dict:
    """The fastest format whose top-1 is within MAX_TOP1_DROP_POINTS of the Keras float model (ties: smaller
    file); when none is, the most accurate one. Without labelled data (`keras_top1` None) the agreement of
    its top-1 with the Keras model stands in for top-1 (the Keras model counts as 100%)."""
    # An int8_mixed file with most of its MACs in float is a float model in an int8 wrapper: never shipped as int8.
    ok = [r for r in rows if not r.get("error") and r.get("mixed", {}).get("is_int8", True)]
    if not ok:
        return {"format": None, "reason": "every format failed; see the errors."}
    labelled = keras_top1 is not None
    reference = keras_top1 if labelled else 1.0
    what = (
        f"top-1 point of the Keras float model ({keras_top1:.2%})"
        if labelled
        else "point of agreement with the Keras float model (no labelled data: accuracy not measured)"
    )
    close = [r for r in ok if (reference - _quality(r, labelled)) * 100 <= MAX_TOP1_DROP_POINTS + 1e-9]
    if close:
        best = min(close, key=lambda r: (r["latency_ms"], r["bytes"]))
        measure = f"top-1 {best['top1']:.2%}" if labelled else f"agreement {best['agreement_with_keras']:.2%}"
        return {
            "format": best["format"],
            "file": best["file"],
            "reason": (
                f"fastest ({best['latency_ms']:.2f} ms at {best['latency_threads']} thread(s)) of the formats within "
                f"{MAX_TOP1_DROP_POINTS:g} {what}; {measure}, {best['bytes'] / 1e6:.2f} MB."
            ),
        }
    best = max(ok, key=lambda r: (_quality(r, labelled), -r["latency_ms"]))
    return {
        "format": best["format"],
        "file": best["file"],
        "reason": (f"no format is within {MAX_TOP1_DROP_POINTS:g} {what}; this is the most accurate."),
    }


def gpu_verdict(blob: bytes) -> dict:
    """`edge.gpu_delegate.verdict` of one file, or the reason it could not be given."""
    try:
        return gpu_delegate.verdict(blob)
    except Exception as exc:  # noqa: BLE001 - the verdict is advice; its failure does not fail the format
        return {"error": f"{type(exc).__name__}: {exc}"}


def gpu_recommendation(rows) -> dict:
    """`edge.gpu_delegate.recommend` over the rows whose format and verdict both succeeded."""
    return gpu_delegate.recommend(
        {r["format"]: r["gpu_delegate"] for r in rows if not r.get("error") and not r["gpu_delegate"].get("error")}
    )
