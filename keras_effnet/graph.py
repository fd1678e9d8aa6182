"""Turn a `ModelSpec` into a functional Keras model, for either Keras flavour.

The one parameter `K` is the Keras module (Keras 3 for the public API,
`tf_keras` for the quantization-aware-training twin, since
tensorflow-model-optimization only accepts Keras 2). Both get the same graph,
the same layer names and the same weight order, so weights copy by name.

Layer names are keras.applications' (keras/src/applications/efficientnet.py
and efficientnet_v2.py): `stem_conv`, `block{stage}{letter}_{op}`, `top_conv`,
`predictions`, ... One block function per block type (`BLOCK_BUILDERS`). The
graph is built from stock layers only (no Lambda, no nested models), so it
saves and loads with `safe_mode=True` and every layer can be annotated for QAT.
"""

from __future__ import annotations

import numpy as np

from keras_effnet import keras_versions
from keras_effnet.architecture import BlockSpec, ModelSpec
from keras_effnet.families import BN_EPSILON

BN_AXIS = -1  # channels_last only: what every TFLite and TPU path expects.


def conv_initializer(K):
    """VarianceScaling(2.0, fan_out, truncated normal), as in the paper's code."""
    return K.initializers.VarianceScaling(scale=2.0, mode="fan_out", distribution="truncated_normal")


def dense_initializer(K):
    """VarianceScaling(1/3, fan_out, uniform), as in the paper's code."""
    return K.initializers.VarianceScaling(scale=1.0 / 3.0, mode="fan_out", distribution="uniform")


def correct_pad(size, kernel_size: int):
    """Padding that reproduces TensorFlow's 'SAME' for a stride-2 conv.

    keras.applications pads explicitly with ZeroPadding2D + 'valid', because
    'same' with stride 2 is asymmetric in TF and symmetric elsewhere; with an
    unknown spatial size it assumes an even one.
    """
    pads = []
    for dim in size:
        adjust = 1 if dim is None else 1 - dim % 2
        correct = kernel_size // 2
        pads.append((correct - adjust, correct))
    return tuple(pads)


def _batch_norm(K, name, momentum):
    return K.layers.BatchNormalization(axis=BN_AXIS, momentum=momentum, epsilon=BN_EPSILON, name=name)


def _conv(K, x, filters, kernel_size, strides, name, padding, **kwargs):
    """Conv2D (or DepthwiseConv2D when `filters` is None) with the family's padding style.

    "explicit": a stride-2 conv gets ZeroPadding2D named `<name>_pad` and "valid"
    (V1 keras.applications, TF's 'SAME' on every backend); "same": plain 'same' (V2).
    """
    pad = "same"
    if strides == 2 and padding == "explicit":
        x = K.layers.ZeroPadding2D(padding=correct_pad(x.shape[1:3], kernel_size), name=name + "_pad")(x)
        pad = "valid"
    if filters is None:
        return K.layers.DepthwiseConv2D(
            kernel_size,
            strides=strides,
            padding=pad,
            use_bias=False,
            depthwise_initializer=conv_initializer(K),
            name=name,
            **kwargs,
        )(x)
    return K.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=pad,
        use_bias=False,
        kernel_initializer=conv_initializer(K),
        name=name,
        **kwargs,
    )(x)


def _squeeze_excite(K, x, spec: BlockSpec, filters: int, activation: str):
    """Squeeze and excitation: the bottleneck is a fraction of the block *input* channels."""
    se = K.layers.GlobalAveragePooling2D(name=spec.name + "se_squeeze")(x)
    se = K.layers.Reshape((1, 1, filters), name=spec.name + "se_reshape")(se)
    se = K.layers.Conv2D(
        spec.se_filters,
        1,
        padding="same",
        activation=activation,
        kernel_initializer=conv_initializer(K),
        name=spec.name + "se_reduce",
    )(se)
    se = K.layers.Conv2D(
        filters,
        1,
        padding="same",
        activation="sigmoid",
        kernel_initializer=conv_initializer(K),
        name=spec.name + "se_expand",
    )(se)
    return K.layers.Multiply(name=spec.name + "se_excite")([x, se])


def _residual(K, x, inputs, spec: BlockSpec):
    if spec.strides == 1 and spec.filters_in == spec.filters_out:
        if spec.drop_rate > 0:
            # Stochastic depth, as keras.applications: drop the whole residual branch per sample.
            x = K.layers.Dropout(spec.drop_rate, noise_shape=(None, 1, 1, 1), name=spec.name + "drop")(x)
        x = K.layers.Add(name=spec.name + "add")([x, inputs])
    return x


def mbconv_block(K, x, spec: BlockSpec, model: ModelSpec):
    """Mobile inverted bottleneck (MobileNetV2) with optional squeeze-excitation.

    Reads like the paper's Figure 2(b) / keras.applications `block()`.
    """
    inputs = x
    act = model.activation
    filters = spec.filters_in * spec.expand_ratio
    # Expansion phase
    if spec.expand_ratio != 1:
        x = _conv(K, x, filters, 1, 1, spec.name + "expand_conv", model.padding)
        x = _batch_norm(K, spec.name + "expand_bn", model.bn_momentum)(x)
        x = K.layers.Activation(act, name=spec.name + "expand_activation")(x)
    # Depthwise convolution
    x = _conv(K, x, None, spec.kernel_size, spec.strides, spec.name + model.depthwise_name, model.padding)
    x = _batch_norm(K, spec.name + "bn", model.bn_momentum)(x)
    x = K.layers.Activation(act, name=spec.name + "activation")(x)
    # Squeeze and excitation phase
    if spec.se_filters:
        x = _squeeze_excite(K, x, spec, filters, act)
    # Output phase
    x = _conv(K, x, spec.filters_out, 1, 1, spec.name + "project_conv", model.padding)
    x = _batch_norm(K, spec.name + "project_bn", model.bn_momentum)(x)
    return _residual(K, x, inputs, spec)


def fused_mbconv_block(K, x, spec: BlockSpec, model: ModelSpec):
    """Fused-MBConv (Tan & Le 2021, Figure 2): one regular kxk conv replaces the 1x1 expansion + depthwise kxk.

    With expand_ratio 1 the block is that single conv (as `project_conv`, with
    its own activation); otherwise a kxk expansion conv then a 1x1 projection.
    Layer names are keras.applications' `FusedMBConvBlock`.
    """
    inputs = x
    act = model.activation
    filters = spec.filters_in * spec.expand_ratio
    # Fused expansion phase: kxk conv, carries the stride
    if spec.expand_ratio != 1:
        x = _conv(K, x, filters, spec.kernel_size, spec.strides, spec.name + "expand_conv", model.padding)
        x = _batch_norm(K, spec.name + "expand_bn", model.bn_momentum)(x)
        x = K.layers.Activation(act, name=spec.name + "expand_activation")(x)
    # Squeeze and excitation phase
    if spec.se_filters:
        x = _squeeze_excite(K, x, spec, filters, act)
    # Output phase: 1x1 projection, or the block's only (kxk, strided) conv when there is no expansion
    alone = spec.expand_ratio == 1
    x = _conv(
        K,
        x,
        spec.filters_out,
        spec.kernel_size if alone else 1,
        spec.strides if alone else 1,
        spec.name + "project_conv",
        model.padding,
    )
    x = _batch_norm(K, spec.name + "project_bn", model.bn_momentum)(x)
    if alone:
        x = K.layers.Activation(act, name=spec.name + "project_activation")(x)
    return _residual(K, x, inputs, spec)


BLOCK_BUILDERS = {"mbconv": mbconv_block, "fused": fused_mbconv_block}


def block_builder(block: str):
    """The builder of one block type; raises ValueError listing the known types."""
    try:
        return BLOCK_BUILDERS[block]
    except KeyError:
        raise ValueError(f"block type must be one of {tuple(BLOCK_BUILDERS)}, got {block!r}.") from None


def build_graph(
    K,
    spec: ModelSpec,
    *,
    input_shape,
    input_tensor=None,
    include_top: bool = True,
    pooling=None,
    classes: int = 1000,
    classifier_activation="softmax",
    dropout_rate: float | None = None,
    name: str | None = None,
    float32_output: bool = False,
):
    """Build the functional model. Inputs are raw RGB pixels in [0, 255].

    The preprocessing (Rescaling 1/255, then a Normalization holding the
    family's statistics) is inside the model, as in keras.applications, and runs
    in float32 whatever the mixed-precision policy. `float32_output` makes the
    last layer compute in float32, so mixed-precision logits and softmax are
    float32 (the usual practice).
    """
    with keras_versions.deferred_variables(K):
        if input_tensor is None:
            img_input = K.layers.Input(shape=input_shape, name="input_layer")
        elif _is_keras_tensor(K, input_tensor):
            img_input = input_tensor
        else:
            img_input = K.layers.Input(tensor=input_tensor, shape=input_shape, name="input_layer")

        x = _preprocessing(K, img_input, spec.preprocessing)

        x = _conv(K, x, spec.stem_filters, 3, 2, "stem_conv", spec.padding)
        x = _batch_norm(K, "stem_bn", spec.bn_momentum)(x)
        x = K.layers.Activation(spec.activation, name="stem_activation")(x)

        for block in spec.blocks:
            x = block_builder(block.block)(K, x, block, spec)

        x = _conv(K, x, spec.head_filters, 1, 1, "top_conv", spec.padding)
        x = _batch_norm(K, "top_bn", spec.bn_momentum)(x)
        last = {"dtype": "float32"} if float32_output and not include_top and pooling is None else {}
        x = K.layers.Activation(spec.activation, name="top_activation", **last)(x)

        out32 = {"dtype": "float32"} if float32_output else {}
        if include_top:
            x = K.layers.GlobalAveragePooling2D(name="avg_pool")(x)
            rate = spec.coefficients.dropout if dropout_rate is None else dropout_rate
            if rate > 0:
                x = K.layers.Dropout(rate, name="top_dropout")(x)
            x = K.layers.Dense(
                classes,
                activation=classifier_activation,
                kernel_initializer=dense_initializer(K),
                name="predictions",
                **out32,
            )(x)
        elif pooling == "avg":
            x = K.layers.GlobalAveragePooling2D(name="avg_pool", **out32)(x)
        elif pooling == "max":
            x = K.layers.GlobalMaxPooling2D(name="max_pool", **out32)(x)

        inputs = _source_inputs(K, input_tensor, img_input)
        model = K.Model(inputs, x, name=name or spec.coefficients.name)
    if spec.preprocessing.mean_rgb is not None and spec.preprocessing.stats_as_weights:
        set_normalization(model, spec.preprocessing.mean_rgb, spec.preprocessing.stddev_rgb)
    return model


def _preprocessing(K, x, pre):
    """Rescaling, then Normalization when the family has statistics; float32 under any dtype policy."""
    x = K.layers.Rescaling(pre.scale, offset=pre.offset, dtype="float32", name="rescaling")(x)
    if pre.mean_rgb is None:
        return x
    if pre.stats_as_weights:
        return K.layers.Normalization(axis=BN_AXIS, dtype="float32", name="normalization")(x)
    mean, var = _statistics(pre.mean_rgb, pre.stddev_rgb, int(x.shape[-1]))
    return K.layers.Normalization(
        axis=BN_AXIS, mean=mean.tolist(), variance=var.tolist(), dtype="float32", name="normalization"
    )(x)


def _statistics(mean_rgb, stddev_rgb, channels):
    """(mean, variance) per channel; non-RGB input gets one average statistic per channel."""
    mean = np.asarray(mean_rgb, dtype="float32")
    var = np.asarray(stddev_rgb, dtype="float32") ** 2
    if channels != 3:
        mean = np.full((channels,), mean.mean(), dtype="float32")
        var = np.full((channels,), var.mean(), dtype="float32")
    return mean, var


def set_normalization(model, mean_rgb, stddev_rgb):
    """Give the in-model Normalization layer its statistics as weights.

    The layer is built un-adapted so that it owns the 3 + 3 + 1 weights
    keras.applications has (its parameter count and weight order depend on
    them), then set to mean and stddev**2: *variance*, not stddev, the trap of
    tensorflow/tensorflow#49930. Keras 3 caches the statistics when the layer
    is finalized, so `finalize_state` must follow `set_weights`.
    """
    layer = model.get_layer("normalization")
    mean, var = _statistics(mean_rgb, stddev_rgb, int(layer.weights[0].shape[-1]))
    count = np.zeros(tuple(layer.weights[2].shape), dtype="int64")
    layer.set_weights([mean, var, count])
    if hasattr(layer, "finalize_state"):
        layer.finalize_state()


def _is_keras_tensor(K, tensor) -> bool:
    if hasattr(K, "backend") and hasattr(K.backend, "is_keras_tensor"):
        try:
            return bool(K.backend.is_keras_tensor(tensor))
        except ValueError:
            return False
    return False


def _source_inputs(K, input_tensor, img_input):
    if input_tensor is None:
        return img_input
    if hasattr(K, "utils") and hasattr(K.utils, "get_source_inputs"):
        return K.utils.get_source_inputs(input_tensor)
    return img_input
