"""`keras_effnet.build` and `build_variant`: any member of the EfficientNet families as a Keras 3 model."""

from __future__ import annotations

import inspect
import numbers
import os

from keras_effnet import architecture, families, graph, keras_versions, lite_checkpoint
from keras_effnet import weights as weights_lib
from keras_effnet.architecture import coefficients
from keras_effnet.families import MIN_INPUT_SIZE

POOLINGS = (None, "avg", "max")


def build(
    phi=0,
    *,
    family: str = "efficientnet",
    include_top: bool = True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes: int = 1000,
    classifier_activation="softmax",
    dropout_rate=None,
    drop_connect_rate=families.DEFAULT_DROP_CONNECT_RATE,
    alpha=families.DEFAULT_ALPHA,
    beta=families.DEFAULT_BETA,
    gamma=families.DEFAULT_GAMMA,
    name=None,
    scaling: str = "auto",
    bn_momentum=None,
    fused_stages=None,
):
    """Build EfficientNet (Tan & Le 2019), EfficientNet-Lite or EfficientNetV2 (Tan & Le 2021) as a Keras 3 model.

    Which network:
      * `phi` an integer 0..8 (family "efficientnet", default alpha/beta/gamma):
        the official B0..B8 preset, identical to keras.applications.EfficientNetB0..B7
        (same layer names, weights and parameter count; B8 has no keras.applications twin).
      * `family="v2"`, phi 0..3: EfficientNetV2-B0..B3, identical to
        keras.applications.EfficientNetV2B0..B3. V2-S/M/L: `build_variant`.
      * any other real phi >= 0 (2.5, 9, ...) or custom alpha/beta/gamma: the
        compound-scaling formula depth=alpha**phi, width=beta**phi,
        resolution=round(224*gamma**phi), on B0's table (V2: on V2-B0's).
        `scaling="formula"` forces it at integer phi.
      * `family="lite"`, phi 0..4: EfficientNet-Lite0..4 (no SE, ReLU6, fixed stem/head).

    The model takes raw RGB pixels in [0, 255]; rescaling and normalisation are
    inside it (float32 under mixed precision), holding the family's statistics
    (ImageNet mean/stddev; Lite (x - 127) / 128; V2-S/M/L x / 128 - 1) even with
    `weights=None`.

    Args follow keras.applications: `include_top`, `weights` (None, "imagenet"
    for B0..B7 and the seven V2 members, a weights file path, or for Lite the
    official tensorflow/tpu checkpoint: its .tar.gz, folder or prefix), `input_tensor`,
    `input_shape` (default: the variant's native resolution, any spatial size >= 32),
    `pooling`, `classes`, `classifier_activation`; plus `dropout_rate` (head
    dropout, default the variant's), `drop_connect_rate` (stochastic depth),
    `alpha`/`beta`/`gamma`, `name`, `scaling` ("auto", "preset", "formula"),
    `bn_momentum` (None: the family's, 0.99 for V1 and Lite, 0.9 for V2; kept
    in every BatchNormalization layer's config, so it is saved with the model)
    and `fused_stages` (None: the member's own block types; k: the first k
    stages Fused-MBConv, the rest MBConv, k = 0 meaning MBConv everywhere).
    """
    coeffs = coefficients(phi, family=family, alpha=alpha, beta=beta, gamma=gamma, scaling=scaling)
    return _build(
        coeffs,
        include_top=include_top,
        weights=weights,
        input_tensor=input_tensor,
        input_shape=input_shape,
        pooling=pooling,
        classes=classes,
        classifier_activation=classifier_activation,
        dropout_rate=dropout_rate,
        drop_connect_rate=drop_connect_rate,
        name=name,
        bn_momentum=bn_momentum,
        fused_stages=fused_stages,
    )


FIXED_BY_NAME = ("phi", "family", "alpha", "beta", "gamma", "scaling")


def build_variant(name: str, **kwargs):
    """Build an official member by its keras.applications model name, e.g. "efficientnetb3",
    "efficientnetv2-s", "efficientnetv2-b1", "efficientnetlite2" (all of them: `variants()`).

    Takes the keyword arguments of `build`, except those the name fixes
    (phi, family, alpha, beta, gamma, scaling).
    """
    coeffs = architecture.variant_coefficients(name)
    fixed = [k for k in FIXED_BY_NAME if k in kwargs]
    if fixed:
        raise TypeError(
            f"build_variant: {fixed[0]}={kwargs[fixed[0]]!r} is fixed by the variant name {name!r}; "
            f"allowed keyword arguments are those of build() except {', '.join(FIXED_BY_NAME)}."
        )
    allowed = set(inspect.signature(_build).parameters) - {"coeffs"}
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise TypeError(
            f"build_variant: unexpected keyword argument {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}."
        )
    return _build(coeffs, **kwargs)


def variants() -> tuple[str, ...]:
    """Every name `build_variant` accepts: B0..B8, Lite0..4, V2-B0..B3, V2-S/M/L."""
    return architecture.variants()


def _build(
    coeffs,
    *,
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    dropout_rate=None,
    drop_connect_rate=families.DEFAULT_DROP_CONNECT_RATE,
    name=None,
    bn_momentum=None,
    fused_stages=None,
):
    drop_connect_rate = architecture.check_rate("drop_connect_rate", drop_connect_rate)
    if dropout_rate is not None:
        dropout_rate = architecture.check_rate("dropout_rate", dropout_rate)
    bn_momentum = architecture.check_bn_momentum(bn_momentum)
    fused_stages = architecture.check_fused_stages(
        fused_stages, len(families.STAGE_TABLES[coeffs.stages]), coeffs.family
    )
    include_top = _check_bool("include_top", include_top)
    classes = _check_classes(classes)
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}.")
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a string or None, got {name!r}.")
    spec = architecture.model_spec(coeffs, drop_connect_rate, fused_stages=fused_stages, bn_momentum=bn_momentum)
    kind = _check_weights(weights, spec, include_top, classes)
    shape = _check_input_shape(input_shape, input_tensor, coeffs, has_weights=kind is not None)
    # fetched before building: a download or hash failure should not cost a model build
    path = weights_lib.fetch_imagenet(coeffs.name, include_top) if kind == "imagenet" else weights

    keras = keras_versions.keras3()
    policy = keras.config.dtype_policy()
    mixed = policy.compute_dtype != policy.variable_dtype
    model = graph.build_graph(
        keras,
        spec,
        input_shape=shape,
        input_tensor=input_tensor,
        include_top=include_top,
        pooling=pooling,
        classes=classes,
        classifier_activation=classifier_activation,
        dropout_rate=dropout_rate,
        name=name,
        float32_output=mixed,
    )
    if kind == "lite_checkpoint":
        lite_checkpoint.load(model, path)
    elif kind is not None:
        what = f"{spec.coefficients.name} (include_top={include_top}, classes={classes})"
        weights_lib.load(model, path, what)
    return model


def _check_bool(argname, value):
    if not isinstance(value, bool):
        raise TypeError(f"{argname} must be True or False, got {value!r}.")
    return value


def _check_classes(classes):
    if isinstance(classes, bool) or not isinstance(classes, numbers.Integral):
        raise TypeError(f"classes must be an integer >= 1, got {classes!r} of type {type(classes).__name__}.")
    if classes < 1:
        raise ValueError(f"classes must be an integer >= 1, got {classes!r}.")
    return int(classes)


def _check_weights(weights, spec, include_top, classes):
    """Return None, "imagenet", "file" or "lite_checkpoint" (an official Lite checkpoint); raise for anything else."""
    if weights is None:
        return None
    coeffs = spec.coefficients
    if weights == "imagenet":
        if coeffs.source != "preset" or not weights_lib.has_imagenet(coeffs.name):
            phi = "" if coeffs.phi is None else f", phi={coeffs.phi:g} ({coeffs.source})"
            hint = "Pass weights=None or a file path."
            if coeffs.family == "lite":  # no pinned hash of the official tarballs: the user downloads them
                hint = lite_checkpoint.download_hint(coeffs.phi)
            raise ValueError(
                f"weights='imagenet' exists for {weights_lib.IMAGENET_MEMBERS} only; "
                f"got family={coeffs.family!r}{phi}, {coeffs.name}. {hint}"
            )
        if include_top and classes != 1000:
            raise ValueError(
                f"weights='imagenet' with include_top=True needs classes=1000, got classes={classes}. "
                "Use include_top=False and add your own head."
            )
        return "imagenet"
    if isinstance(weights, (str, os.PathLike)):
        if lite_checkpoint.is_checkpoint(weights):
            if coeffs.family != "lite":
                raise ValueError(
                    f"weights: {os.fspath(weights)!r} is a TensorFlow checkpoint, which loads into "
                    f"family='lite' only (the official EfficientNet-Lite0..4); got family={coeffs.family!r}. "
                    "Pass a Keras weights file (.h5 or .weights.h5)."
                )
            if include_top and classes != lite_checkpoint.CLASSES:
                raise ValueError(
                    f"weights: the official EfficientNet-Lite checkpoints have a {lite_checkpoint.CLASSES}-class "
                    f"head; include_top=True needs classes={lite_checkpoint.CLASSES}, got classes={classes}. "
                    "Use include_top=False and add your own head."
                )
            return "lite_checkpoint"
        if not os.path.exists(weights):
            raise FileNotFoundError(
                f"weights: file {os.fspath(weights)!r} does not exist (allowed: None, 'imagenet' or a weights file path)."
            )
        return "file"
    raise TypeError(
        f"weights must be None, 'imagenet' or a file path, got {weights!r} of type {type(weights).__name__}."
    )


def _check_input_shape(input_shape, input_tensor, coeffs, *, has_weights):
    if input_shape is None and input_tensor is not None and getattr(input_tensor, "shape", None) is not None:
        input_shape = tuple(input_tensor.shape[1:])
    if input_shape is None:
        return (coeffs.resolution, coeffs.resolution, 3)
    if not isinstance(input_shape, (tuple, list)) or len(input_shape) != 3:
        raise ValueError(f"input_shape must be a tuple (height, width, channels), got {input_shape!r}.")
    height, width, channels = input_shape
    for argname, dim in (("height", height), ("width", width)):
        if dim is None:
            continue
        if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):
            raise TypeError(f"input_shape {argname} must be an integer or None, got {dim!r} in {input_shape!r}.")
        if dim < MIN_INPUT_SIZE:
            raise ValueError(
                f"input_shape {argname} must be >= {MIN_INPUT_SIZE} (five stride-2 stages), got {dim} in {input_shape!r}."
            )
    if isinstance(channels, bool) or not isinstance(channels, numbers.Integral) or channels < 1:
        raise ValueError(f"input_shape channels must be an integer >= 1, got {channels!r} in {input_shape!r}.")
    if has_weights and channels != 3:
        raise ValueError(
            f"input_shape must have 3 channels (RGB) when weights are loaded, got {channels} in {input_shape!r}."
        )
    return (height, width, int(channels))
