"""The study's PNG plots (matplotlib, Agg backend: no display needed).

What they show: accuracy against MACs and against training time, the cost model's predicted against
measured time, and
measured latency against MACs and against activations on every backend, each
with a dashed line proportional to the x axis through the smallest EfficientNet,
the time the model *would* take if time followed MACs (or activations).
Points above the line are slower than their MACs promise.
"""

from __future__ import annotations

import json
import os

from common.files import atomic_write
from study import report

MARKERS = {"family": "o", "v2": "v", "fused": "P", "baseline": "s", "grid": "^", "formula": "D"}
COLOURS = {
    "family": "tab:blue",
    "v2": "tab:orange",
    "fused": "tab:cyan",
    "baseline": "tab:red",
    "grid": "tab:green",
    "formula": "tab:purple",
}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _plain_log_ticks(ax):
    """Log axes labelled as plain numbers; minor ticks labelled only when the data spans under a decade."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    plain = FuncFormatter(lambda v, _: f"{v:g}")
    for axis, (lo, hi) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        if axis.get_scale() != "log":
            continue
        axis.set_major_formatter(plain)
        axis.set_minor_formatter(plain if hi / max(lo, 1e-30) < 10 else NullFormatter())


def _save(fig, out: str, name: str) -> str:
    import io

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write(os.path.join(out, name), buf.getvalue())
    return name


def _saved(plt, fig, out: str, name: str) -> str:
    """Save the figure as `out/name` and close it, also when saving fails (pyplot keeps open figures alive)."""
    try:
        return _save(fig, out, name)
    finally:
        plt.close(fig)


def _panels(plt, n: int):
    """A grid of `n` panels, two per row, the spare cell hidden; returns the figure and the `n` axes."""
    cols = min(2, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 4.2 * rows), squeeze=False)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat)[:n]


def _log_log(ax, title: str, xlabel: str, ylabel: str):
    """The look every log-log panel shares: title, labels, grid on both tick levels, legend, plain ticks."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    _plain_log_ticks(ax)


def _scatter(ax, points, xkey, ykey, xscale=1.0, yscale=1.0):
    seen = set()
    for m in points:
        role = m["role"]
        ax.scatter(
            m[xkey] / xscale,
            m[ykey] / yscale,
            marker=MARKERS[role],
            color=COLOURS[role],
            label=None if role in seen else role,
            zorder=3,
        )
        seen.add(role)
        ax.annotate(
            m["model"], (m[xkey] / xscale, m[ykey] / yscale), textcoords="offset points", xytext=(4, 4), fontsize=7
        )


def _proportional_line(ax, points, xkey, ykey, xscale):
    """y proportional to x, through the smallest EfficientNet (the family member with the fewest x)."""
    family = [m for m in points if m["role"] == "family"] or points
    anchor = min(family, key=lambda m: m[xkey])
    xs = sorted(m[xkey] for m in points)
    lo, hi = xs[0] / xscale, xs[-1] / xscale
    k = anchor[ykey] / (anchor[xkey] / xscale)
    ax.plot([lo, hi], [k * lo, k * hi], "--", color="grey", zorder=1, label=f"∝ {xkey} (through {anchor['model']})")


def accuracy_plot(table, out, xkey, xlabel, name, xscale=1.0, log=True):
    points = [m for m in table if m.get("val_top1") is not None and m.get(xkey)]
    if not points:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.2))
    _scatter(ax, points, xkey, "val_top1", xscale=xscale)
    if log:
        ax.set_xscale("log")
        _plain_log_ticks(ax)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("validation top-1")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _saved(plt, fig, out, name)


def latency_plot(table, out, xkey, xlabel, name, xscale):
    panels = []
    for column, title in report.LATENCY_BACKENDS:
        points = [m for m in table if m["role"] in report.COST_MODEL_ROLES and m.get(column) and m.get(xkey)]
        if points:
            panels.append((column, title, points))
    if not panels:
        return None
    plt = _pyplot()
    fig, axes = _panels(plt, len(panels))
    for ax, (column, title, points) in zip(axes, panels):
        _scatter(ax, points, xkey, column, xscale=xscale)
        if len(points) > 1:
            _proportional_line(ax, points, xkey, column, xscale)
        _log_log(ax, title, xlabel, "ms per image")
    return _saved(plt, fig, out, name)


def accuracy_curves(table, out, name="accuracy_vs_training_time.png"):
    """Validation top-1 after each epoch against cumulative training time, one line per member."""
    curves = [(m, json.loads(m["accuracy_curve"])) for m in table if m.get("accuracy_curve")]
    if not curves:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for m, curve in curves:
        ax.plot([t for t, _ in curve], [a for _, a in curve], marker=MARKERS[m["role"]], markersize=3, label=m["model"])
    ax.set_xlabel("training seconds")
    ax.set_ylabel("validation top-1")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    return _saved(plt, fig, out, name)


def cost_model_plot(fits, out, name="cost_model.png"):
    """Leave-one-out predicted against measured time per backend: MACs alone and the best model."""
    panels = [(column, fit) for column, fit in fits.items() if fit is not None]
    if not panels:
        return None
    plt = _pyplot()
    fig, axes = _panels(plt, len(panels))
    for ax, (column, fit) in zip(axes, panels):
        measured = fit["measured"]
        shown = ["MACs"] + ([fit["best"]] if fit["best"] != "MACs" else [])
        for model_name, marker in zip(shown, ("x", "o")):
            model = fit["models"][model_name]
            ax.scatter(
                measured,
                model["loo_pred"],
                marker=marker,
                zorder=3,
                label=f"{model_name} (LOO error {model['loo_error']:.0%})",
            )
        for x, y, label in zip(measured, fit["models"][fit["best"]]["loo_pred"], fit["labels"]):
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(3, 3), fontsize=6)
        lo = min(min(measured), *(min(fit["models"][n]["loo_pred"]) for n in shown))
        hi = max(max(measured), *(max(fit["models"][n]["loo_pred"]) for n in shown))
        lo = max(lo, hi * 1e-4)
        ax.plot([lo, hi], [lo, hi], "--", color="grey", zorder=1, label="predicted = measured")
        _log_log(ax, report.BACKEND_TITLES[column], "measured ms", "predicted ms (leave-one-out)")
    return _saved(plt, fig, out, name)


def write_all(table: list[dict], fits: dict, out: str) -> list[str]:
    """Write every plot the data supports; return the file names written (relative to `out`)."""
    written = [
        accuracy_plot(table, out, "macs", "GMACs per image", "accuracy_vs_macs.png", xscale=1e9),
        accuracy_curves(table, out),
        latency_plot(table, out, "macs", "GMACs per image", "macs_vs_latency.png", 1e9),
        latency_plot(table, out, "activations", "activations per image (millions)", "activations_vs_latency.png", 1e6),
        cost_model_plot(fits, out),
    ]
    return [w for w in written if w]
