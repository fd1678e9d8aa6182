"""Every QuantizeConfig that edge/ adds to tensorflow-model-optimization's default 8-bit scheme.

tfmot's default registry has no entry for the SE excite `Multiply` (tensorflow/model-optimization#733),
`Rescaling` (#647), `Normalization` or a standalone `BatchNormalization`, and it
quantizes a `Conv2D(activation="swish")` (the SE reduce convolution) only *after* the swish, which leaves the
convolution's own output without a range: the TFLite converter then keeps that convolution in float between a
DEQUANTIZE and a QUANTIZE, and a full-integer conversion fails. Each config here closes one of those gaps;
`config_for(layer)` is the one lookup that decides, `replacement_for(layer)` the one lookup for a layer
re-expressed as an equivalent quantizable layer (Normalization, see there), and `custom_objects()` is what
`quantize_scope` needs.

The six QuantizeConfig methods return weights and activations in matching order (tfmot pairs them by position).
"""

from __future__ import annotations

import tensorflow_model_optimization as tfmot
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import default_8bit_quantizers

from keras_effnet import keras_versions

_QuantizeConfig = tfmot.quantization.keras.QuantizeConfig
_MovingAverageQuantizer = tfmot.quantization.keras.quantizers.MovingAverageQuantizer

SWISH_NAMES = ("swish", "silu")
FUSABLE_INTO = ("Conv2D", "DepthwiseConv2D", "Dense")  # tfmot folds a BatchNormalization that follows these


def _activation_quantizer():
    """8-bit, per-tensor, asymmetric: the default scheme's activation quantizer."""
    return _MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False, narrow_range=False)


class OutputQuantizeConfig(_QuantizeConfig):
    """Quantize a weightless (or fixed-weight) layer's output only.

    Used for the SE `Multiply` (like tfmot's own `Add`), the input `Rescaling` (one MUL: its output needs a range
    so that the next op gets an int8 input) and a
    `BatchNormalization` that no convolution precedes (tfmot folds only conv+BN). The layer's weights, if any,
    stay float in the Keras graph; the converter folds them into constants.

    Limit: a standalone BatchNormalization becomes MUL + ADD in TFLite and the tensor between them has no range,
    so those two ops stay float (DEQUANTIZE/QUANTIZE around them); the config only makes tfmot accept the layer.
    keras_effnet graphs have no standalone BatchNormalization (every one follows a convolution).
    """

    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        if quantize_weights:
            raise ValueError(
                f"OutputQuantizeConfig quantizes no weights, got {len(quantize_weights)} for {layer.name!r}."
            )

    def set_quantize_activations(self, layer, quantize_activations):
        if quantize_activations:
            raise ValueError(
                f"OutputQuantizeConfig quantizes no activations, got {len(quantize_activations)} for {layer.name!r}."
            )

    def get_output_quantizers(self, layer):
        return [_activation_quantizer()]

    def get_config(self):
        return {}


class _QuantizedInputActivation:
    """`activation(quantize(x))`: the fake-quant of the pre-activation tensor, then the original activation.

    Serialises as the original activation (as tfmot's QuantizeAwareActivation does), so a saved layer config
    still reads `swish`.
    """

    def __init__(self, activation, quantize_input):
        self.activation = activation
        self.quantize_input = quantize_input
        self.__name__ = getattr(activation, "__name__", type(activation).__name__)

    def __call__(self, x, *args, **kwargs):
        return self.activation(self.quantize_input(x), *args, **kwargs)

    def get_config(self):
        return {"activation": self.__name__}


class SwishConvQuantizeConfig(_QuantizeConfig):
    """A `Conv2D` with a fused swish (the SE reduce convolution in B-series blocks).

    Quantizes the kernel per output channel (as tfmot's conv config does), the convolution's output *before* the
    swish (a `linear` QuantizeAwareActivation, which tfmot post-quantizes, is slotted in front of the swish) and
    the swish output. With both ranges the converter lowers conv + LOGISTIC + MUL to int8 kernels.
    """

    def __init__(self):
        self.weight_quantizer = default_8bit_quantizers.Default8BitConvWeightsQuantizer()

    def get_weights_and_quantizers(self, layer):
        return [(layer.kernel, self.weight_quantizer)]

    def get_activations_and_quantizers(self, layer):
        return [(keras_versions.tf_keras().activations.linear, _activation_quantizer())]

    def set_quantize_weights(self, layer, quantize_weights):
        if len(quantize_weights) != 1:
            raise ValueError(
                f"SwishConvQuantizeConfig expects 1 kernel for {layer.name!r}, got {len(quantize_weights)}."
            )
        layer.kernel = quantize_weights[0]

    def set_quantize_activations(self, layer, quantize_activations):
        if len(quantize_activations) != 1:
            raise ValueError(
                f"SwishConvQuantizeConfig expects 1 activation for {layer.name!r}, got {len(quantize_activations)}."
            )
        original = layer.activation
        while isinstance(original, _QuantizedInputActivation):  # set again on every call of the wrapper
            original = original.activation
        layer.activation = _QuantizedInputActivation(original, quantize_activations[0])

    def get_output_quantizers(self, layer):
        return [_activation_quantizer()]

    def get_config(self):
        return {}


def activation_name(layer) -> str | None:
    """The name of `layer`'s activation function (through a quantize wrapper's), None for a layer without one."""
    act = getattr(layer, "activation", None)
    if act is None:
        return None
    while isinstance(act, _QuantizedInputActivation):
        act = act.activation
    return getattr(act, "__name__", type(act).__name__)


def inbound_class_names(layer) -> list[str]:
    """The class names of the layers feeding `layer` (whether a BatchNormalization folds into a convolution)."""
    names = []
    for node in getattr(layer, "_inbound_nodes", []):
        inbound = node.inbound_layers
        for src in inbound if isinstance(inbound, (list, tuple)) else [inbound]:
            names.append(type(src).__name__)
    return names


def config_for(layer):
    """The QuantizeConfig edge/ gives `layer` (a tf_keras layer), or None where tfmot's registry decides.

    Dispatch is by class name (Keras layers are matched by type, not by the name a model gave them), so any
    keras_effnet variant, B-series or Lite, any phi, gets the same treatment.
    """
    kind = type(layer).__name__
    if kind in ("Multiply", "Rescaling"):
        return OutputQuantizeConfig()
    if kind == "BatchNormalization":
        sources = inbound_class_names(layer)
        if sources and all(s in FUSABLE_INTO for s in sources):
            return None
        return OutputQuantizeConfig()
    if kind == "Conv2D" and activation_name(layer) in SWISH_NAMES:
        return SwishConvQuantizeConfig()
    return None


CONFIGS = (OutputQuantizeConfig, SwishConvQuantizeConfig)


def custom_objects() -> dict:
    """Everything `quantize_scope` must know to build (and rebuild) a model annotated with these configs."""
    return {cls.__name__: cls for cls in CONFIGS}


def replacement_for(layer):
    """A quantizable layer computing the same function as `layer`, or None.

    `Normalization` ((x - mean) / sqrt(variance), per channel) becomes SUB then MUL in TFLite, and the tensor
    between them has no range in a QAT graph, so an output-only config would leave both ops in float. The same
    per-channel affine map as one op is a 1x1 `DepthwiseConv2D` with bias (kernel 1/sqrt(variance), bias
    -mean/sqrt(variance)), which tfmot's registry quantizes (per-channel weights, quantized output) and TFLite
    runs as one int8 DEPTHWISE_CONV_2D. It keeps the layer's name; `replacement_weights` gives its weights.
    """
    if type(layer).__name__ == "Normalization":
        K = keras_versions.tf_keras()
        return K.layers.DepthwiseConv2D(1, use_bias=True, name=layer.name)
    return None


def replacement_weights(layer) -> list:
    """The weights of `replacement_for(layer)` that reproduce `layer` (a built tf_keras Normalization)."""
    import numpy as np

    held = layer.get_weights()
    if len(held) >= 2:  # statistics as weights (B-series, as keras.applications builds it)
        mean, variance = (np.asarray(w, dtype=np.float64).reshape(-1) for w in held[:2])
    else:  # statistics given as constructor arguments (EfficientNetV2): they live in the config
        config = layer.get_config()
        channels = int(layer.input_shape[-1])
        mean, variance = (
            np.broadcast_to(np.asarray(config[k], dtype=np.float64).reshape(-1), (channels,))
            for k in ("mean", "variance")
        )
    inv_std = 1.0 / np.maximum(np.sqrt(variance), 1e-7)  # tf_keras's Normalization floors sqrt(variance) at epsilon
    kernel = inv_std.reshape(1, 1, -1, 1).astype(np.float32)
    return [kernel, (-mean * inv_std).astype(np.float32)]
