"""What predicts wall time: latency fitted across the members as a·MACs + b·activations + c·layers.

MACs count arithmetic; activations (the elements every conv and dense layer writes, Radosavovic et al.
2020) count memory traffic; layers count fixed per-op overhead (a kernel launch, an interpreter step). A
backend whose time follows arithmetic is fitted by the MAC term alone; a memory-bound one needs the
activation term; small models on a framework with a heavy dispatch path need the layer term.

The fit minimises *relative* squared error (rows divided by the measured time), so B0 and B7, two orders of
magnitude apart, weigh alike, and keeps every coefficient >= 0 (a negative cost per MAC has no meaning):
with at most three terms the non-negative least-squares solution is found exactly by trying every subset
of terms. Each model is judged by its leave-one-out error: fit on all members but one, predict that one.
"""

from __future__ import annotations

import itertools
import statistics

import numpy as np

FEATURES = ("macs", "activations", "layers")
MODELS = {
    "MACs": ("macs",),
    "MACs + activations": ("macs", "activations"),
    "MACs + activations + layers": ("macs", "activations", "layers"),
}
FEATURE_WORDS = {"macs": "MACs", "activations": "activations", "layers": "per-layer overhead"}


def fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative coefficients minimising sum(((x @ c - y) / y)**2); x is (n, k), k <= 3, y > 0."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if np.any(y <= 0):
        raise ValueError("cost model: measured times must be positive")
    scale = np.abs(x).max(axis=0)
    scale[scale == 0] = 1.0
    a = (x / scale) / y[:, None]
    b = np.ones_like(y)
    best, best_err = np.zeros(x.shape[1]), float(np.sum(b**2))
    for size in range(1, x.shape[1] + 1):
        for subset in itertools.combinations(range(x.shape[1]), size):
            coef, *_ = np.linalg.lstsq(a[:, subset], b, rcond=None)
            if np.any(coef < 0):
                continue
            full = np.zeros(x.shape[1])
            full[list(subset)] = coef
            err = float(np.sum((a @ full - b) ** 2))
            if err < best_err - 1e-15:
                best, best_err = full, err
    return best / scale


def loo_predictions(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each member's time predicted by the model fitted on all the other members."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    out = np.empty_like(y)
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        out[i] = x[i] @ fit(x[keep], y[keep])
    return out


def evaluate(points: list[dict], ykey: str) -> dict | None:
    """Every model of MODELS fitted to `points` (dicts with FEATURES and `ykey`); None if too few points.

    Returns {"n", "models": {name: {"terms", "coef", "fit_error", "loo_error", "loo_max_error",
    "loo_pred"}}, "best", "keys", "measured"}; errors are relative (median absolute, leave-one-out max).
    """
    points = [p for p in points if p.get(ykey) and all(p.get(f) is not None for f in FEATURES)]
    if len(points) < 4:
        return None
    y = np.array([p[ykey] for p in points], dtype=np.float64)
    models = {}
    for name, terms in MODELS.items():
        x = np.array([[p[t] for t in terms] for p in points], dtype=np.float64)
        coef = fit(x, y)
        loo = loo_predictions(x, y)
        rel = np.abs(loo - y) / y
        models[name] = {
            "terms": list(terms),
            "coef": coef.tolist(),
            "fit_error": float(np.median(np.abs(x @ coef - y) / y)),
            "loo_error": float(np.median(rel)),
            "loo_max_error": float(rel.max()),
            "loo_pred": loo.tolist(),
        }
    best = min(models, key=lambda n: (round(models[n]["loo_error"], 3), len(models[n]["terms"])))
    return {
        "n": len(points),
        "models": models,
        "best": best,
        "keys": [p["key"] for p in points],
        "labels": [p.get("model", p["key"]) for p in points],
        "measured": y.tolist(),
        "shares": term_shares(models[best], points),
    }


def term_shares(model: dict, points: list[dict]) -> dict:
    """Median share of the predicted time that each term accounts for, over the members."""
    shares = {t: [] for t in model["terms"]}
    for p in points:
        parts = [c * p[t] for c, t in zip(model["coef"], model["terms"])]
        total = sum(parts)
        if total > 0:
            for t, part in zip(model["terms"], parts):
                shares[t].append(part / total)
    return {t: statistics.median(v) for t, v in shares.items() if v}


def paragraph(results: dict[str, dict], backend_titles: dict[str, str], machine: str) -> str:
    """One paragraph: what predicts wall time on this machine, per backend, and by how much."""
    sentences = []
    for column, r in results.items():
        if r is None:
            continue
        best = r["models"][r["best"]]
        macs = r["models"]["MACs"]
        shares = ", ".join(f"{FEATURE_WORDS[t]} {s:.0%}" for t, s in sorted(r["shares"].items(), key=lambda kv: -kv[1]))
        if r["best"] == "MACs":
            sentences.append(
                f"{backend_titles[column]}: MACs alone predict the time best, within {macs['loo_error']:.0%} "
                f"(median leave-one-out error over {r['n']} members; worst {macs['loo_max_error']:.0%})."
            )
        else:
            sentences.append(
                f"{backend_titles[column]}: {r['best']} predicts the time within {best['loo_error']:.0%} "
                f"(median leave-one-out error over {r['n']} members; worst {best['loo_max_error']:.0%}), "
                f"against {macs['loo_error']:.0%} for MACs alone (worst {macs['loo_max_error']:.0%}); "
                f"the predicted time splits into {shares}."
            )
    if not sentences:
        return ""
    return f"On {machine}: " + " ".join(sentences)
