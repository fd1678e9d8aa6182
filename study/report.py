"""The study's tables and `report.md`: one row per model, the answer in words, the full grid."""

from __future__ import annotations

import math

from training.study_lib import hardware

# (measurement, backend prefix) -> column of the wide table
COLUMNS = {
    ("params", "graph"): "params",
    ("macs", "graph"): "macs",
    ("activations", "graph"): "activations",
    ("latency_ms", "keras-"): "keras_b1_ms",
    ("throughput", "keras-"): "keras_img_s",
    ("latency_ms", "litert-float32"): "tflite_f32_ms",
    ("latency_ms", "litert-int8"): "tflite_int8_ms",
    ("tflite_bytes", "litert-float32"): "tflite_f32_bytes",
    ("tflite_bytes", "litert-int8"): "tflite_int8_bytes",
    ("val_top1", "train"): "val_top1",
    ("train_images_per_sec", "train"): "train_img_s",
    ("train_seconds", "train"): "train_seconds",
    ("time_to_final_accuracy_s", "train"): "time_to_final_s",
    ("epochs", "train"): "epochs",
}
LATENCY_BACKENDS = (
    ("keras_b1_ms", "Keras batch 1"),
    ("keras_img_ms", "Keras batch N (ms per image)"),
    ("tflite_f32_ms", "LiteRT float32 (XNNPACK)"),
    ("tflite_int8_ms", "LiteRT int8 PTQ (XNNPACK)"),
)


def wide_table(rows: list[dict]) -> list[dict]:
    """Pivot the long rows into one dict per model, in study order."""
    models: dict[str, dict] = {}
    for r in rows:
        m = models.setdefault(r["key"] + f"@{r['resolution']}", {
            "model": r["model"], "key": r["key"], "role": r["role"], "family": r["family"], "phi": r["phi"],
            "alpha": r["alpha"], "beta": r["beta"], "gamma": r["gamma"], "resolution": r["resolution"],
        })
        for (measurement, prefix), column in COLUMNS.items():
            if r["measurement"] == measurement and r["backend"].startswith(prefix):
                m[column] = r["value"]
                if column == "keras_img_s":
                    m["keras_batch"] = r["batch_size"]
                    m["keras_img_ms"] = 1e3 / r["value"]
                if column == "keras_b1_ms":
                    m["keras_backend"] = r["backend"]
    return list(models.values())


def _fmt(value, spec):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return format(value, spec)


def model_table(table: list[dict], roles=("family", "baseline")) -> str:
    lines = [
        "| model | res | params (M) | GMACs | activations (M) | Keras b1 ms | Keras img/s (batch) | "
        "LiteRT f32 ms | LiteRT int8 ms | val top-1 | train img/s | train s | s to final acc |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in table:
        if m["role"] not in roles:
            continue
        batch = f" ({m['keras_batch']})" if m.get("keras_batch") else ""
        lines.append(
            f"| {m['model']} | {m['resolution']} | {_fmt(_scale(m.get('params'), 1e6), '.2f')} | "
            f"{_fmt(_scale(m.get('macs'), 1e9), '.3f')} | {_fmt(_scale(m.get('activations'), 1e6), '.1f')} | "
            f"{_fmt(m.get('keras_b1_ms'), '.1f')} | {_fmt(m.get('keras_img_s'), '.1f')}{batch} | "
            f"{_fmt(m.get('tflite_f32_ms'), '.1f')} | {_fmt(m.get('tflite_int8_ms'), '.1f')} | "
            f"{_fmt(m.get('val_top1'), '.3f')} | {_fmt(m.get('train_img_s'), '.1f')} | "
            f"{_fmt(m.get('train_seconds'), '.0f')} | {_fmt(m.get('time_to_final_s'), '.0f')} |"
        )
    return "\n".join(lines)


def _scale(value, by):
    return None if value is None else value / by


def formula_table(table: list[dict]) -> str:
    """Each formula member beside the preset with the same phi (Tan & Le eq. 3 vs the hand-rounded B1..B7)."""
    presets = {m["phi"]: m for m in table if m["role"] == "family" and m["family"] == "efficientnet"}
    lines = ["| φ | build | res | params (M) | GMACs | activations (M) | Keras b1 ms |", "|---|---|---|---|---|---|---|"]
    for m in table:
        if m["role"] != "formula":
            continue
        for row in (presets.get(m["phi"]), m):
            if row is None:
                continue
            kind = "formula" if row["role"] == "formula" else "preset"
            lines.append(
                f"| {m['phi']:g} | {kind} | {row['resolution']} | {_fmt(_scale(row.get('params'), 1e6), '.2f')} | "
                f"{_fmt(_scale(row.get('macs'), 1e9), '.3f')} | {_fmt(_scale(row.get('activations'), 1e6), '.1f')} | "
                f"{_fmt(row.get('keras_b1_ms'), '.1f')} |"
            )
    return "\n".join(lines) if len(lines) > 2 else ""


def grid_table(table: list[dict]) -> tuple[str, dict | None]:
    grid = [m for m in table if m["role"] == "grid"]
    if not grid:
        return "", None
    scored = [m for m in grid if m.get("val_top1") is not None]
    best = max(scored, key=lambda m: (m["val_top1"], -(m.get("macs") or 0))) if scored else None
    lines = ["| α | β | γ | α·β²·γ² | res | GMACs | val top-1 | train s |", "|---|---|---|---|---|---|---|---|"]
    for m in grid:
        mark = " **best**" if m is best else ""
        lines.append(
            f"| {m['alpha']:.2f} | {m['beta']:.2f} | {m['gamma']:.2f} | {m['alpha'] * m['beta'] ** 2 * m['gamma'] ** 2:.3f} | "
            f"{m['resolution']} | {_fmt(_scale(m.get('macs'), 1e9), '.3f')} | {_fmt(m.get('val_top1'), '.3f')}{mark} | "
            f"{_fmt(m.get('train_seconds'), '.0f')} |"
        )
    return "\n".join(lines), best


def answer(table: list[dict]) -> list[str]:
    """The study's question in words: does the MAC saving against the baseline turn into time?"""
    base = next((m for m in table if m["role"] == "baseline" and m.get("macs")), None)
    if base is None:
        return []
    lines = []
    for m in table:
        if m["role"] != "family" or not m.get("macs"):
            continue
        ratio = base["macs"] / m["macs"]
        fewer = f"{ratio:.1f}× fewer" if ratio >= 1 else f"{1 / ratio:.1f}× more"
        parts = [f"{m['model']} has {fewer} MACs than {base['model']}; measured speed-up"]
        speedups = []
        for column, name in LATENCY_BACKENDS + (("train_seconds", "training time"),):
            if m.get(column) and base.get(column):
                speedups.append(f"{name} {base[column] / m[column]:.2f}×")
        if speedups:
            lines.append("- " + " ".join(parts) + " " + ", ".join(speedups) + ".")
    return lines


def render(results: dict) -> str:
    hw = results["hardware"]
    table = results["models"]
    c = results["config"]
    out = [
        "# Efficiency study",
        "",
        f"Written {results['written']} by `python -m training.study` (issue 5).",
        "",
        f"**Hardware:** {hardware.summary(hw)}; {hw['system']}, Python {hw['python']}.  ",
        "**Libraries:** " + ", ".join(f"{k} {v}" for k, v in sorted(hw["libraries"].items())) + ".",
        "",
        f"Settings: measure_only={c['measure_only']}, grid_search={c['grid_search']}, image_size="
        f"{c['image_size'] or 'native'}, epochs={c['epochs']}, batch_size={c['batch_size']}, dataset={c['dataset']}, "
        f"throughput batch ≤ {c['throughput_batch']} and ≤ {c['max_batch_gmacs']:g} GMACs per batch, repetitions "
        f"{c['min_reps']}..{c['max_reps']} within {c['budget_s']:g} s (median reported), LiteRT threads "
        f"{c['tflite_threads'] or hw['cpu_cores']}.",
        "",
    ]
    answer_lines = answer(table)
    if answer_lines:
        out += ["## Does the MAC saving turn into time?", "",
                "Speed-up = the baseline's time / the model's time (above 1: faster than the baseline; "
                "equal to the MAC ratio if time followed MACs).", ""] + answer_lines + [""]
    if any(m["role"] in ("family", "baseline") for m in table):
        out += ["## Models", "", model_table(table), ""]
    ft = formula_table(table)
    if ft:
        out += ["## Compound-scaling formula vs official presets", "",
                "The presets B1..B7 were hand-rounded by the authors; the formula is depth α^φ, width β^φ, "
                "resolution 224·γ^φ (REFERENCE section 1).", "", ft, ""]
    gt, best = grid_table(table)
    if gt:
        out += ["## Grid search at φ = 1 (paper step 1)", ""]
        if best is not None:
            out += [f"Best: α={best['alpha']:.2f}, β={best['beta']:.2f}, γ={best['gamma']:.2f} "
                    f"(val top-1 {best['val_top1']:.3f}).", ""]
        out += [gt, ""]
    if results.get("plots"):
        out += ["## Plots", ""] + [f"![{name}]({name})" for name in results["plots"]] + [""]
    out += ["Each timing is the median of the stated repetitions after one warm-up call; per-row repetition "
            "counts and batch sizes are in results.csv.", ""]
    return "\n".join(out)
