"""Summaries of repeated timings: median, interquartile range, a spread flag, and rank agreement.

A shared machine's timings have outliers in one direction (another process took the core), so the study
reports the median of its rounds and the interquartile range (IQR, the middle half), not the mean and
standard deviation, and flags a cell whose IQR exceeds a stated share of its median. Two runs agree when
they rank the members alike: Spearman's rank correlation.
"""

from __future__ import annotations

import math
import statistics


def quantile(values, q: float) -> float:
    """The q-quantile with linear interpolation between order statistics (numpy's default)."""
    xs = sorted(float(v) for v in values)
    if not xs:
        raise ValueError("quantile of no values")
    pos = q * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summary(values, max_spread: float) -> dict:
    """Median, quartiles, IQR, IQR / median ("spread") and whether the spread exceeds `max_spread`."""
    med = statistics.median(values)
    q1, q3 = quantile(values, 0.25), quantile(values, 0.75)
    spread = (q3 - q1) / med if med > 0 else 0.0
    return {
        "median": med,
        "q1": q1,
        "q3": q3,
        "iqr": q3 - q1,
        "spread": spread,
        "noisy": spread > max_spread,
        "n": len(values),
    }


def ranks(values) -> list[float]:
    """1-based ranks, ties sharing their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(a, b) -> float:
    """Spearman's rank correlation of two equally long sequences (Pearson's r of their ranks)."""
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"spearman needs two sequences of the same length >= 2, got {len(a)} and {len(b)}")
    ra, rb = ranks(list(a)), ranks(list(b))
    ma, mb = statistics.fmean(ra), statistics.fmean(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    var = math.sqrt(sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb))
    return cov / var if var else 1.0


def agreement(first: list[dict], second: list[dict], columns) -> dict:
    """How two runs' member tables agree, per timing column: Spearman of the medians and the largest relative
    difference of one member's medians, over the members both runs timed."""
    out = {}
    for column in columns:
        a = {m["key"]: m[column] for m in first if m.get(column)}
        b = {m["key"]: m[column] for m in second if m.get(column)}
        keys = [k for k in a if k in b]
        if len(keys) < 2:
            continue
        out[column] = {
            "members": len(keys),
            "spearman": spearman([a[k] for k in keys], [b[k] for k in keys]),
            "max_median_difference": max(abs(a[k] - b[k]) / min(a[k], b[k]) for k in keys),
        }
    return out
