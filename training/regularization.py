"""Adaptive regularisation: how hard to regularise, from the image size and the dataset size.

EfficientNetV2 (Tan & Le 2021, section 4.2, Table 6) observes that the same
network wants weak regularisation when it trains on small images and strong
regularisation on large ones, and grows RandAugment magnitude (5 -> 15 for
V2-S), mixup and dropout (0.1 -> 0.3) together with the image size during
progressive learning. Small datasets trained for a few hundred steps behave
like small images: the run is short of steps, not of regularisation, and every
augmentation that removes information slows it down. At 32 px Inception-style
random-resized-crop (area 0.25-1.0) often cuts the object out of the frame
altogether.

One number, `strength` in [0, 1], carries the rule:

    size term  s = clip((image_size - 64) / (224 - 64), 0, 1)      0 at <= 64 px, 1 at >= 224 px
    data term  d = clip(log10(num_train_images / 1,000) / 2, 0, 1)  0 at <= 1k images, 1 at >= 100k
    strength   t = s * (0.5 + 0.5 * d)

and every knob is a straight line in `t` between its weak and its strong end
(`WEAK`, `STRONG`). Dropout and stochastic depth are fractions of the model's
own rates (B0: head dropout 0.2, stochastic depth 0.2), so a B7 keeps its
larger head dropout at full strength.

Pure functions: the trainer calls `for_stage` once per image size (every
stage of progressive resizing), and `apply_rates` sets the dropout rates of a
built model for a stage before its train step is traced.
"""

from __future__ import annotations

import dataclasses
import math

SMALL_IMAGE, LARGE_IMAGE = 64, 224
SMALL_DATA, LARGE_DATA = 1_000, 100_000


@dataclasses.dataclass(frozen=True)
class Regularization:
    """Every regularisation knob of one training stage."""

    strength: float  # 0 (weakest) .. 1 (strongest)
    crop_scale_min: float  # random-resized-crop: the smallest crop area, as a fraction of the image
    randaugment_magnitude: float  # of 30, as RandAugment's paper and EfficientNet's recipe count it
    dropout_rate: float  # head dropout
    drop_connect_rate: float  # stochastic depth of the last block (earlier blocks get less)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


# The two ends of every knob, as fractions of the model's own dropout rates for the last two.
# Strong end: Inception's crop (Szegedy et al. 2015, area 0.08-1), RandAugment magnitude 15 (EfficientNetV2-S's
# last stage), the model's full head dropout and the paper's stochastic depth. Weak end: no crop (flip only),
# EfficientNetV2's first-stage magnitude 5, half the head dropout (V2 starts at 0.1 where B0 ends at 0.2),
# no stochastic depth.
WEAK = {"crop_scale_min": 1.0, "randaugment_magnitude": 5.0, "dropout": 0.5, "drop_connect": 0.0}
STRONG = {"crop_scale_min": 0.08, "randaugment_magnitude": 15.0, "dropout": 1.0, "drop_connect": 1.0}


def strength(image_size: int, num_train_images: int) -> float:
    """The rule's one number in [0, 1]: 0 for small images whatever the data, 1 for >= 224 px on >= 100k images."""
    _check_positive("image_size", image_size)
    _check_positive("num_train_images", num_train_images)
    size_term = _clip((image_size - SMALL_IMAGE) / (LARGE_IMAGE - SMALL_IMAGE))
    data_term = _clip(math.log10(num_train_images / SMALL_DATA) / math.log10(LARGE_DATA / SMALL_DATA))
    return size_term * (0.5 + 0.5 * data_term)


def for_stage(
    image_size: int,
    num_train_images: int,
    *,
    model_dropout: float = 0.2,
    model_drop_connect: float = 0.2,
    crop_scale_min: float | None = None,
    randaugment_magnitude: float | None = None,
    dropout_rate: float | None = None,
    drop_connect_rate: float | None = None,
) -> Regularization:
    """The regularisation of a stage that trains at `image_size` on `num_train_images` images.

    `model_dropout` and `model_drop_connect` are the model's full-strength rates
    (the variant's head dropout; the paper's 0.2 stochastic depth). Any of the
    last four arguments given (not None) is used as is: an explicit flag wins
    over the rule.
    """
    t = strength(image_size, num_train_images)

    def lerp(key):
        return WEAK[key] + (STRONG[key] - WEAK[key]) * t

    return Regularization(
        strength=round(t, 4),
        crop_scale_min=round(lerp("crop_scale_min"), 4) if crop_scale_min is None else float(crop_scale_min),
        randaugment_magnitude=round(lerp("randaugment_magnitude"), 2)
        if randaugment_magnitude is None
        else float(randaugment_magnitude),
        dropout_rate=round(model_dropout * lerp("dropout"), 4) if dropout_rate is None else float(dropout_rate),
        drop_connect_rate=round(model_drop_connect * lerp("drop_connect"), 4)
        if drop_connect_rate is None
        else float(drop_connect_rate),
    )


def for_config(config, image_size: int, num_train_images: int) -> Regularization:
    """`for_stage` for a TrainConfig: its explicit fields win; the variant's head dropout is the strong end."""
    model_dropout = 0.2
    try:
        from keras_effnet import coefficients

        model_dropout = coefficients(config.phi, family=config.family).dropout
    except (ValueError, TypeError, AttributeError):
        pass  # a family keras_effnet does not scale (a model_fn's own model): B0's
    return for_stage(
        image_size,
        num_train_images,
        model_dropout=model_dropout,
        crop_scale_min=config.crop_scale_min,
        randaugment_magnitude=config.randaugment_magnitude,
        dropout_rate=config.dropout_rate,
        drop_connect_rate=config.drop_connect_rate,
    )


def table(sizes=(32, 64, 128, 224, 380), data=(1_000, 10_000, 100_000), **kw) -> list[tuple[int, int, Regularization]]:
    """(image_size, num_train_images, Regularization) for a grid: the README's table."""
    return [(s, n, for_stage(s, n, **kw)) for s in sizes for n in data]


HEAD_DROPOUT = "top_dropout"


def dropout_layers(model) -> tuple[object | None, list]:
    """The model's head dropout layer (`top_dropout`, or None) and its stochastic-depth layers (`*drop`).

    Stochastic depth drops whole samples of a residual branch, so its layers have a `noise_shape`; the
    names are keras.applications' (`block2b_drop`), which every model of the family keeps.
    """
    head, depth = None, []
    for layer in model.layers:
        if type(layer).__name__ != "Dropout":
            continue
        if layer.name == HEAD_DROPOUT:
            head = layer
        elif layer.name.endswith("drop") and getattr(layer, "noise_shape", None) is not None:
            depth.append(layer)
    return head, depth


def apply_rates(model, *, dropout_rate: float, drop_connect_rate: float, built_drop_connect_rate: float) -> int:
    """Set the dropout rates of a built model for one stage; returns the number of layers changed.

    The head dropout layer (`top_dropout`) gets `dropout_rate`. The stochastic
    depth layers (`*drop`, one per residual block, built at rates rising
    linearly to `built_drop_connect_rate`) are scaled by
    `drop_connect_rate / built_drop_connect_rate`, which keeps their linear
    rise. Keras reads a Dropout layer's rate when a step is traced, so call
    this before the first step at a new image size (a new size retraces).
    A model without such layers (ResNet-50) is left as it is.
    """
    ratio = drop_connect_rate / built_drop_connect_rate if built_drop_connect_rate > 0 else 0.0
    head, depth = dropout_layers(model)
    if head is not None:
        head.rate = float(dropout_rate)
    for layer in depth:
        base = getattr(layer, "_built_rate", None)
        if base is None:
            base = layer._built_rate = float(layer.rate)
        layer.rate = base * ratio
    return len(depth) + (head is not None)


def _clip(x: float) -> float:
    return min(1.0, max(0.0, x))


def _check_positive(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}.")
