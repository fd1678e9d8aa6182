"""What a user can act on after evaluation: the confusion matrix, per-class precision, recall and F1, the worst pairs.

Pure functions of (true labels, predicted labels, class names), as
scikit-learn's `confusion_matrix` and `precision_recall_fscore_support`
define them: rows are the true class, columns the prediction; precision of c
= M[c, c] / column sum, recall = M[c, c] / row sum, F1 their harmonic mean;
a ratio with a zero denominator is 0 (scikit-learn's `zero_division=0`).
The row-normalised matrix is the recall view: row c is where the images of
class c went. `write` saves both matrices as CSV and one PNG with both.
"""

from __future__ import annotations

import csv
import io
import os

import numpy as np

COUNTS_CSV = "confusion.csv"
NORMALIZED_CSV = "confusion_normalized.csv"
PNG = "confusion.png"
REPORT = "report.txt"
TOP_PAIRS = 10


def confusion_matrix(targets, predictions, num_classes: int) -> np.ndarray:
    """int64 [C, C]: M[t, p] = images of true class t predicted as p."""
    targets = np.asarray(targets, np.int64)
    predictions = np.asarray(predictions, np.int64)
    if targets.shape != predictions.shape:
        raise ValueError(f"targets and predictions differ in shape: {targets.shape} vs {predictions.shape}.")
    return np.bincount(targets * num_classes + predictions, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )


def row_normalized(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (a row of zeros stays zero)."""
    rows = matrix.sum(axis=1, keepdims=True).astype(np.float64)
    return np.divide(matrix, rows, out=np.zeros(matrix.shape, np.float64), where=rows > 0)


def per_class(matrix: np.ndarray, class_names) -> dict:
    """{name: {"precision", "recall", "f1", "support"}}, zero where a denominator is zero."""
    tp = np.diag(matrix).astype(np.float64)
    predicted = matrix.sum(axis=0).astype(np.float64)
    actual = matrix.sum(axis=1).astype(np.float64)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(actual[i]),
        }
        for i, name in enumerate(class_names)
    }


def most_confused(matrix: np.ndarray, class_names, top: int = TOP_PAIRS) -> list[dict]:
    """The off-diagonal cells with the most images, largest first (ties by true then predicted class index)."""
    cells = [
        (-int(matrix[t, p]), t, p) for t in range(len(matrix)) for p in range(len(matrix)) if t != p and matrix[t, p]
    ]
    rows = matrix.sum(axis=1)
    return [
        {"true": class_names[t], "predicted": class_names[p], "count": -n, "share_of_true": -n / float(rows[t])}
        for n, t, p in sorted(cells)[:top]
    ]


def summary(targets, predictions, class_names) -> dict:
    """Everything above in one JSON-ready dict."""
    names = list(class_names)
    m = confusion_matrix(targets, predictions, len(names))
    figures = per_class(m, names)
    return {
        "class_names": names,
        "confusion_matrix": m.tolist(),
        "confusion_matrix_normalized": np.round(row_normalized(m), 6).tolist(),
        "per_class_metrics": figures,
        "macro_f1": float(np.mean([f["f1"] for f in figures.values()])) if figures else 0.0,
        "most_confused": most_confused(m, names),
    }


def matrix_csv(matrix, class_names) -> str:
    """CSV with a header row of predicted classes and one row per true class."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["true \\ predicted", *class_names])
    for name, row in zip(class_names, np.asarray(matrix).tolist()):
        writer.writerow([name, *(f"{v:.4f}" if isinstance(v, float) else v for v in row)])
    return buf.getvalue()


def report(result: dict) -> str:
    """The per-class table and the most confused pairs, as plain text."""
    names = result["class_names"]
    width = max([len(n) for n in names] + [5])
    lines = [f"{'class':<{width}}  precision  recall     f1  support"]
    for name in names:
        f = result["per_class_metrics"][name]
        lines.append(f"{name:<{width}}  {f['precision']:9.4f}  {f['recall']:6.4f}  {f['f1']:.4f}  {f['support']:7d}")
    lines.append(f"macro F1 {result['macro_f1']:.4f}")
    if result["most_confused"]:
        lines.append("most confused (true -> predicted: images, share of the true class):")
        lines.extend(
            f"  {p['true']} -> {p['predicted']}: {p['count']} ({p['share_of_true']:.1%})"
            for p in result["most_confused"]
        )
    return "\n".join(lines) + "\n"


def write(folder: str, result: dict) -> dict:
    """Write COUNTS_CSV, NORMALIZED_CSV, PNG and REPORT into `folder`; returns {kind: path}."""
    from common.files import atomic_path, atomic_write

    os.makedirs(folder, exist_ok=True)
    names = result["class_names"]
    paths = {
        "counts_csv": os.path.join(folder, COUNTS_CSV),
        "normalized_csv": os.path.join(folder, NORMALIZED_CSV),
        "png": os.path.join(folder, PNG),
        "report": os.path.join(folder, REPORT),
    }
    atomic_write(paths["counts_csv"], matrix_csv(result["confusion_matrix"], names))
    atomic_write(paths["normalized_csv"], matrix_csv(result["confusion_matrix_normalized"], names))
    atomic_write(paths["report"], report(result))
    with atomic_path(paths["png"], suffix=".png") as tmp:
        plot(result, tmp)
    return paths


def plot(result: dict, path: str) -> None:
    """Counts and row-normalised matrices side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = result["class_names"]
    n = len(names)
    size = max(4.0, 0.45 * n + 2)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 1, size))
    for ax, key, title, fmt in (
        (axes[0], "confusion_matrix", "counts", "d"),
        (axes[1], "confusion_matrix_normalized", "row-normalised (recall)", ".2f"),
    ):
        m = np.asarray(result[key], np.float64)
        ax.imshow(m, cmap="Blues", vmin=0, vmax=max(m.max(), 1e-9))
        ax.set_title(title)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_xticks(range(n), names, rotation=90, fontsize=7)
        ax.set_yticks(range(n), names, fontsize=7)
        if n <= 30:
            for t in range(n):
                for p in range(n):
                    text = format(int(m[t, p]), fmt) if fmt == "d" else format(m[t, p], fmt)
                    ax.text(
                        p,
                        t,
                        text,
                        ha="center",
                        va="center",
                        fontsize=6,
                        color="white" if m[t, p] > 0.6 * m.max() else "black",
                    )
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)
