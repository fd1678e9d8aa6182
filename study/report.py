"""The study's tables and `report.md`: the answer in words, one row per member, the cost model, the sweep.

Every timing is a median over interleaved rounds with its interquartile range as a share of the median
("± 4%"); a cell whose spread exceeds the stated share is marked ⚠ and should not be read closely.
"""

from __future__ import annotations

import dataclasses
import math

from common import markdown
from study import costmodel, hardware, published

# (measurement, backend) -> column of the wide table
COLUMNS = {
    ("params", "graph"): "params",
    ("macs", "graph"): "macs",
    ("activations", "graph"): "activations",
    ("layers", "graph"): "layers",
    ("head_dropout", "graph"): "head_dropout",
    ("stochastic_depth_max", "graph"): "stochastic_depth",
    ("latency_ms", "keras_b1"): "keras_b1_ms",
    ("latency_ms", "keras_batch"): "keras_batch_call_ms",
    ("throughput", "keras_batch"): "keras_img_s",
    ("latency_ms", "litert_float32"): "tflite_f32_ms",
    ("latency_ms", "litert_int8"): "tflite_int8_ms",
    ("tflite_bytes", "litert_float32"): "tflite_f32_bytes",
    ("tflite_bytes", "litert_int8"): "tflite_int8_bytes",
    ("val_top1", "train"): "val_top1",
    ("best_val_top1", "train"): "best_val_top1",
    ("train_images_per_sec", "train"): "train_img_s",
    ("train_seconds", "train"): "train_seconds",
    ("time_to_final_accuracy_s", "train"): "time_to_final_s",
    ("time_to_target_s", "train"): "time_to_target_s",
    ("plateaued", "train"): "plateaued",
    ("epochs", "train"): "epochs",
    ("train_dropout", "train"): "train_dropout",
    ("train_drop_connect", "train"): "train_drop_connect",
    ("train_crop_scale_min", "train"): "train_crop_scale_min",
    ("train_randaugment", "train"): "train_randaugment",
    ("contract_bn_momentum", "train"): "contract_bn_momentum",
    ("contract_zero_head", "train"): "contract_zero_head",
    ("accuracy_curve", "train"): "accuracy_curve",
}
LATENCY_BACKENDS = (
    ("keras_b1_ms", "Keras batch 1"),
    ("keras_img_ms", "Keras batch N (ms per image)"),
    ("tflite_f32_ms", "LiteRT float32 (XNNPACK)"),
    ("tflite_int8_ms", "LiteRT int8 PTQ (XNNPACK)"),
)
BACKEND_TITLES = dict(LATENCY_BACKENDS)
COST_MODEL_ROLES = ("family", "v2", "fused", "baseline")


def _fmt(value, spec):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return format(value, spec)


def _scale(value, by):
    return None if value is None else value / by


def timing_cell(m: dict, column: str, spec: str = ".1f") -> str:
    """'12.3 ±4%', with ⚠ when the spread exceeds the study's limit."""
    value = m.get(column)
    if value is None:
        return "—"
    spread = m.get(column + "_spread")
    text = format(value, spec) + (f" ±{spread / 2:.0%}" if spread is not None else "")
    return text + (" ⚠" if m.get(column + "_noisy") else "")


def command_line(config) -> str:
    """The command that reproduces a study: `keras-effnet-study` with every flag that differs from its default."""
    from study.config import StudyConfig

    parts = ["keras-effnet-study"]
    for field in dataclasses.fields(StudyConfig):
        value = getattr(config, field.name)
        if value == field.default:
            continue
        if isinstance(value, bool):
            parts.append(f"--{field.name}" if value else f"--no{field.name}")
        elif isinstance(value, tuple):
            parts.append(f"--{field.name}={','.join(f'{v:g}' if isinstance(v, float) else str(v) for v in value)}")
        else:
            parts.append(f"--{field.name}={value:g}" if isinstance(value, float) else f"--{field.name}={value}")
    return " ".join(parts)


def answer(table: list[dict]) -> list[str]:
    """The study's question in words: does the MAC saving against the baseline turn into time?"""
    base = next((m for m in table if m["role"] == "baseline" and m.get("macs")), None)
    if base is None:
        return []
    lines = []
    for m in table:
        if m["role"] not in ("family", "v2") or not m.get("macs"):
            continue
        ratio = base["macs"] / m["macs"]
        fewer = f"{ratio:.1f}× fewer" if ratio >= 1 else f"{1 / ratio:.1f}× more"
        speedups = [
            f"{name} {base[column] / m[column]:.2f}×"
            for column, name in LATENCY_BACKENDS + (("train_seconds", "training time"),)
            if m.get(column) and base.get(column)
        ]
        if speedups:
            lines.append(
                f"- {m['model']} has {fewer} MACs than {base['model']}; measured speed-up " + ", ".join(speedups) + "."
            )
    return lines


def model_table(table: list[dict], roles=("family", "v2", "baseline", "fused")) -> str:
    header = [
        "model",
        "res",
        "params (M)",
        "GMACs",
        "activations (M)",
        "layers",
        "Keras b1 ms",
        "Keras ms/img (batch)",
        "LiteRT f32 ms",
        "LiteRT int8 ms",
    ]
    rows = []
    for m in table:
        if m["role"] not in roles:
            continue
        batch = f" ({m['keras_batch']})" if m.get("keras_batch") else ""
        rows.append(
            [
                m["model"],
                m["resolution"],
                _fmt(_scale(m.get("params"), 1e6), ".2f"),
                _fmt(_scale(m.get("macs"), 1e9), ".3f"),
                _fmt(_scale(m.get("activations"), 1e6), ".1f"),
                _fmt(m.get("layers"), "d"),
                timing_cell(m, "keras_b1_ms"),
                timing_cell(m, "keras_img_ms", ".2f") + batch,
                timing_cell(m, "tflite_f32_ms"),
                timing_cell(m, "tflite_int8_ms"),
            ]
        )
    return markdown.table(header, rows)


def cost_model_table(fits: dict) -> str:
    header = ["backend", "members", *(f"{name}: LOO error (worst)" for name in costmodel.MODELS), "best"]
    rows = [
        [
            BACKEND_TITLES[column],
            fit["n"],
            *(
                f"{fit['models'][n]['loo_error']:.0%} ({fit['models'][n]['loo_max_error']:.0%})"
                for n in costmodel.MODELS
            ),
            fit["best"],
        ]
        for column, fit in fits.items()
        if fit is not None
    ]
    return markdown.table(header, rows, empty="")


def fused_table(table: list[dict]) -> str:
    """B0 with its first k stages fused (k = 0 is B0 itself), relative to B0 on every backend."""
    b0 = next((m for m in table if m["key"] == "b0"), None)
    sweep = sorted((m for m in table if m["role"] == "fused"), key=lambda m: m["fused_stages"])
    if b0 is None or not sweep:
        return ""
    header = ["fused stages k", "GMACs", "activations (M)", "layers", *(t for _, t in LATENCY_BACKENDS)]
    rows = []
    for k, m in [(0, b0)] + [(m["fused_stages"], m) for m in sweep]:
        cells = []
        for column, _ in LATENCY_BACKENDS:
            if m.get(column) and b0.get(column):
                cells.append(f"{timing_cell(m, column, '.2f')} ({m[column] / b0[column]:.2f}× B0)")
            else:
                cells.append("—")
        rows.append(
            [
                k,
                _fmt(_scale(m.get("macs"), 1e9), ".3f"),
                _fmt(_scale(m.get("activations"), 1e6), ".1f"),
                _fmt(m.get("layers"), "d"),
                *cells,
            ]
        )
    return markdown.table(header, rows)


def training_table(table: list[dict], target: float) -> str:
    header = [
        "model",
        "res",
        "head dropout",
        "stochastic depth",
        "min crop",
        "RandAugment",
        "BN momentum, zero head",
        "epochs",
        "val top-1 (best)",
        "plateau",
        "train img/s",
        "train s",
        f"s to {target:.0%}",
    ]
    rows = [
        [
            m["model"],
            m["resolution"],
            _fmt(m.get("train_dropout"), ".3f"),
            _fmt(m.get("train_drop_connect"), ".3f"),
            _fmt(m.get("train_crop_scale_min"), ".2f"),
            _fmt(m.get("train_randaugment"), ".1f"),
            f"{m.get('contract_bn_momentum')}, {'yes' if m.get('contract_zero_head') else 'no'}",
            f"{m['epochs']:g}",
            f"{_fmt(m.get('val_top1'), '.3f')} ({_fmt(m.get('best_val_top1'), '.3f')})",
            "yes" if m.get("plateaued") else "no",
            _fmt(m.get("train_img_s"), ".1f"),
            _fmt(m.get("train_seconds"), ".0f"),
            _fmt(m.get("time_to_target_s"), ".0f"),
        ]
        for m in table
        if m.get("epochs") is not None
    ]
    return markdown.table(header, rows, empty="")


def formula_table(table: list[dict]) -> str:
    """Each formula member beside the preset with the same phi (Tan & Le eq. 3 vs the hand-rounded B1..B7)."""
    presets = {m["phi"]: m for m in table if m["role"] == "family" and m["family"] == "efficientnet"}
    rows = []
    for m in table:
        if m["role"] != "formula":
            continue
        for row in (presets.get(m["phi"]), m):
            if row is None:
                continue
            kind = "formula" if row["role"] == "formula" else "preset"
            rows.append(
                [
                    f"{m['phi']:g}",
                    kind,
                    row["resolution"],
                    _fmt(_scale(row.get("params"), 1e6), ".2f"),
                    _fmt(_scale(row.get("macs"), 1e9), ".3f"),
                    _fmt(_scale(row.get("activations"), 1e6), ".1f"),
                    timing_cell(row, "keras_b1_ms"),
                ]
            )
    header = ["φ", "build", "res", "params (M)", "GMACs", "activations (M)", "Keras b1 ms"]
    return markdown.table(header, rows, empty="")


def grid_table(table: list[dict]) -> tuple[str, dict | None]:
    grid = [m for m in table if m["role"] == "grid"]
    if not grid:
        return "", None
    scored = [m for m in grid if m.get("val_top1") is not None]
    best = max(scored, key=lambda m: (m["val_top1"], -(m.get("macs") or 0))) if scored else None
    rows = [
        [
            f"{m['alpha']:.2f}",
            f"{m['beta']:.2f}",
            f"{m['gamma']:.2f}",
            f"{m['alpha'] * m['beta'] ** 2 * m['gamma'] ** 2:.3f}",
            m["resolution"],
            _fmt(_scale(m.get("macs"), 1e9), ".3f"),
            _fmt(m.get("val_top1"), ".3f") + (" **best**" if m is best else ""),
            _fmt(m.get("train_seconds"), ".0f"),
        ]
        for m in grid
    ]
    return markdown.table(["α", "β", "γ", "α·β²·γ²", "res", "GMACs", "val top-1", "train s"], rows), best


def recipe_text(recipe: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in recipe.items())


def header_section(results: dict) -> list[str]:
    """Where, with what and at what cost the study ran: the lines every reader needs before any figure."""
    hw = results["hardware"]
    c = results["config"]
    t = results.get("timing") or {}
    threads = hw.get("threads", {})
    out = [
        "# Efficiency study",
        "",
        f"Written {results['written']} by `{results['command']}`.",
        "",
        f"**Hardware:** {hardware.summary(hw)}; {hw['system']}, Python {hw['python']}.  ",
        "**Libraries:** " + ", ".join(f"{k} {v}" for k, v in sorted(hw["libraries"].items())) + ".  ",
        f"**Threads:** TensorFlow intra-op {threads.get('tf_intra_op')}, inter-op {threads.get('tf_inter_op')}; "
        f"LiteRT {threads.get('litert')}.  ",
    ]
    if t:
        out += [
            f"**Timing:** {t['rounds']} interleaved rounds from {t['started']}; load average (1, 5, 15 min) "
            f"{t['load_before']} before and {t['load_after']} after, highest 1-min {t['max_load']}; each cell "
            f"the median of its rounds, ± half its interquartile range as a share of the median, ⚠ where the "
            f"IQR exceeds {c['max_spread']:.0%} of the median.  "
        ]
    peak = results.get("peak_memory_gb", results["peak_rss_gb"])
    conversion = results.get("conversion") or {}
    converted = (
        f"; conversions {conversion['wall_seconds'] / 60:.1f} min in {conversion['workers']} worker processes"
        if conversion.get("wall_seconds")
        else ""
    )
    rounds = sum(t.get("round_seconds", [])) if t else 0
    out += [
        f"**Cost of the run:** {results['wall_seconds_this_run'] / 60:.1f} min in this invocation{converted}"
        f"{f', timing rounds {rounds / 60:.1f} min' if rounds else ''} ({results['study_seconds'] / 60:.1f} "
        f"min of steps in all, each worker's conversions counted in full); peak resident memory {peak:.1f} "
        "GB, this process and its conversion workers together.",
        "",
    ]
    return out


def answer_section(results: dict) -> list[str]:
    table = results["models"]
    out = []
    answer_lines = answer(table)
    if answer_lines:
        out += (
            [
                "## Does the MAC saving turn into time?",
                "",
                "Speed-up = the baseline's time / the member's time (above 1: faster than the baseline; "
                "equal to the MAC ratio if time followed MACs).",
                "",
            ]
            + answer_lines
            + [""]
        )
    if any(m["role"] in COST_MODEL_ROLES for m in table):
        out += ["## Members", "", model_table(table), ""]
    return out


def cost_model_section(results: dict) -> list[str]:
    hw = results["hardware"]
    fits = results.get("cost_model") or {}
    cm = cost_model_table(fits)
    if not cm:
        return []
    machine = f"{hw['cpu_model']} ({hw['cpu_cores']} cores)"
    return [
        "## What predicts wall time",
        "",
        costmodel.paragraph(fits, BACKEND_TITLES, machine),
        "",
        "Median relative error of each member's time predicted by the model fitted on the other members "
        "(non-negative least squares on relative error); worst member in brackets.",
        "",
        cm,
        "",
    ]


def repeatability_section(results: dict) -> list[str]:
    agree = results.get("agreement")
    if not (agree and agree["backends"]):
        return []
    out = [
        "## Repeatability",
        "",
        f"Against the study in `{agree['with']}` (written {agree['written']}), same members and settings:",
        "",
    ]
    return (
        out
        + markdown.table_lines(
            ["backend", "members", "Spearman of medians", "largest median difference"],
            [
                [BACKEND_TITLES[c], a["members"], f"{a['spearman']:.3f}", f"{a['max_median_difference']:.1%}"]
                for c, a in agree["backends"].items()
            ],
        )
        + [""]
    )


def fused_section(results: dict) -> list[str]:
    ft = fused_table(results["models"])
    if not ft:
        return []
    return [
        "## Fused-stage sweep: B0 with its first k stages as Fused-MBConv",
        "",
        "Fused-MBConv replaces the expand 1×1 + depthwise 3×3 by one regular 3×3 convolution "
        "(EfficientNetV2, Tan & Le 2021): more MACs, fewer and denser ops.",
        "",
        ft,
        "",
    ]


def training_section(results: dict) -> list[str]:
    if not results.get("recipe"):
        return []
    c = results["config"]
    return [
        "## Training",
        "",
        "Every member, the baseline included, was trained by the project's trainer "
        "with one recipe and the trainer's one model contract: " + recipe_text(results["recipe"]) + ".",
        "",
        f"Plateau criterion: the best validation top-1 of the last {c['plateau_epochs']} epochs beats "
        f"the best before them by less than {c['plateau_delta']:g}.",
        "",
        training_table(results["models"], c["target_accuracy"]),
        "",
    ]


def formula_section(results: dict) -> list[str]:
    table = results["models"]
    out = []
    ft = formula_table(table)
    if ft:
        out += [
            "## Compound-scaling formula vs official presets",
            "",
            "The presets B1..B7 were hand-rounded by the authors; the formula is depth α^φ, width β^φ, "
            "resolution 224·γ^φ (Tan & Le 2019, eq. 3).",
            "",
            ft,
            "",
        ]
    return out


def grid_section(results: dict) -> list[str]:
    out = []
    gt, best = grid_table(results["models"])
    if gt:
        out += ["## Grid search at φ = 1 (paper step 1)", ""]
        if best is not None:
            out += [
                f"Best: α={best['alpha']:.2f}, β={best['beta']:.2f}, γ={best['gamma']:.2f} "
                f"(val top-1 {best['val_top1']:.3f}).",
                "",
            ]
        out += [gt, ""]
    return out


def closing_section(results: dict) -> list[str]:
    out = ["## Published GPU figures (not measured here)", "", published.table(), ""]
    if results.get("plots"):
        out += ["## Plots", ""] + [f"![{name}]({name})" for name in results["plots"]] + [""]
    return out


SECTIONS = (
    header_section,
    answer_section,
    cost_model_section,
    repeatability_section,
    fused_section,
    training_section,
    formula_section,
    grid_section,
    closing_section,
)
"""The report's sections in order; each takes the results dict and returns its Markdown lines ([] to omit)."""


def render(results: dict) -> str:
    return "\n".join(line for section in SECTIONS for line in section(results))
