"""Each QuantizeConfig of edge/quantize_configs.py on a tiny tf_keras model: tfmot applies it, the QAT model
trains a step, and the TFLite converter turns it into a full-integer model whose outputs match the QAT model."""

import numpy as np
import pytest

import keras_effnet
from edge import convert, qat, quantize_configs
from keras_effnet import keras_versions
from keras_effnet import twin as twin_lib


def _tfmot():
    import tensorflow_model_optimization as tfmot

    return tfmot


def _apply(model, configs):
    """Annotate `configs` (layer name -> config or None for tfmot's default), apply tfmot, calibrate ranges."""
    tfmot = _tfmot()
    K = keras_versions.tf_keras()

    def annotate(layer):
        clone = layer.__class__.from_config(layer.get_config())
        if configs.get(layer.name) is not None:
            return tfmot.quantization.keras.quantize_annotate_layer(clone, configs[layer.name])
        return clone

    annotated = K.models.clone_model(model, clone_function=annotate)
    annotated.set_weights(model.get_weights())
    annotated = tfmot.quantization.keras.quantize_annotate_model(annotated)
    with tfmot.quantization.keras.quantize_scope(quantize_configs.custom_objects()):
        q = tfmot.quantization.keras.quantize_apply(annotated)
    x = np.random.default_rng(0).uniform(0, 255, (16, *model.input_shape[1:])).astype(np.float32)
    y = np.arange(16) % int(model.output_shape[-1])
    qat.compile_qat(q, 1e-3).fit(x, y, batch_size=8, epochs=1, verbose=0)
    return q, x


def _check_full_integer(q, x, float_ops=()):
    from edge.litert import TFLiteModel

    blob = convert.convert(q, "qat_int8", io_dtype="uint8")
    assert convert.float_ops(blob) == sorted(float_ops)
    tfl = TFLiteModel(blob)
    assert tfl.input_dtype == "uint8"
    got = tfl.predict(x)
    want = q.predict(x, verbose=0)
    # One int8 step of the softmax output is 1/256; a few steps of drift through the layers is expected.
    assert np.abs(got - want).max() < 0.05
    return blob


def _head(K, x, classes=3):
    x = K.layers.GlobalAveragePooling2D()(x)
    return K.layers.Dense(classes, activation="softmax")(x)


def test_multiply_output_config_se_excite():
    K = keras_versions.tf_keras()
    inp = K.layers.Input((8, 8, 3))
    x = K.layers.Rescaling(1 / 255.0, name="rescaling")(inp)
    x = K.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(x)
    gate = K.layers.Conv2D(4, 1, activation="sigmoid", name="gate")(K.layers.GlobalAveragePooling2D(keepdims=True)(x))
    x = K.layers.Multiply(name="excite")([x, gate])
    model = K.Model(inp, _head(K, x))
    configs = {layer.name: quantize_configs.config_for(layer) for layer in model.layers}
    assert isinstance(configs["excite"], quantize_configs.OutputQuantizeConfig)
    assert qat.rejected_layers(model, {k: v for k, v in configs.items() if v is not None}) == []
    q, x = _apply(model, configs)
    _check_full_integer(q, x)


def test_rescaling_output_config_and_normalization_replacement():
    K = keras_versions.tf_keras()
    inp = K.layers.Input((8, 8, 3))
    x = K.layers.Rescaling(1 / 255.0, name="rescaling")(inp)
    norm = K.layers.Normalization(axis=-1, name="normalization")
    x = norm(x)
    x = K.layers.Conv2D(4, 3, padding="same", name="conv")(x)
    model = K.Model(inp, _head(K, x))
    norm.set_weights(
        [np.array([0.485, 0.456, 0.406], np.float32), np.array([0.05, 0.06, 0.07], np.float32), np.zeros((), np.int64)]
    )
    norm.finalize_state()
    rejected = qat.rejected_layers(model)
    assert {(name, kind) for name, kind, _ in rejected} == {
        ("rescaling", "Rescaling"),
        ("normalization", "Normalization"),
    }
    assert isinstance(quantize_configs.config_for(model.get_layer("rescaling")), quantize_configs.OutputQuantizeConfig)

    replacement = quantize_configs.replacement_for(norm)
    assert type(replacement).__name__ == "DepthwiseConv2D" and replacement.name == "normalization"
    replacement.build((None, 8, 8, 3))
    replacement.set_weights(quantize_configs.replacement_weights(norm))
    x = np.random.default_rng(0).uniform(0, 1, (2, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(replacement(x).numpy(), norm(x).numpy(), rtol=1e-5, atol=1e-5)

    q = qat.quantize_tf_keras(model)
    x = np.random.default_rng(0).uniform(0, 255, (16, 8, 8, 3)).astype(np.float32)
    qat.compile_qat(q, 1e-3).fit(x, np.arange(16) % 3, batch_size=8, epochs=1, verbose=0)
    _check_full_integer(q, x)


def test_standalone_batchnorm_is_accepted_and_conv_bn_is_left_to_tfmot():
    K = keras_versions.tf_keras()
    inp = K.layers.Input((8, 8, 3))
    x = K.layers.Rescaling(1 / 255.0, name="rescaling")(inp)
    x = K.layers.BatchNormalization(name="lonely_bn")(x)
    x = K.layers.Conv2D(4, 3, padding="same", use_bias=False, name="conv")(x)
    x = K.layers.BatchNormalization(name="conv_bn")(x)
    model = K.Model(inp, _head(K, x))
    assert quantize_configs.config_for(model.get_layer("conv_bn")) is None
    assert isinstance(quantize_configs.config_for(model.get_layer("lonely_bn")), quantize_configs.OutputQuantizeConfig)
    rejected = {name for name, _, _ in qat.rejected_layers(model)}
    assert rejected == {"rescaling", "lonely_bn"}
    configs = {layer.name: quantize_configs.config_for(layer) for layer in model.layers}
    q, x = _apply(model, configs)
    # The documented limit: the standalone BN's MUL + ADD stay float; everything else is int8.
    _check_full_integer(q, x, float_ops=("ADD", "MUL"))


def test_swish_conv_config_makes_the_se_reduce_conv_integer():
    """Without the config tfmot quantizes only after the swish and the converter leaves the conv in float."""
    K = keras_versions.tf_keras()
    inp = K.layers.Input((8, 8, 3))
    x = K.layers.Rescaling(1 / 255.0, name="rescaling")(inp)
    x = K.layers.Conv2D(4, 3, padding="same", activation="swish", name="reduce")(x)
    model = K.Model(inp, _head(K, x))
    config = quantize_configs.config_for(model.get_layer("reduce"))
    assert isinstance(config, quantize_configs.SwishConvQuantizeConfig)

    default_only = {"rescaling": quantize_configs.OutputQuantizeConfig()}
    q_default, x_default = _apply(model, default_only)
    assert "CONV_2D" in convert.float_ops(convert.convert(q_default, "qat_int8", io_dtype="uint8"))

    q, x = _apply(model, {"rescaling": quantize_configs.OutputQuantizeConfig(), "reduce": config})
    _check_full_integer(q, x)


def test_config_for_b0_twin_layers():
    model = twin_lib.twin(keras_effnet.build(0, input_shape=(32, 32, 3), classes=3))
    kinds = {layer.name: type(quantize_configs.config_for(layer)).__name__ for layer in model.layers}
    assert kinds["rescaling"] == kinds["block2a_se_excite"] == "OutputQuantizeConfig"
    assert kinds["normalization"] == "NoneType"
    assert type(quantize_configs.replacement_for(model.get_layer("normalization"))).__name__ == "DepthwiseConv2D"
    assert kinds["block2a_se_reduce"] == "SwishConvQuantizeConfig"
    for name in ("stem_conv", "stem_bn", "block2a_se_expand", "block2a_dwconv", "block2b_add", "predictions"):
        assert kinds[name] == "NoneType", name


@pytest.mark.parametrize("cls", quantize_configs.CONFIGS)
def test_configs_round_trip_and_check_counts(cls):
    config = cls()
    again = quantize_configs.custom_objects()[cls.__name__].from_config(config.get_config())
    assert type(again) is cls
    K = keras_versions.tf_keras()
    layer = K.layers.Conv2D(2, 1, activation="swish")
    layer.build((None, 4, 4, 3))
    assert len(config.get_weights_and_quantizers(layer)) == (
        1 if cls is quantize_configs.SwishConvQuantizeConfig else 0
    )
    with pytest.raises(ValueError, match="expects|quantizes no"):
        config.set_quantize_weights(layer, [layer.kernel, layer.kernel])
    with pytest.raises(ValueError, match="expects|quantizes no"):
        config.set_quantize_activations(layer, [object(), object()])
