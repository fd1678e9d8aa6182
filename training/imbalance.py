"""Class weights for imbalanced data: each class's loss weighted by its inverse frequency.

`balanced` is scikit-learn's `compute_class_weight("balanced")` and Keras
`fit(class_weight=...)`'s convention: w_c = N / (C * n_c), so a balanced
dataset gets 1 everywhere and the weights' mean over the training examples is
1 (the loss keeps its scale and the learning rate its meaning). The trainer
multiplies each example's cross-entropy by its class's weight before the sum
over the global batch (training.trainer.Trainer), as `fit` does with sample
weights under "sum_over_batch_size".
"""

from __future__ import annotations

import numpy as np


def class_weights(mode: str, labels, num_classes: int) -> np.ndarray | None:
    """float32 [num_classes] weights for `mode` ("balanced"), or None for "none"."""
    if mode == "none":
        return None
    if mode != "balanced":
        raise ValueError(f"class_weight must be 'none' or 'balanced', got {mode!r}.")
    counts = np.bincount(np.asarray(labels, np.int64), minlength=num_classes).astype(np.float64)
    if (counts == 0).any():
        raise ValueError(
            f"class_weight=balanced: class(es) {np.flatnonzero(counts == 0).tolist()} have no training image."
        )
    return (counts.sum() / (num_classes * counts)).astype(np.float32)


def weighted_mean_loss(per_example, labels, weights, global_batch_size: int):
    """sum_i w[y_i] * loss_i / global_batch_size (weights None: all 1): the loss the trainer minimises."""
    per_example = np.asarray(per_example, np.float64)
    if weights is not None:
        per_example = per_example * np.asarray(weights, np.float64)[np.asarray(labels)]
    return float(per_example.sum() / global_batch_size)
