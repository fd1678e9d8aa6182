"""The EfficientNet families as data: stage tables, family rules, the official variants, preprocessing.

Nothing here computes; `keras_effnet.architecture` scales these tables into a `ModelSpec`. The tables are
Tan & Le 2019, Table 1 (B0), Tan & Le 2021, Tables 4 and 5 with keras.applications' V2 tables (V2-B0, S, M,
L), and the rows of the official variants of tensorflow/tpu, keras.applications and google/automl. Adding a
family is adding a `FamilyRules` row, its stage table and its presets here, not a branch in the builder.
"""

from __future__ import annotations

import dataclasses

DEPTH_DIVISOR = 8
BN_MOMENTUM = 0.99
"""V1 and Lite (tensorflow/tpu, keras.applications efficientnet.py)."""
V2_BN_MOMENTUM = 0.9
"""EfficientNetV2 (google/automl efficientnetv2, keras.applications efficientnet_v2.py)."""
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
V2_TRAIN_FRACTION = 0.8
"""google/automl efficientnetv2 trains at about 0.8x the evaluation size (B3 240/300, M 384/480); formula
members of the V2 family follow that rule."""

FAMILIES = ("efficientnet", "lite", "v2")
SCALINGS = ("auto", "preset", "formula")
BLOCK_TYPES = ("mbconv", "fused")

IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STDDEV_RGB = (0.229, 0.224, 0.225)
LITE_MEAN_RGB = (127.0 / 255.0,) * 3
LITE_STDDEV_RGB = (128.0 / 255.0,) * 3


@dataclasses.dataclass(frozen=True)
class Stage:
    """One row of a stage table: `repeats` blocks of type `block` ("mbconv" or "fused")."""

    kernel_size: int
    repeats: int
    filters_in: int
    filters_out: int
    expand_ratio: int
    strides: int
    se_ratio: float = 0.25
    block: str = "mbconv"


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

# EfficientNetV2 (keras.applications efficientnet_v2.py DEFAULT_BLOCKS_ARGS, google/automl effnetv2_configs.py).
#             kernel repeats  in   out  expand stride  se     block
V2_B0_STAGES = (
    Stage(3, 1, 32, 16, 1, 1, 0.0, "fused"),
    Stage(3, 2, 16, 32, 4, 2, 0.0, "fused"),
    Stage(3, 2, 32, 48, 4, 2, 0.0, "fused"),
    Stage(3, 3, 48, 96, 4, 2, 0.25, "mbconv"),
    Stage(3, 5, 96, 112, 6, 1, 0.25, "mbconv"),
    Stage(3, 8, 112, 192, 6, 2, 0.25, "mbconv"),
)
V2_S_STAGES = (
    Stage(3, 2, 24, 24, 1, 1, 0.0, "fused"),
    Stage(3, 4, 24, 48, 4, 2, 0.0, "fused"),
    Stage(3, 4, 48, 64, 4, 2, 0.0, "fused"),
    Stage(3, 6, 64, 128, 4, 2, 0.25, "mbconv"),
    Stage(3, 9, 128, 160, 6, 1, 0.25, "mbconv"),
    Stage(3, 15, 160, 256, 6, 2, 0.25, "mbconv"),
)
V2_M_STAGES = (
    Stage(3, 3, 24, 24, 1, 1, 0.0, "fused"),
    Stage(3, 5, 24, 48, 4, 2, 0.0, "fused"),
    Stage(3, 5, 48, 80, 4, 2, 0.0, "fused"),
    Stage(3, 7, 80, 160, 4, 2, 0.25, "mbconv"),
    Stage(3, 14, 160, 176, 6, 1, 0.25, "mbconv"),
    Stage(3, 18, 176, 304, 6, 2, 0.25, "mbconv"),
    Stage(3, 5, 304, 512, 6, 1, 0.25, "mbconv"),
)
V2_L_STAGES = (
    Stage(3, 4, 32, 32, 1, 1, 0.0, "fused"),
    Stage(3, 7, 32, 64, 4, 2, 0.0, "fused"),
    Stage(3, 7, 64, 96, 4, 2, 0.0, "fused"),
    Stage(3, 10, 96, 192, 4, 2, 0.25, "mbconv"),
    Stage(3, 19, 192, 224, 6, 1, 0.25, "mbconv"),
    Stage(3, 25, 224, 384, 6, 2, 0.25, "mbconv"),
    Stage(3, 7, 384, 640, 6, 1, 0.25, "mbconv"),
)

STAGE_TABLES: dict[str, tuple[Stage, ...]] = {
    "b0": B0_STAGES,
    "v2-b0": V2_B0_STAGES,
    "v2-s": V2_S_STAGES,
    "v2-m": V2_M_STAGES,
    "v2-l": V2_L_STAGES,
}


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """Raw RGB pixels in [0, 255] to network input, inside the model.

    `Rescaling(scale, offset)`, then, when `mean_rgb` is set, a `Normalization`
    to (x - mean) / stddev. `stats_as_weights`: V1 keras.applications builds the
    Normalization un-adapted, so its mean, variance and count are 7 weights (in
    the parameter count and the weight files); V2 passes the statistics as
    constants of the layer's config and has no such weights.
    """

    scale: float
    offset: float = 0.0
    mean_rgb: tuple[float, float, float] | None = None
    stddev_rgb: tuple[float, float, float] | None = None
    stats_as_weights: bool = True


IMAGENET_WEIGHTS = Preprocessing(1.0 / 255.0, 0.0, IMAGENET_MEAN_RGB, IMAGENET_STDDEV_RGB, True)
LITE_WEIGHTS = Preprocessing(1.0 / 255.0, 0.0, LITE_MEAN_RGB, LITE_STDDEV_RGB, True)
IMAGENET_CONSTANTS = Preprocessing(1.0 / 255.0, 0.0, IMAGENET_MEAN_RGB, IMAGENET_STDDEV_RGB, False)
MINUS_ONE_TO_ONE = Preprocessing(1.0 / 128.0, -1.0)
"""V2-S/M/L: x / 128 - 1, as keras.applications (the V2 checkpoints were trained on it)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class FamilyRules:
    """What sets a family apart, besides its stage tables: data, not branches in the builder.

    - `min_depth`, `rounding_guard`: the channel-rounding rule (`round_filters`).
      V1 never rounds more than 10% away; V2's code has no such guard (it makes
      V2-B3's first stage 16 channels, where V1's rule would give 24).
    - `scale_stem_head`: V1 and V2 width-scale the stem (the first stage's input
      channels) and the 1280-channel head; Lite keeps both fixed.
    - `fixed_repeat_stages`: stages whose repeats depth scaling leaves alone
      (Lite: the first and the last).
    - `padding`: "explicit" pads stride-2 convolutions with ZeroPadding2D and
      uses "valid" (V1 keras.applications, reproducing TF's asymmetric 'SAME' on
      every backend); "same" is V2 keras.applications' plain 'same'.
    - `depthwise_name`: the depthwise layer's suffix, "dwconv" in V1 and
      "dwconv2" in V2 keras.applications (weight loading goes by these names).
    """

    activation: str
    bn_momentum: float
    min_depth: int | None
    rounding_guard: bool
    scale_stem_head: bool
    fixed_repeat_stages: tuple[int, ...]
    squeeze_excite: bool
    padding: str
    depthwise_name: str
    default_stages: str


RULES: dict[str, FamilyRules] = {
    "efficientnet": FamilyRules(
        activation="swish",
        bn_momentum=BN_MOMENTUM,
        min_depth=None,
        rounding_guard=True,
        scale_stem_head=True,
        fixed_repeat_stages=(),
        squeeze_excite=True,
        padding="explicit",
        depthwise_name="dwconv",
        default_stages="b0",
    ),
    "lite": FamilyRules(
        activation="relu6",
        bn_momentum=BN_MOMENTUM,
        min_depth=None,
        rounding_guard=True,
        scale_stem_head=False,
        fixed_repeat_stages=(0, -1),
        squeeze_excite=False,
        padding="explicit",
        depthwise_name="dwconv",
        default_stages="b0",
    ),
    "v2": FamilyRules(
        activation="swish",
        bn_momentum=V2_BN_MOMENTUM,
        min_depth=8,
        rounding_guard=False,
        scale_stem_head=True,
        fixed_repeat_stages=(),
        squeeze_excite=True,
        padding="same",
        depthwise_name="dwconv2",
        default_stages="v2-b0",
    ),
}


@dataclasses.dataclass(frozen=True)
class Coefficients:
    """What `build` uses for one member of a family.

    `resolution` is the evaluation (native input) size; `train_resolution` the
    size the official recipe trains at (V2 trains smaller: B0 192 for 224, S
    300 for 384; V1 and Lite train at the evaluation size). `phi` is None for
    the V2 members that are not on the scaling ladder (S, M, L). `stages` keys
    `STAGE_TABLES`.
    """

    name: str
    family: str
    phi: float | None
    width: float
    depth: float
    resolution: int
    dropout: float
    source: str  # "preset", "formula" (or "model" when read back from a model)
    train_resolution: int = 0
    stages: str = "b0"


@dataclasses.dataclass(frozen=True)
class Preset:
    width: float
    depth: float
    resolution: int
    dropout: float
    train_resolution: int | None = None  # None: the evaluation resolution


# The official variants (tensorflow/tpu, keras.applications, google/automl), keyed by family then phi.
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
    # V2-B0..B3 reuse V1's B0..B3 coefficients on the V2-B0 table (google/automl effnetv2_configs.py,
    # which also gives the train sizes and the head dropout).
    "v2": {
        0: Preset(1.0, 1.0, 224, 0.2, 192),
        1: Preset(1.0, 1.1, 240, 0.2, 192),
        2: Preset(1.1, 1.2, 260, 0.3, 208),
        3: Preset(1.2, 1.4, 300, 0.3, 240),
    },
}


@dataclasses.dataclass(frozen=True)
class NamedVariant:
    """A V2 member off the phi ladder: its own stage table and preprocessing."""

    stages: str
    resolution: int
    train_resolution: int
    dropout: float


# google/automl effnetv2_configs.py: (train size, eval size, dropout); keras.applications' default sizes = eval.
V2_NAMED: dict[str, NamedVariant] = {
    "efficientnetv2-s": NamedVariant("v2-s", 384, 300, 0.2),
    "efficientnetv2-m": NamedVariant("v2-m", 480, 384, 0.3),
    "efficientnetv2-l": NamedVariant("v2-l", 480, 384, 0.4),
}
