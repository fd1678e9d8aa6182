"""The report of `edge.export`: the formats table it prints, the op counts per format, and report.md.

Rendering only: every figure comes from the report dict that `edge.session.write_export` builds and writes as
report.json.
"""

from __future__ import annotations

import json

from common import markdown
from edge import gpu_delegate
from edge.formats import FORMAT_NOTES, MIXED, model_file


def _pct(value) -> str:
    return "-" if value is None else f"{value:.2%}"


FORMAT_COLUMNS = (
    "format",
    "file",
    "MB",
    "top-1",
    "agree w/ Keras",
    "max prob diff",
    "latency ms (p5-p95)",
    "XNNPACK",
    "GPU delegate",
    "I/O",
    "note",
)


def format_table(report: dict) -> str:
    """The report's formats as a Markdown table (what the command prints)."""
    return markdown.table(FORMAT_COLUMNS, [format_row(r) for r in report["formats"]])


def format_row(r: dict) -> list:
    """One format's cells: its file, size, accuracy, latency, delegate verdicts and what it is; a failed format
    says FAILED with its error."""
    if r.get("error"):
        return [r["format"], r.get("file") or "-", *["-"] * 8, f"FAILED: {_one_line(r['error'])}"]
    note = FORMAT_NOTES[r["format"]]
    if r.get("mixed"):
        note += f": {r['mixed']['summary']}"
    if r.get("float_ops"):
        note += f"; float ops: {', '.join(r['float_ops'])}"
    return [
        r["format"],
        r["file"],
        f"{r['bytes'] / 1e6:.2f}",
        _pct(r.get("top1")),
        f"{r['agreement_with_keras']:.2%}",
        f"{r['max_prob_diff']:.2g}",
        f"{r['latency_ms']:.2f} ({r['latency_p5_ms']:.2f}-{r['latency_p95_ms']:.2f})",
        _one_line(_xnnpack_summary(r), 300),
        _one_line(gpu_delegate.summary(r["gpu_delegate"]), 300),
        f"{r['input_dtype']}/{r['output_dtype']}",
        note,
    ]


def _xnnpack_summary(row: dict) -> str:
    """'all ops', or per reason the ops XNNPACK leaves to the reference kernels."""
    left = row.get("not_on_xnnpack") or []
    if not left:
        return "all ops" if row["fully_accelerated"] else "partly (CompiledModel says not fully accelerated)"
    by_reason: dict[str, list[str]] = {}
    for o in left:
        by_reason.setdefault(o["why"], []).append(o["op"])
    total = sum(row["op_counts"].values())
    return f"{len(left)} of {total} ops not: " + "; ".join(
        f"{', '.join(sorted(set(ops)))} ({why})" for why, ops in by_reason.items()
    )


def op_table(report: dict) -> str:
    """Each format's op counts, one column per format."""
    ok = [r for r in report["formats"] if not r.get("error")]
    ops = sorted({op for r in ok for op in r["op_counts"]})
    rows = [[op, *(r["op_counts"].get(op, 0) for r in ok)] for op in ops]
    rows.append(["total", *(sum(r["op_counts"].values()) for r in ok)])
    return markdown.table(["op", *(r["format"] for r in ok)], rows)


def report_markdown(report: dict) -> str:
    rec = report["recommendation"]
    ship = f"**Ship `{rec['file']}`** ({rec['format']}): {rec['reason']}" if rec.get("format") else rec["reason"]
    accuracy = (
        f"Keras float top-1 {report['keras_top1']:.2%}"
        if report["labelled"]
        else "no labelled data, so no accuracy: agreement with the Keras float model only"
    )
    lines = [
        f"# TFLite export of {report['model_name']}",
        "",
        f"Model `{report['model']}` (version {report['model_version']}), {report['image_size']} px, "
        f"{len(report['class_names'])} classes (labels from {report['labels_source']}). Evaluated on "
        f"{report['evaluation']}; {accuracy}. Calibration: {report['calibration'] or 'none'}. Latency: LiteRT "
        f"CompiledModel API on the CPU (XNNPACK), batch 1, median of {report['latency_runs']} runs on "
        f"{report['host']}, {report['date']}. Every file carries TFLite metadata (name, version, labels, and the "
        f"input normalisation of float inputs) for MediaPipe Tasks and the Android Task Library.",
        "",
        format_table(report),
        "",
        ship,
        "",
        "## Ops per format",
        "",
        op_table(report),
        "",
    ]
    mixed = report.get("int8_mixed")
    if mixed:
        if mixed.get("error"):
            lines += [f"{MIXED}: {mixed['error']}", ""]
        else:
            lines += [
                f"## {MIXED}",
                "",
                mixed.get("summary", ""),
                "",
                "Layers kept in float (worst RMSE/scale first): " + ", ".join(f"`{n}`" for n in mixed["float_layers"]),
                "",
            ]
    if report.get("qat"):
        lines += [f"QAT: {json.dumps(report['qat'], sort_keys=True)}", ""]
    lines += [gpu_line(report), ""]
    if report.get("calibration_audit"):
        lines += [report["calibration_audit"]["summary"] + ".", ""]
    if report.get("saved_model"):
        lines += [saved_model_line(report), ""]
    if report.get("diagnostics"):
        lines += ["## int8 per-layer error (largest first)", ""]
        for fmt, rows in report["diagnostics"].items():
            if isinstance(rows, str):
                lines += [f"{fmt}: {rows}", ""]
                continue
            lines += [f"### {fmt}", ""]
            lines += markdown.table_lines(
                ["tensor", "relative RMS error", "max abs error"],
                [[r["tensor"], f"{r['rel_rmse']:.3g}", f"{r['max_abs']:.3g}"] for r in rows],
            )
            lines.append("")
    return "\n".join(lines)


def gpu_line(report: dict) -> str:
    gpu = report.get("gpu_delegate") or {}
    source = next(
        (
            r["gpu_delegate"].get("source")
            for r in report["formats"]
            if not r.get("error") and r["gpu_delegate"].get("source")
        ),
        "not checked",
    )
    head = (
        f"**GPU delegate: use `{model_file(gpu['format'])}`** ({gpu['format']})"
        if gpu.get("format")
        else "GPU delegate: no format"
    )
    return (
        f"{head}: {gpu.get('reason', '')} Per format, the GPU delegate column names the ops it would leave to "
        f"the CPU (source: {source})."
    )


def saved_model_line(report: dict) -> str:
    sm = report["saved_model"]
    if sm.get("error"):
        return f"SavedModel for serving: FAILED: {_one_line(sm['error'])}"
    return (
        f"SavedModel for serving: `{sm['dir']}/`, signatures "
        + ", ".join(f"`{s}`" for s in sm["signatures"])
        + " (any batch; probabilities, class_names, top_class)."
    )


def _one_line(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split()).replace("|", "/")
    return text if len(text) <= limit else text[: limit - 3] + "..."
