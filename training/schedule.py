"""Learning-rate schedules and image-size schedules as pure functions of the step / epoch.

Pure functions so they are tested alone and the trainer can restart anywhere:
a resumed run computes the same rate for the same global step.
"""

from __future__ import annotations

import math

SCHEDULES = ("cosine", "exponential", "constant")
BASE_BATCH = 256  # learning rates are given per 256 images (Goyal et al. 2017), as in the paper's recipe


def scaled_learning_rate(learning_rate: float, global_batch_size: int) -> float:
    """Linear scaling: `learning_rate` is per BASE_BATCH images; the global batch sets the rate used."""
    return learning_rate * global_batch_size / BASE_BATCH


def learning_rate(
    step: int,
    *,
    base: float,
    total_steps: int,
    warmup_steps: int = 0,
    kind: str = "cosine",
    steps_per_epoch: int = 1,
    decay_epochs: float = 2.4,
    decay_rate: float = 0.97,
) -> float:
    """The rate at global `step` (0-based).

    1. Linear warm-up from base/warmup_steps to `base` over `warmup_steps` (Goyal et al. 2017).
    2. "cosine": half a cosine from `base` to 0 over the remaining steps (Loshchilov & Hutter 2017).
    3. "exponential": the paper's staircase, x`decay_rate` every `decay_epochs` epochs after warm-up
       (Tan & Le 2019, section 5.2: 0.97 every 2.4 epochs).
    4. "constant": `base` after warm-up.
    """
    if kind not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {kind!r}.")
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps!r}.")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps!r}.")
    # 1
    if step < warmup_steps:
        return base * (step + 1) / warmup_steps
    after = step - warmup_steps
    # 2
    if kind == "cosine":
        span = max(1, total_steps - warmup_steps)
        return base * 0.5 * (1.0 + math.cos(math.pi * min(after, span) / span))
    # 3
    if kind == "exponential":
        return base * decay_rate ** math.floor(after / (decay_epochs * steps_per_epoch))
    # 4
    return base


def progressive_sizes(
    image_size: int, epochs: int, *, stages: int = 4, min_size: int = 32, start_ratio: float = 0.5
) -> list[int]:
    """Image size for each epoch (1-based list index + 1): growing in `stages` steps to `image_size`.

    Progressive resizing as in ProGAN (Karras et al. 2018) and EfficientNetV2
    (Tan & Le 2021, section 4.2): the first stage trains at
    `start_ratio * image_size`, the last at `image_size`; sizes are multiples of
    8 (the network's stride-2 padding assumes even sizes) and at least
    `min_size` (the model's minimum input size).
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs!r}.")
    stages = max(1, min(stages, epochs))
    low = max(min_size, start_ratio * image_size)
    sizes = []
    for epoch in range(epochs):
        stage = min(stages - 1, epoch * stages // epochs)
        size = image_size if stages == 1 else low + (image_size - low) * stage / (stages - 1)
        size = image_size if stage == stages - 1 else max(min_size, int(round(size / 8)) * 8)
        sizes.append(int(min(size, image_size)))
    return sizes
