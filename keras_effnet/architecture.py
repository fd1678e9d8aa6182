"""The EfficientNet family as data, and the pure functions that scale it.

Everything a builder needs to know about a network is computed here, without
Keras: the stage table of the searched baseline (Tan & Le 2019, Table 1), the
table of official variants, the compound-scaling formula (section 3.3) and the
rounding rules of the official code. `model_spec()` turns a variant into a flat,
frozen list of blocks that `keras_effnet.graph` turns into layers, for either
Keras flavour.

Two ways to get coefficients, because users have asked about the difference for
years (tensorflow/tpu#390, #738, #1047; qubvel/efficientnet#89):

* **preset**: integer phi 0..8 picks the official B0..B8 row of `PRESETS`,
  identical in tensorflow/tpu, keras.applications and timm. Those rows are *not*
  alpha**phi, beta**phi, gamma**phi: they were hand-rounded by the authors.
* **formula**: any other phi (2.5, 9, ...) or non-default alpha/beta/gamma gives
  depth = alpha**phi, width = beta**phi, resolution = round(224 * gamma**phi).
"""

from __future__ import annotations

import dataclasses
import math
import numbers

DEPTH_DIVISOR = 8
BN_MOMENTUM = 0.99
BN_EPSILON = 1e-3
BASE_RESOLUTION = 224
STEM_FILTERS = 32
HEAD_FILTERS = 1280
DEFAULT_ALPHA, DEFAULT_BETA, DEFAULT_GAMMA = 1.2, 1.1, 1.15
DEFAULT_DROP_CONNECT_RATE = 0.2
MIN_INPUT_SIZE = 32
MAX_PHI = 12.0
"""Upper bound on phi. At phi = 12 the formula already gives ~0.5 billion
parameters at 1204 px; beyond it a model cannot be built in reasonable memory."""

FAMILIES = ("efficientnet", "lite")
SCALINGS = ("auto", "preset", "formula")

IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STDDEV_RGB = (0.229, 0.224, 0.225)
LITE_MEAN_RGB = (127.0 / 255.0,) * 3
LITE_STDDEV_RGB = (128.0 / 255.0,) * 3


@dataclasses.dataclass(frozen=True)
class Stage:
    """One row of the baseline's Table 1: an MBConv stage of `repeats` blocks."""

    kernel_size: int
    repeats: int
    filters_in: int
    filters_out: int
    expand_ratio: int
    strides: int
    se_ratio: float = 0.25


#            kernel repeats  in   out  expand stride
B0_STAGES = (
    Stage(3, 1, 32, 16, 1, 1),
    Stage(3, 2, 16, 24, 6, 2),
    Stage(5, 2, 24, 40, 6, 2),
    Stage(3, 3, 40, 80, 6, 2),
    Stage(5, 3, 80, 112, 6, 1),
    Stage(5, 4, 112, 192, 6, 2),
    Stage(3, 1, 192, 320, 6, 1),
)


@dataclasses.dataclass(frozen=True)
class Coefficients:
    """What `build` uses for one member of the family."""

    name: str
    family: str
    phi: float
    width: float
    depth: float
    resolution: int
    dropout: float
    source: str  # "preset" or "formula"


@dataclasses.dataclass(frozen=True)
class Preset:
    width: float
    depth: float
    resolution: int
    dropout: float


# The official variants (REFERENCE section 1 and 2), keyed by family then phi.
PRESETS: dict[str, dict[int, Preset]] = {
    "efficientnet": {
        0: Preset(1.0, 1.0, 224, 0.2),
        1: Preset(1.0, 1.1, 240, 0.2),
        2: Preset(1.1, 1.2, 260, 0.3),
        3: Preset(1.2, 1.4, 300, 0.3),
        4: Preset(1.4, 1.8, 380, 0.4),
        5: Preset(1.6, 2.2, 456, 0.4),
        6: Preset(1.8, 2.6, 528, 0.5),
        7: Preset(2.0, 3.1, 600, 0.5),
        8: Preset(2.2, 3.6, 672, 0.5),
    },
    "lite": {
        0: Preset(1.0, 1.0, 224, 0.2),
        1: Preset(1.0, 1.1, 240, 0.2),
        2: Preset(1.1, 1.2, 260, 0.3),
        3: Preset(1.2, 1.4, 280, 0.3),
        4: Preset(1.4, 1.8, 300, 0.3),
    },
}


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """One MBConv block, fully resolved: the builder only reads it."""

    name: str  # layer-name prefix, e.g. "block2a_"
    kernel_size: int
    strides: int
    filters_in: int
    filters_out: int
    expand_ratio: int
    se_filters: int  # squeeze-excitation bottleneck channels; 0 = no SE
    drop_rate: float


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    coefficients: Coefficients
    activation: str
    stem_filters: int
    head_filters: int
    blocks: tuple[BlockSpec, ...]
    mean_rgb: tuple[float, float, float]
    stddev_rgb: tuple[float, float, float]


# ----------------------------------------------------------------------------
# Pure scaling rules.


def round_filters(filters: float, width: float, divisor: int = DEPTH_DIVISOR) -> int:
    """Scale a channel count by `width`, rounded to a multiple of `divisor`.

    The result never falls below 90% of the scaled value: a plain round-to-
    nearest multiple of 8 can lose more than 10% of the channels of a thin
    layer, which the official code guards against (efficientnet_model.py).
    """
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def round_repeats(repeats: int, depth: float) -> int:
    """Scale the number of blocks of a stage by `depth`, rounding up."""
    return int(math.ceil(depth * repeats))


def se_filters(filters_in: int, se_ratio: float) -> int:
    """SE bottleneck width: a fraction of the block's *input* channels (not the expanded ones)."""
    return max(1, int(filters_in * se_ratio)) if 0 < se_ratio <= 1 else 0


def drop_connect_schedule(block_index: int, num_blocks: int, rate: float) -> float:
    """Stochastic-depth rate of a block: rises linearly from 0 to `rate`.

    As in keras.applications and tensorflow/tpu, block i of n gets rate * i / n,
    so the first block is never dropped and the last is just below `rate`.
    """
    return rate * block_index / num_blocks


def formula_coefficients(
    phi: float, alpha: float, beta: float, gamma: float
) -> tuple[float, float, int]:
    """Compound scaling (paper eq. 3): depth alpha**phi, width beta**phi, res 224*gamma**phi."""
    return alpha**phi, beta**phi, int(round(BASE_RESOLUTION * gamma**phi))


def formula_dropout(phi: float) -> float:
    """Head dropout for a formula member: 0.2 + 0.1 per two steps of phi, at most 0.5.

    It reproduces every preset's dropout at integer phi (B0/B1 0.2, B2/B3 0.3,
    B4/B5 0.4, B6+ 0.5), so formula and preset agree where they can.
    """
    return min(0.5, 0.2 + 0.1 * math.floor(phi / 2))


# ----------------------------------------------------------------------------
# Validation: errors name the argument, the value and what is allowed.


def check_phi(phi, family: str = "efficientnet") -> float:
    if isinstance(phi, bool) or not isinstance(phi, numbers.Real):
        raise TypeError(
            f"phi must be a real number (int or float), got {phi!r} of type {type(phi).__name__}."
        )
    value = float(phi)
    if not math.isfinite(value):
        raise ValueError(f"phi must be finite, got {phi!r}.")
    if value < 0:
        raise ValueError(f"phi must be >= 0, got {phi!r}.")
    if family == "lite":
        lite = sorted(PRESETS["lite"])
        if not value.is_integer() or int(value) not in PRESETS["lite"]:
            raise ValueError(
                f"phi={phi!r} is not an EfficientNet-Lite variant: family='lite' allows the integers "
                f"{lite[0]}..{lite[-1]} (Lite0..Lite4); the Lite family has no compound-scaling formula."
            )
    elif value > MAX_PHI:
        raise ValueError(f"phi must be <= {MAX_PHI:g}, got {phi!r} (see architecture.MAX_PHI).")
    return value


def check_family(family) -> str:
    if not isinstance(family, str) or family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}.")
    return family


def check_multiplier(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} of type {type(value).__name__}.")
    if not math.isfinite(float(value)) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}.")
    return float(value)


def check_rate(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} of type {type(value).__name__}.")
    if not math.isfinite(float(value)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}.")
    return float(value)


# ----------------------------------------------------------------------------
# From phi to a spec.


def variant_name(family: str, phi: float, source: str) -> str:
    """keras.applications' model names for presets; an explicit phi otherwise."""
    if family == "lite":
        return f"efficientnetlite{int(phi)}"
    if source == "preset":
        return f"efficientnetb{int(phi)}"
    return f"efficientnet_phi{phi:g}".replace(".", "p")


def coefficients(
    phi=0,
    *,
    family: str = "efficientnet",
    alpha: float = DEFAULT_ALPHA,
    beta: float = DEFAULT_BETA,
    gamma: float = DEFAULT_GAMMA,
    scaling: str = "auto",
) -> Coefficients:
    """Width, depth, resolution and head dropout that `build` would use.

    scaling="auto" takes the official preset for an integer phi 0..8 with the
    default alpha/beta/gamma, and the compound-scaling formula otherwise;
    "preset" insists on a preset, "formula" always applies the formula (so
    `coefficients(3, scaling="formula")` is the literal phi=3 network: depth
    1.728, width 1.331, 341 px, not the official B3).
    """
    family = check_family(family)
    phi = check_phi(phi, family)
    alpha = check_multiplier("alpha", alpha)
    beta = check_multiplier("beta", beta)
    gamma = check_multiplier("gamma", gamma)
    if scaling not in SCALINGS:
        raise ValueError(f"scaling must be one of {SCALINGS}, got {scaling!r}.")
    presets = PRESETS[family]
    is_preset = phi.is_integer() and int(phi) in presets
    defaults = (alpha, beta, gamma) == (DEFAULT_ALPHA, DEFAULT_BETA, DEFAULT_GAMMA)
    if family == "lite" and scaling == "formula":
        raise ValueError("scaling='formula' is not available for family='lite': Lite has presets only.")
    if scaling == "preset" and not is_preset:
        raise ValueError(
            f"scaling='preset' needs an integer phi in {sorted(presets)} for family={family!r}, got phi={phi:g}."
        )
    use_preset = family == "lite" or scaling == "preset" or (scaling == "auto" and is_preset and defaults)
    if use_preset:
        p = presets[int(phi)]
        width, depth, resolution, dropout, source = p.width, p.depth, p.resolution, p.dropout, "preset"
    else:
        depth, width, resolution = formula_coefficients(phi, alpha, beta, gamma)
        dropout, source = formula_dropout(phi), "formula"
    return Coefficients(
        name=variant_name(family, phi, source),
        family=family,
        phi=phi,
        width=width,
        depth=depth,
        resolution=resolution,
        dropout=dropout,
        source=source,
    )


def model_spec(coeffs: Coefficients, drop_connect_rate: float = DEFAULT_DROP_CONNECT_RATE) -> ModelSpec:
    """Resolve every block of a family member: names, channels, strides, drop rates.

    Lite (tensorflow/tpu efficientnet_lite_builder.py): no squeeze-excitation,
    ReLU6 instead of swish, stem and head channels not scaled, and the first and
    last stages keep their baseline repeats; all for int8-friendly mobile graphs.
    """
    lite = coeffs.family == "lite"
    stages = B0_STAGES
    repeats = []
    for i, stage in enumerate(stages):
        fixed = lite and i in (0, len(stages) - 1)
        repeats.append(stage.repeats if fixed else round_repeats(stage.repeats, coeffs.depth))
    num_blocks = sum(repeats)
    blocks = []
    index = 0
    for i, (stage, n) in enumerate(zip(stages, repeats)):
        filters_in = round_filters(stage.filters_in, coeffs.width)
        filters_out = round_filters(stage.filters_out, coeffs.width)
        if lite and i == 0:
            filters_in = STEM_FILTERS
        for j in range(n):
            blocks.append(
                BlockSpec(
                    name=f"block{i + 1}{_letters(j)}_",
                    kernel_size=stage.kernel_size,
                    strides=stage.strides if j == 0 else 1,
                    filters_in=filters_in if j == 0 else filters_out,
                    filters_out=filters_out,
                    expand_ratio=stage.expand_ratio,
                    se_filters=0 if lite else se_filters(filters_in if j == 0 else filters_out, stage.se_ratio),
                    drop_rate=drop_connect_schedule(index, num_blocks, drop_connect_rate),
                )
            )
            index += 1
    return ModelSpec(
        coefficients=coeffs,
        activation="relu6" if lite else "swish",
        stem_filters=STEM_FILTERS if lite else round_filters(STEM_FILTERS, coeffs.width),
        head_filters=HEAD_FILTERS if lite else round_filters(HEAD_FILTERS, coeffs.width),
        blocks=tuple(blocks),
        mean_rgb=LITE_MEAN_RGB if lite else IMAGENET_MEAN_RGB,
        stddev_rgb=LITE_STDDEV_RGB if lite else IMAGENET_STDDEV_RGB,
    )


def _letters(j: int) -> str:
    """Block letter within a stage: a..z as in keras.applications, then aa, ab, ...

    keras.applications uses chr(97 + j), which breaks past 26 blocks; only the
    formula at large phi gets there, and it gets spreadsheet-style letters.
    """
    if j < 26:
        return chr(97 + j)
    return _letters(j // 26 - 1) + chr(97 + j % 26)
