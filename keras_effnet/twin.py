"""The same network in the other Keras flavour, with the same weights.

tensorflow-model-optimization accepts only Keras 2 (`tf_keras`) models
(tensorflow/model-optimization#1119), so quantization-aware training needs a
Keras 2 twin of a Keras 3 model. `spec_from_model` reads the architecture back
from the layer names, shapes and configs that `keras_effnet.graph` writes (so
it also works on a model loaded from a .keras file, for any family, phi, block
types and BN momentum), `graph.build_graph`
rebuilds it with the other flavour, and weights are copied layer by layer, by name.
"""

from __future__ import annotations

import re

import numpy as np

from keras_effnet import architecture, families, graph, keras_versions

_BLOCK = re.compile(r"^(block\d+[a-z]+_)project_conv$")
DEPTHWISE_NAMES = ("dwconv", "dwconv2")


def spec_from_model(model) -> tuple[architecture.ModelSpec, dict]:
    """Recover (ModelSpec, build keyword arguments) from a keras_effnet model, any family and block types.

    BN momentum, padding style, block types and preprocessing are read from the
    layers, so a model built (or re-trained) with another `bn_momentum` keeps it.
    Raises ValueError naming what is missing when the model was not built by keras_effnet.
    """
    names = {layer.name for layer in model.layers}
    missing = [n for n in ("rescaling", "stem_conv", "stem_bn", "top_conv") if n not in names]
    if missing:
        raise ValueError(f"model {model.name!r} was not built by keras_effnet: it has no layer named {missing}.")
    get = model.get_layer
    activation = _activation_name(get("stem_activation"))
    padding = "explicit" if "stem_conv_pad" in names else "same"
    bn_momentum = float(get("stem_bn").momentum)
    read = [_block_spec(model, m.group(1), names) for m in map(_BLOCK.match, (x.name for x in model.layers)) if m]
    blocks = tuple(spec for spec, _ in read)
    depthwise_name = next((suffix for _, suffix in reversed(read) if suffix), "dwconv")
    include_top = "predictions" in names
    dropout = float(get("top_dropout").rate) if "top_dropout" in names else 0.0
    family = "lite" if activation == "relu6" else "v2" if padding == "same" else "efficientnet"
    coeffs = families.Coefficients(
        name=model.name,
        family=family,
        phi=float("nan"),
        width=float("nan"),
        depth=float("nan"),
        resolution=int(model.input_shape[1] or 0),
        dropout=dropout,
        source="model",
        train_resolution=int(model.input_shape[1] or 0),
    )
    spec = architecture.ModelSpec(
        coefficients=coeffs,
        activation=activation,
        stem_filters=int(get("stem_conv").filters),
        head_filters=int(get("top_conv").filters),
        blocks=blocks,
        preprocessing=_preprocessing(model, names),
        bn_momentum=bn_momentum,
        padding=padding,
        depthwise_name=depthwise_name,
    )
    kwargs = {
        "input_shape": tuple(model.input_shape[1:]),
        "include_top": include_top,
        "pooling": "avg" if "avg_pool" in names and not include_top else "max" if "max_pool" in names else None,
        "classes": int(get("predictions").units) if include_top else 1000,
        "classifier_activation": _activation_name(get("predictions")) if include_top else None,
        "dropout_rate": dropout,
        "name": model.name,
    }
    return spec, kwargs


def _block_spec(model, prefix: str, names) -> tuple[architecture.BlockSpec, str | None]:
    """One block read back from its layers (`prefix` + "project_conv" ...), and its depthwise layer's suffix.

    The block type follows from the layers: a depthwise layer makes it MBConv, none Fused-MBConv (whose spatial
    convolution is the expand conv, or the project conv when it has no expansion).
    """
    get = model.get_layer
    project = get(prefix + "project_conv")
    expand = get(prefix + "expand_conv") if prefix + "expand_conv" in names else None
    dw_names = [prefix + d for d in DEPTHWISE_NAMES if prefix + d in names]
    suffix = None
    if dw_names:
        block, spatial = "mbconv", get(dw_names[0])
        suffix = dw_names[0][len(prefix) :]
    else:
        block, spatial = "fused", expand if expand is not None else project
    first = expand if expand is not None else spatial
    filters_in = int(first.input.shape[-1])
    spec = architecture.BlockSpec(
        name=prefix,
        kernel_size=int(spatial.kernel_size[0]),
        strides=int(spatial.strides[0]),
        filters_in=filters_in,
        filters_out=int(project.filters),
        expand_ratio=int(expand.filters) // filters_in if expand is not None else 1,
        se_filters=int(get(prefix + "se_reduce").filters) if prefix + "se_reduce" in names else 0,
        drop_rate=float(get(prefix + "drop").rate) if prefix + "drop" in names else 0.0,
        block=block,
    )
    return spec, suffix


def _preprocessing(model, names) -> families.Preprocessing:
    rescaling = model.get_layer("rescaling").get_config()
    scale, offset = float(rescaling["scale"]), float(rescaling.get("offset", 0.0))
    if "normalization" not in names:
        return families.Preprocessing(scale, offset)
    norm = model.get_layer("normalization")
    if norm.weights:
        mean, var = (np.asarray(w, dtype="float64").reshape(-1) for w in norm.get_weights()[:2])
        held = True
    else:
        config = norm.get_config()
        mean, var = (np.asarray(config[k], dtype="float64").reshape(-1) for k in ("mean", "variance"))
        held = False
    return families.Preprocessing(scale, offset, tuple(mean), tuple(np.sqrt(var)), held)


def twin(model, flavour: str = "tf_keras"):
    """Rebuild `model` with the other Keras flavour and copy its weights by layer name."""
    spec, kwargs = spec_from_model(model)
    K = keras_versions.get(flavour)
    other = graph.build_graph(K, spec, **kwargs)
    copy_weights(model, other)
    return other


def copy_weights(source, target) -> None:
    """Copy weights layer by layer, matched by name; every weighted layer must match."""
    for layer in target.layers:
        if not layer.weights:
            continue
        try:
            src = source.get_layer(layer.name)
        except ValueError:
            raise ValueError(
                f"copy_weights: layer {layer.name!r} of {target.name!r} is missing in {source.name!r}."
            ) from None
        layer.set_weights([np.asarray(w) for w in src.get_weights()])
        if hasattr(layer, "finalize_state"):
            layer.finalize_state()


def _activation_name(layer) -> str:
    act = layer.get_config().get("activation")
    if isinstance(act, dict):
        act = act.get("config", {}).get("name") or act.get("class_name")
    if callable(act):
        act = act.__name__
    return str(act)
