"""What the study compares, by name: EfficientNet B0..B7, Lite0..4, EfficientNetV2, the fused-stage sweep,
formula twins, grid points and the ResNet-50 baseline.

A `Member` is pure data; `build_model` turns it into a freshly initialised Keras 3 model taking 0..255 RGB
pixels. It returns the architecture only: the training contract (BN momentum, sync BN, zero-initialised
classifier) is the trainer's to apply, to every model alike, so the baseline is treated as the family is.

Names (`--members`):

- ``b0`` .. ``b7``: the EfficientNet presets (Tan & Le 2019, Table 1).
- ``lite0`` .. ``lite4``: EfficientNet-Lite.
- ``v2-b0`` .. ``v2-b3``, ``v2-s``, ``v2-m``, ``v2-l``: EfficientNetV2 (Tan & Le 2021), keras.applications'
  stage tables.
- ``b0-fused<k>``: B0 with its first k stages as Fused-MBConv (one regular 3x3 conv in place of the expand
  1x1 + depthwise 3x3; EfficientNetV2 section 3.2): the trade of FLOPs for fewer, denser ops, k = 1..7.
  ``b0`` itself is k = 0.
- ``resnet50``: keras.applications' ResNet-50 (He et al. 2016) with the input scaling inside the graph.
"""

from __future__ import annotations

import dataclasses
import math
import re

from keras_effnet import architecture, families

BASELINES = {"resnet50": 224}
V2_NATIVE = {"v2-b0": 224, "v2-b1": 240, "v2-b2": 260, "v2-b3": 300, "v2-s": 384, "v2-m": 480, "v2-l": 480}
"""keras.applications' default (evaluation) input sizes of EfficientNetV2."""
V2_APPLICATION_NAMES = {k: "efficientnetv2-" + k[3:] for k in V2_NATIVE}
B0_STAGES = 7
TARGET_PRODUCT = 2.0
"""alpha * beta**2 * gamma**2 ~= 2 (Tan & Le 2019, eq. 3): FLOPs grow about 2**phi."""
DEFAULT_MEASURE = (
    "b0",
    "b1",
    "b2",
    "b3",
    "b4",
    "b5",
    "b6",
    "b7",
    "v2-b0",
    "v2-b1",
    "v2-b2",
    "v2-b3",
    "v2-s",
    "resnet50",
) + tuple(f"b0-fused{k}" for k in range(1, B0_STAGES + 1))
DEFAULT_TRAIN = ("b0", "b1", "v2-b0", "resnet50")
ROLES = ("family", "v2", "fused", "baseline", "formula", "grid")


@dataclasses.dataclass(frozen=True)
class Member:
    key: str  # stable id: the --members name, file names and step ids
    label: str  # for tables and plots
    kind: str  # "efficientnet", "lite", "v2" or a baseline name
    role: str  # one of ROLES
    phi: float = 0.0
    scaling: str = "auto"
    alpha: float = families.DEFAULT_ALPHA
    beta: float = families.DEFAULT_BETA
    gamma: float = families.DEFAULT_GAMMA
    fused_stages: int = 0
    native_resolution: int = 224
    resolution: int = 224

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def v2_available() -> bool:
    """Whether keras_effnet builds EfficientNetV2 and the fused-stage knob (needed by v2-* and b0-fused<k>)."""
    import keras_effnet

    return hasattr(keras_effnet, "build_variant")


def scaled_resolution(native: int, image_size: int) -> int:
    """The input size the study uses: native when `image_size` is 0, else scaled from B0 = image_size.

    Keeping each member's resolution proportional to its native one (B1 240/224 of B0, ...) keeps compound
    scaling meaningful at the tiny sizes CI uses; never below keras_effnet's 32 px minimum.
    """
    if image_size == 0:
        return native
    return max(families.MIN_INPUT_SIZE, int(round(image_size * native / families.BASE_RESOLUTION)))


def known_names() -> list[str]:
    names = [f"b{p}" for p in range(8)] + [f"lite{p}" for p in range(5)] + list(V2_NATIVE)
    return names + [f"b0-fused{k}" for k in range(1, B0_STAGES + 1)] + list(BASELINES)


def check_names(names) -> tuple[str, ...]:
    """The names, lower-cased; raises ValueError naming the first unknown one and what is allowed."""
    out = []
    for name in names:
        key = str(name).strip().lower()
        if key not in known_names():
            raise ValueError(
                f"unknown member {name!r}; allowed: b0..b7, lite0..lite4, "
                f"{', '.join(V2_NATIVE)}, b0-fused1..b0-fused{B0_STAGES}, {', '.join(BASELINES)}"
            )
        if (key.startswith("v2-") or "-fused" in key) and not v2_available():
            raise ValueError(f"member {name!r} needs EfficientNetV2 in keras_effnet, which this install lacks")
        if key in out:
            raise ValueError(f"member {name!r} is listed twice")
        out.append(key)
    return tuple(out)


def member(name: str, image_size: int) -> Member:
    """The member called `name` (see the module docstring) at the study's image size."""
    key = check_names([name])[0]
    if key in BASELINES:
        native = BASELINES[key]
        return Member(
            key=key,
            label="ResNet50",
            kind=key,
            role="baseline",
            native_resolution=native,
            resolution=scaled_resolution(native, image_size),
        )
    if key in V2_NATIVE:
        native = V2_NATIVE[key]
        phi = int(key[4]) if key.startswith("v2-b") else 0
        return Member(
            key=key,
            label="V2-" + key[3:].upper(),
            kind="v2",
            role="v2",
            phi=phi,
            native_resolution=native,
            resolution=scaled_resolution(native, image_size),
        )
    fused = re.fullmatch(r"b0-fused(\d)", key)
    if fused:
        k = int(fused.group(1))
        return Member(
            key=key,
            label=f"B0 fused×{k}",
            kind="efficientnet",
            role="fused",
            fused_stages=k,
            resolution=scaled_resolution(224, image_size),
        )
    prefix, phi = re.fullmatch(r"(b|lite)(\d)", key).groups()
    return family_member(int(phi), "lite" if prefix == "lite" else "efficientnet", image_size)


def family_member(
    phi,
    family: str,
    image_size: int,
    *,
    scaling: str = "auto",
    alpha=families.DEFAULT_ALPHA,
    beta=families.DEFAULT_BETA,
    gamma=families.DEFAULT_GAMMA,
    role: str = "family",
) -> Member:
    """A member of the EfficientNet (or Lite) family; raises ValueError for an unknown phi or family."""
    family = architecture.check_family(family)
    c = architecture.coefficients(phi, family=family, scaling=scaling, alpha=alpha, beta=beta, gamma=gamma)
    if role == "grid":
        key = f"grid_a{alpha:.3f}_b{beta:.3f}_g{gamma:.3f}".replace(".", "p")
        label = f"α={alpha:.2f} β={beta:.2f} γ={gamma:.3f}"
    elif c.family == "lite":
        key, label = f"lite{int(c.phi)}", f"Lite{int(c.phi)}"
    elif c.source == "preset":
        key, label = f"b{int(c.phi)}", f"B{int(c.phi)}"
    else:
        key = f"phi{c.phi:g}_formula".replace(".", "p")
        label = f"φ={c.phi:g} formula"
    return Member(
        key=key,
        label=label,
        kind=c.family,
        role=role,
        phi=c.phi,
        scaling=scaling,
        alpha=float(alpha),
        beta=float(beta),
        gamma=float(gamma),
        native_resolution=c.resolution,
        resolution=scaled_resolution(c.resolution, image_size),
    )


def grid_points(*, steps=(1.0, 1.1, 1.2, 1.3, 1.4), tolerance: float = 0.1) -> list[tuple[float, float, float]]:
    """The paper's step 1 (section 3.3): (alpha, beta, gamma) with alpha * beta**2 * gamma**2 ~= 2.

    alpha and beta run over `steps`; gamma is solved from the constraint and rounded to 0.05, and a point is
    kept when the product stays within `tolerance` of 2 and gamma >= 1. The paper's own (1.2, 1.1, 1.15) is
    always first, so a two-point grid compares it with one alternative.
    """
    points = [(families.DEFAULT_ALPHA, families.DEFAULT_BETA, families.DEFAULT_GAMMA)]
    for alpha in steps:
        for beta in steps:
            gamma_sq = TARGET_PRODUCT / (alpha * beta**2)
            if gamma_sq < 1.0:
                continue
            gamma = round(round(math.sqrt(gamma_sq) / 0.05) * 0.05, 2)
            if gamma < 1.0 or abs(alpha * beta**2 * gamma**2 - TARGET_PRODUCT) > tolerance:
                continue
            point = (round(alpha, 2), round(beta, 2), gamma)
            if point not in points:
                points.append(point)
    return points


def build_model(
    member: Member,
    classes: int = 1000,
    *,
    image_size: int | None = None,
    dropout_rate=None,
    drop_connect_rate=families.DEFAULT_DROP_CONNECT_RATE,
):
    """A freshly initialised Keras 3 model for `member`, taking 0..255 RGB pixels (the architecture only).

    `image_size` overrides `member.resolution`. ResNet-50 is keras.applications' (weights=None) on top of a
    Rescaling to [-1, 1], so that, like keras_effnet models, it takes raw pixels with its input scaling
    inside the graph (no weights, no MACs: its cost is unchanged) and trains from the same pipeline.
    """
    import keras_effnet
    from keras_effnet import keras_versions

    size = image_size or member.resolution
    shape = (size, size, 3)
    if member.role == "baseline":
        keras = keras_versions.keras3()
        inputs = keras.Input(shape, name="input_layer")
        x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="rescaling")(inputs)
        return keras.applications.ResNet50(weights=None, input_tensor=x, classes=classes)
    common = dict(input_shape=shape, classes=classes, dropout_rate=dropout_rate, drop_connect_rate=drop_connect_rate)
    if member.role == "v2":
        return keras_effnet.build_variant(V2_APPLICATION_NAMES[member.key], **common)
    if member.role == "fused":
        return keras_effnet.build(0, fused_stages=member.fused_stages, **common)
    return keras_effnet.build(
        member.phi,
        family=member.kind,
        scaling=member.scaling,
        alpha=member.alpha,
        beta=member.beta,
        gamma=member.gamma,
        **common,
    )


def layer_count(model) -> int:
    """Layers that run an op (the graph's input layers left out): the per-op overhead term of the cost model."""
    return sum(1 for layer in model.layers if type(layer).__name__ != "InputLayer")
