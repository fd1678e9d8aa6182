"""Turn a `ModelSpec` into a functional Keras model, for either Keras flavour.

The one parameter `K` is the Keras module (Keras 3 for the public API,
`tf_keras` for the quantization-aware-training twin, since
tensorflow-model-optimization only accepts Keras 2). Both get the same graph,
the same layer names and the same weight order, so weights copy by name.

Layer names are keras.applications' (keras/src/applications/efficientnet.py):
`stem_conv`, `block{stage}{letter}_{op}`, `top_conv`, `predictions`, ... The
graph is built from stock layers only (no Lambda, no nested models), so it
saves and loads with `safe_mode=True` and every layer can be annotated for QAT.
"""

from __future__ import annotations

import numpy as np

from keras_effnet.architecture import BN_EPSILON, BN_MOMENTUM, BlockSpec, ModelSpec

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


def _batch_norm(K, name):
    return K.layers.BatchNormalization(axis=BN_AXIS, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)


def mbconv_block(K, x, spec: BlockSpec, activation: str):
    """Mobile inverted bottleneck (MobileNetV2) with optional squeeze-excitation.

    Reads like the paper's Figure 2(b) / keras.applications `block()`.
    """
    inputs = x
    filters = spec.filters_in * spec.expand_ratio
    # Expansion phase
    if spec.expand_ratio != 1:
        x = K.layers.Conv2D(
            filters, 1, padding="same", use_bias=False,
            kernel_initializer=conv_initializer(K), name=spec.name + "expand_conv",
        )(x)
        x = _batch_norm(K, spec.name + "expand_bn")(x)
        x = K.layers.Activation(activation, name=spec.name + "expand_activation")(x)
    # Depthwise convolution
    if spec.strides == 2:
        x = K.layers.ZeroPadding2D(
            padding=correct_pad(x.shape[1:3], spec.kernel_size), name=spec.name + "dwconv_pad"
        )(x)
        padding = "valid"
    else:
        padding = "same"
    x = K.layers.DepthwiseConv2D(
        spec.kernel_size, strides=spec.strides, padding=padding, use_bias=False,
        depthwise_initializer=conv_initializer(K), name=spec.name + "dwconv",
    )(x)
    x = _batch_norm(K, spec.name + "bn")(x)
    x = K.layers.Activation(activation, name=spec.name + "activation")(x)
    # Squeeze and excitation phase: the bottleneck is a fraction of the block *input* channels.
    if spec.se_filters:
        se = K.layers.GlobalAveragePooling2D(name=spec.name + "se_squeeze")(x)
        se = K.layers.Reshape((1, 1, filters), name=spec.name + "se_reshape")(se)
        se = K.layers.Conv2D(
            spec.se_filters, 1, padding="same", activation=activation,
            kernel_initializer=conv_initializer(K), name=spec.name + "se_reduce",
        )(se)
        se = K.layers.Conv2D(
            filters, 1, padding="same", activation="sigmoid",
            kernel_initializer=conv_initializer(K), name=spec.name + "se_expand",
        )(se)
        x = K.layers.Multiply(name=spec.name + "se_excite")([x, se])
    # Output phase
    x = K.layers.Conv2D(
        spec.filters_out, 1, padding="same", use_bias=False,
        kernel_initializer=conv_initializer(K), name=spec.name + "project_conv",
    )(x)
    x = _batch_norm(K, spec.name + "project_bn")(x)
    if spec.strides == 1 and spec.filters_in == spec.filters_out:
        if spec.drop_rate > 0:
            # Stochastic depth, as keras.applications: drop the whole residual branch per sample.
            x = K.layers.Dropout(spec.drop_rate, noise_shape=(None, 1, 1, 1), name=spec.name + "drop")(x)
        x = K.layers.Add(name=spec.name + "add")([x, inputs])
    return x


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
    if input_tensor is None:
        img_input = K.layers.Input(shape=input_shape, name="input_layer")
    elif _is_keras_tensor(K, input_tensor):
        img_input = input_tensor
    else:
        img_input = K.layers.Input(tensor=input_tensor, shape=input_shape, name="input_layer")

    x = K.layers.Rescaling(1.0 / 255.0, dtype="float32", name="rescaling")(img_input)
    x = K.layers.Normalization(axis=BN_AXIS, dtype="float32", name="normalization")(x)

    x = K.layers.ZeroPadding2D(padding=correct_pad(x.shape[1:3], 3), name="stem_conv_pad")(x)
    x = K.layers.Conv2D(
        spec.stem_filters, 3, strides=2, padding="valid", use_bias=False,
        kernel_initializer=conv_initializer(K), name="stem_conv",
    )(x)
    x = _batch_norm(K, "stem_bn")(x)
    x = K.layers.Activation(spec.activation, name="stem_activation")(x)

    for block in spec.blocks:
        x = mbconv_block(K, x, block, spec.activation)

    x = K.layers.Conv2D(
        spec.head_filters, 1, padding="same", use_bias=False,
        kernel_initializer=conv_initializer(K), name="top_conv",
    )(x)
    x = _batch_norm(K, "top_bn")(x)
    last = {"dtype": "float32"} if float32_output and not include_top and pooling is None else {}
    x = K.layers.Activation(spec.activation, name="top_activation", **last)(x)

    out32 = {"dtype": "float32"} if float32_output else {}
    if include_top:
        x = K.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        rate = spec.coefficients.dropout if dropout_rate is None else dropout_rate
        if rate > 0:
            x = K.layers.Dropout(rate, name="top_dropout")(x)
        x = K.layers.Dense(
            classes, activation=classifier_activation,
            kernel_initializer=dense_initializer(K), name="predictions", **out32,
        )(x)
    elif pooling == "avg":
        x = K.layers.GlobalAveragePooling2D(name="avg_pool", **out32)(x)
    elif pooling == "max":
        x = K.layers.GlobalMaxPooling2D(name="max_pool", **out32)(x)

    inputs = _source_inputs(K, input_tensor, img_input)
    model = K.Model(inputs, x, name=name or spec.coefficients.name)
    set_normalization(model, spec.mean_rgb, spec.stddev_rgb)
    return model


def set_normalization(model, mean_rgb, stddev_rgb):
    """Give the in-model Normalization layer its statistics as weights.

    The layer is built un-adapted so that it owns the 3 + 3 + 1 weights
    keras.applications has (its parameter count and weight order depend on
    them), then set to mean and stddev**2: *variance*, not stddev, the trap of
    tensorflow/tensorflow#49930. Keras 3 caches the statistics when the layer
    is finalized, so `finalize_state` must follow `set_weights`.
    """
    layer = model.get_layer("normalization")
    channels = int(layer.weights[0].shape[-1])
    mean = np.asarray(mean_rgb, dtype="float32")
    var = np.asarray(stddev_rgb, dtype="float32") ** 2
    if channels != 3:  # non-RGB input without weights: one average statistic per channel
        mean = np.full((channels,), mean.mean(), dtype="float32")
        var = np.full((channels,), var.mean(), dtype="float32")
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
