"""What the study compares: EfficientNet family members, formula twins, grid points and baselines.

A `Member` is pure data; `build_model` turns it into a Keras 3 model. The
ResNet-50 baseline is keras.applications' (weights=None), the reference point of
REFERENCE section 4: 10x the MACs of B0 but often about as fast in wall-clock.
"""

from __future__ import annotations

import dataclasses
import math

from keras_effnet import architecture

BASELINES = ("resnet50",)
BASELINE_RESOLUTION = {"resnet50": 224}
TARGET_PRODUCT = 2.0
"""alpha * beta**2 * gamma**2 ~= 2 (Tan & Le 2019, eq. 3): FLOPs grow about 2**phi."""


@dataclasses.dataclass(frozen=True)
class Member:
    key: str  # stable id: file names and step ids
    label: str  # for tables and plots
    kind: str  # "efficientnet", "lite" or a baseline name
    role: str  # "family", "formula", "grid" or "baseline"
    phi: float = 0.0
    scaling: str = "auto"
    alpha: float = architecture.DEFAULT_ALPHA
    beta: float = architecture.DEFAULT_BETA
    gamma: float = architecture.DEFAULT_GAMMA
    native_resolution: int = 224
    resolution: int = 224

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def scaled_resolution(native: int, image_size: int) -> int:
    """The input size the study uses: native when `image_size` is 0, else scaled from B0 = image_size.

    Keeping each member's resolution proportional to its native one (B1 240/224 of
    B0, ...) keeps compound scaling meaningful at the tiny sizes CI uses; never
    below keras_effnet's 32 px minimum.
    """
    if image_size == 0:
        return native
    return max(architecture.MIN_INPUT_SIZE, int(round(image_size * native / architecture.BASE_RESOLUTION)))


def family_member(phi, family: str, image_size: int, *, scaling: str = "auto",
                  alpha=architecture.DEFAULT_ALPHA, beta=architecture.DEFAULT_BETA,
                  gamma=architecture.DEFAULT_GAMMA, role: str = "family") -> Member:
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
        key=key, label=label, kind=c.family, role=role, phi=c.phi, scaling=scaling,
        alpha=float(alpha), beta=float(beta), gamma=float(gamma),
        native_resolution=c.resolution, resolution=scaled_resolution(c.resolution, image_size),
    )


def baseline_member(name: str, image_size: int) -> Member:
    if name not in BASELINES:
        raise ValueError(f"baselines: unknown baseline {name!r}; allowed: {', '.join(BASELINES)} (or empty for none).")
    native = BASELINE_RESOLUTION[name]
    return Member(key=name, label="ResNet50", kind=name, role="baseline",
                  native_resolution=native, resolution=scaled_resolution(native, image_size))


def grid_points(phi: float = 1.0, *, steps=(1.0, 1.1, 1.2, 1.3, 1.4), tolerance: float = 0.1) -> list[tuple[float, float, float]]:
    """The paper's step 1 (section 3.3): (alpha, beta, gamma) with alpha * beta**2 * gamma**2 ~= 2.

    alpha and beta run over `steps`; gamma is solved from the constraint and
    rounded to 0.05, and a point is kept when the product stays within
    `tolerance` of 2 and gamma >= 1. The paper's own (1.2, 1.1, 1.15) is always
    first, so a two-point grid compares it with one alternative.
    """
    del phi
    points = [(architecture.DEFAULT_ALPHA, architecture.DEFAULT_BETA, architecture.DEFAULT_GAMMA)]
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


def build_model(member: Member, classes: int = 1000, *, dropout_rate=None,
                drop_connect_rate=architecture.DEFAULT_DROP_CONNECT_RATE):
    """A freshly initialised Keras 3 model for `member` at `member.resolution`, taking 0..255 RGB pixels.

    ResNet-50 is keras.applications' (weights=None) built on top of a
    Rescaling to [-1, 1], so that, like keras_effnet models, it takes raw pixels
    with its input scaling inside the graph (no weights, no MACs: its cost is
    unchanged) and trains from the same pipeline.
    """
    from keras_effnet import flavours

    shape = (member.resolution, member.resolution, 3)
    if member.role == "baseline":
        keras = flavours.keras3()
        if member.kind == "resnet50":
            inputs = keras.Input(shape, name="input_layer")
            x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="rescaling")(inputs)
            return keras.applications.ResNet50(weights=None, input_tensor=x, classes=classes)
        raise ValueError(f"baselines: unknown baseline {member.kind!r}; allowed: {', '.join(BASELINES)}.")
    import keras_effnet

    return keras_effnet.build(
        member.phi, family=member.kind, scaling=member.scaling, alpha=member.alpha, beta=member.beta,
        gamma=member.gamma, input_shape=shape, classes=classes, dropout_rate=dropout_rate,
        drop_connect_rate=drop_connect_rate,
    )
