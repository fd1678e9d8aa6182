"""The pure functions that scale the EfficientNet families into a `ModelSpec`.

The families themselves are data in `keras_effnet.families` (stage tables, `FamilyRules`, the official
variants). Here, without Keras: the compound-scaling formula (Tan & Le 2019, section 3.3), the rounding
rules of the official code, the argument checks, and `model_spec()`, which turns a variant into a flat,
frozen list of blocks that `keras_effnet.graph` turns into layers, for either Keras flavour.

Three families share this one definition:

* ``"efficientnet"``: EfficientNet B0..B8 (Tan & Le, ICML 2019), MBConv everywhere.
* ``"lite"``: EfficientNet-Lite0..4 (tensorflow/tpu), the int8-friendly variant.
* ``"v2"``: EfficientNetV2 (Tan & Le, ICML 2021): Fused-MBConv in the early
  stages, BN momentum 0.9, no 10% rounding guard. B0..B3 are phi 0..3 on the
  V2-B0 table; S, M and L have tables of their own (`variant_coefficients`).

Two ways to get coefficients, because users have asked about the difference for
years (tensorflow/tpu#390, #738, #1047; qubvel/efficientnet#89):

* **preset**: integer phi picks the official row of `PRESETS` (B0..B8, Lite0..4,
  V2-B0..B3), identical in tensorflow/tpu, keras.applications and timm. Those
  rows are *not* alpha**phi, beta**phi, gamma**phi: they were hand-rounded.
* **formula**: any other phi (2.5, 9, ...) or non-default alpha/beta/gamma gives
  depth = alpha**phi, width = beta**phi, resolution = round(224 * gamma**phi).
"""

from __future__ import annotations

import dataclasses
import math
import numbers

from keras_effnet.families import (
    BASE_RESOLUTION,
    BN_MOMENTUM,
    DEFAULT_ALPHA,
    DEFAULT_BETA,
    DEFAULT_DROP_CONNECT_RATE,
    DEFAULT_GAMMA,
    DEPTH_DIVISOR,
    FAMILIES,
    HEAD_FILTERS,
    IMAGENET_CONSTANTS,
    IMAGENET_WEIGHTS,
    LITE_WEIGHTS,
    MAX_PHI,
    MINUS_ONE_TO_ONE,
    PRESETS,
    RULES,
    SCALINGS,
    STAGE_TABLES,
    V2_NAMED,
    V2_TRAIN_FRACTION,
    Coefficients,
    Preprocessing,
    Stage,
)


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """One MBConv or Fused-MBConv block, fully resolved: the builder only reads it."""

    name: str  # layer-name prefix, e.g. "block2a_"
    kernel_size: int
    strides: int
    filters_in: int
    filters_out: int
    expand_ratio: int
    se_filters: int  # squeeze-excitation bottleneck channels; 0 = no SE
    drop_rate: float
    block: str = "mbconv"  # one of BLOCK_TYPES


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    coefficients: Coefficients
    activation: str
    stem_filters: int
    head_filters: int
    blocks: tuple[BlockSpec, ...]
    preprocessing: Preprocessing = IMAGENET_WEIGHTS
    bn_momentum: float = BN_MOMENTUM
    padding: str = "explicit"
    depthwise_name: str = "dwconv"

    @property
    def mean_rgb(self):
        return self.preprocessing.mean_rgb

    @property
    def stddev_rgb(self):
        return self.preprocessing.stddev_rgb


# ----------------------------------------------------------------------------
# Pure scaling rules.


def round_filters(
    filters: float, width: float, divisor: int = DEPTH_DIVISOR, *, min_depth: int | None = None, guard: bool = True
) -> int:
    """Scale a channel count by `width`, rounded to the nearest multiple of `divisor`, at least `min_depth`.

    With `guard` (V1, Lite) the result never falls below 90% of the scaled
    value: a plain round-to-nearest multiple of 8 can lose more than 10% of the
    channels of a thin layer, which the V1 code guards against
    (efficientnet_model.py). The V2 code (effnetv2_model.py) has no guard.
    """
    scaled = filters * width
    rounded = max(min_depth or divisor, int(scaled + divisor / 2) // divisor * divisor)
    if guard and rounded < 0.9 * scaled:
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
    V2 uses the same rule with n the number of blocks after depth scaling, as
    google/automl effnetv2_model.py does (keras.applications' V2 divides by the
    unscaled count, so its V2-B1..B3 go above `rate`; only training differs).
    """
    return rate * block_index / num_blocks


def formula_coefficients(phi: float, alpha: float, beta: float, gamma: float) -> tuple[float, float, int]:
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
        raise TypeError(f"phi must be a real number (int or float), got {phi!r} of type {type(phi).__name__}.")
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
        raise ValueError(
            f"phi must be <= {MAX_PHI:g} for family={family!r}, got {phi!r} (see architecture.MAX_PHI)."
            + (" V2-S/M/L are not on the phi ladder: use build_variant('efficientnetv2-s')." if family == "v2" else "")
        )
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
    prefix = "efficientnetv2-b" if family == "v2" else "efficientnetb"
    if source == "preset":
        return f"{prefix}{int(phi)}"
    stem = "efficientnetv2" if family == "v2" else "efficientnet"
    return f"{stem}_phi{phi:g}".replace(".", "p")


def coefficients(
    phi=0,
    *,
    family: str = "efficientnet",
    alpha: float = DEFAULT_ALPHA,
    beta: float = DEFAULT_BETA,
    gamma: float = DEFAULT_GAMMA,
    scaling: str = "auto",
) -> Coefficients:
    """Width, depth, resolutions and head dropout that `build` would use.

    scaling="auto" takes the official preset for an integer phi with the
    default alpha/beta/gamma (B0..B8, Lite0..4, V2-B0..B3), and the
    compound-scaling formula otherwise; "preset" insists on a preset, "formula"
    always applies the formula (so `coefficients(3, scaling="formula")` is the
    literal phi=3 network: depth 1.728, width 1.331, 341 px, not the official
    B3). A V2 formula member scales the V2-B0 table and trains at 0.8x its
    resolution.
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
        train_resolution = p.train_resolution or resolution
    else:
        depth, width, resolution = formula_coefficients(phi, alpha, beta, gamma)
        dropout, source = formula_dropout(phi), "formula"
        train_resolution = int(round(V2_TRAIN_FRACTION * resolution)) if family == "v2" else resolution
    return Coefficients(
        name=variant_name(family, phi, source),
        family=family,
        phi=phi,
        width=width,
        depth=depth,
        resolution=resolution,
        dropout=dropout,
        source=source,
        train_resolution=train_resolution,
        stages=RULES[family].default_stages,
    )


def _ladder() -> dict[str, tuple[str, int]]:
    """Every official phi-ladder member by its keras.applications model name: (family, phi)."""
    return {variant_name(f, phi, "preset"): (f, phi) for f in FAMILIES for phi in PRESETS[f]}


def variants() -> tuple[str, ...]:
    """The official members of every family by model name (keras.applications' names where it has them)."""
    return tuple(_ladder()) + tuple(V2_NAMED)


def check_variant(name) -> str:
    allowed = variants()
    if not isinstance(name, str) or name not in allowed:
        raise ValueError(f"name must be one of the variants {', '.join(allowed)}; got {name!r}.")
    return name


def variant_coefficients(name: str) -> Coefficients:
    """The coefficients of an official member given by model name ("efficientnetb3", "efficientnetv2-s", ...)."""
    name = check_variant(name)
    ladder = _ladder()
    if name in ladder:
        family, phi = ladder[name]
        return coefficients(phi, family=family, scaling="preset")
    v = V2_NAMED[name]
    return Coefficients(
        name=name,
        family="v2",
        phi=None,
        width=1.0,
        depth=1.0,
        resolution=v.resolution,
        dropout=v.dropout,
        source="preset",
        train_resolution=v.train_resolution,
        stages=v.stages,
    )


def check_fused_stages(fused_stages, num_stages: int, family: str) -> int | None:
    """None (the family's own block types) or an integer 0..num_stages."""
    if fused_stages is None:
        return None
    if (
        isinstance(fused_stages, bool)
        or not isinstance(fused_stages, numbers.Integral)
        or not (0 <= fused_stages <= num_stages)
    ):
        raise ValueError(
            f"fused_stages must be None or an integer 0..{num_stages} (the number of stages of this "
            f"{family!r} member), got {fused_stages!r}."
        )
    return int(fused_stages)


def check_bn_momentum(value) -> float | None:
    """None (the family's own) or a number in [0, 1)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (0.0 <= float(value) < 1.0):
        raise ValueError(f"bn_momentum must be None (the family's default) or a number in [0, 1), got {value!r}.")
    return float(value)


def with_fused_stages(stages: tuple[Stage, ...], fused_stages: int | None) -> tuple[Stage, ...]:
    """The table with its first `fused_stages` stages Fused-MBConv and the rest MBConv (None: unchanged).

    Only the block type changes: kernel, expansion, stride and SE ratio stay the
    table's, so k = 0 on V2 gives MBConv without SE in the first stages and
    k = 7 on B0 gives Fused-MBConv with SE everywhere.
    """
    if fused_stages is None:
        return stages
    return tuple(dataclasses.replace(s, block="fused" if i < fused_stages else "mbconv") for i, s in enumerate(stages))


def model_spec(
    coeffs: Coefficients,
    drop_connect_rate: float = DEFAULT_DROP_CONNECT_RATE,
    *,
    fused_stages: int | None = None,
    bn_momentum: float | None = None,
) -> ModelSpec:
    """Resolve every block of a family member: types, names, channels, strides, drop rates.

    Everything family-specific comes from `RULES[coeffs.family]`, the stage
    table from `STAGE_TABLES[coeffs.stages]`. Lite (tensorflow/tpu
    efficientnet_lite_builder.py): no squeeze-excitation, ReLU6 instead of
    swish, stem and head channels not scaled, and the first and last stages
    keep their baseline repeats; all for int8-friendly mobile graphs.

    `fused_stages=k` makes the first k stages Fused-MBConv and the others MBConv
    (Tan & Le 2021 section 3.2); the model name gets a `_fused{k}` suffix when
    that differs from the member's own table.
    """
    rules = RULES[coeffs.family]
    base = STAGE_TABLES[coeffs.stages]
    fused_stages = check_fused_stages(fused_stages, len(base), coeffs.family)
    stages = with_fused_stages(base, fused_stages)
    if stages != base:
        coeffs = dataclasses.replace(coeffs, name=f"{coeffs.name}_fused{fused_stages}")
    bn_momentum = rules.bn_momentum if bn_momentum is None else bn_momentum

    def rnd(filters):
        return round_filters(filters, coeffs.width, min_depth=rules.min_depth, guard=rules.rounding_guard)

    fixed = {i % len(stages) for i in rules.fixed_repeat_stages}
    repeats = [s.repeats if i in fixed else round_repeats(s.repeats, coeffs.depth) for i, s in enumerate(stages)]
    stem_filters = rnd(stages[0].filters_in) if rules.scale_stem_head else stages[0].filters_in
    head_filters = rnd(HEAD_FILTERS) if rules.scale_stem_head else HEAD_FILTERS
    num_blocks = sum(repeats)
    blocks = []
    index = 0
    for i, (stage, n) in enumerate(zip(stages, repeats)):
        filters_in = stem_filters if i == 0 else rnd(stage.filters_in)
        filters_out = rnd(stage.filters_out)
        for j in range(n):
            block_in = filters_in if j == 0 else filters_out
            blocks.append(
                BlockSpec(
                    name=f"block{i + 1}{_letters(j)}_",
                    kernel_size=stage.kernel_size,
                    strides=stage.strides if j == 0 else 1,
                    filters_in=block_in,
                    filters_out=filters_out,
                    expand_ratio=stage.expand_ratio,
                    se_filters=se_filters(block_in, stage.se_ratio) if rules.squeeze_excite else 0,
                    drop_rate=drop_connect_schedule(index, num_blocks, drop_connect_rate),
                    block=stage.block,
                )
            )
            index += 1
    return ModelSpec(
        coefficients=coeffs,
        activation=rules.activation,
        stem_filters=stem_filters,
        head_filters=head_filters,
        blocks=tuple(blocks),
        preprocessing=preprocessing_for(coeffs),
        bn_momentum=bn_momentum,
        padding=rules.padding,
        depthwise_name=rules.depthwise_name,
    )


def preprocessing_for(coeffs: Coefficients) -> Preprocessing:
    """V1: ImageNet statistics as weights; Lite: (x - 127) / 128; V2-B*: ImageNet as constants; V2-S/M/L: x/128 - 1."""
    if coeffs.family == "lite":
        return LITE_WEIGHTS
    if coeffs.family == "v2":
        return IMAGENET_CONSTANTS if coeffs.stages == "v2-b0" else MINUS_ONE_TO_ONE
    return IMAGENET_WEIGHTS


def _letters(j: int) -> str:
    """Block letter within a stage: a..z as in keras.applications, then aa, ab, ...

    keras.applications uses chr(97 + j), which breaks past 26 blocks; only the
    formula at large phi gets there, and it gets spreadsheet-style letters.
    """
    if j < 26:
        return chr(97 + j)
    return _letters(j // 26 - 1) + chr(97 + j % 26)
