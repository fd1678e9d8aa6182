"""`keras_effnet.build`: exact sizes, MACs, input handling, bad input, mixed precision, saving."""

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import keras_effnet
from keras_effnet import profile

# keras.applications totals, timm/KerasHub trainable counts, GMACs at native resolution.
PARAMS = {
    0: (5_330_571, 5_288_548, 0.386),
    1: (7_856_239, 7_794_184, 0.687),
    2: (9_177_569, 9_109_994, 0.994),
    3: (12_320_535, 12_233_232, 1.827),
    4: (19_466_823, 19_341_616, 4.394),
    5: (30_562_527, 30_389_784, 10.27),
    6: (43_265_143, 43_040_704, 19.07),
    7: (66_658_687, 66_347_960, 37.75),
}


@pytest.mark.parametrize("phi", sorted(PARAMS))
def test_exact_params_and_macs_at_native_resolution(phi):
    model = keras_effnet.build(phi)
    total, trainable, gmacs = PARAMS[phi]
    p = profile(model)
    assert model.input_shape == (
        None,
        keras_effnet.coefficients(phi).resolution,
    ) * 1 + (keras_effnet.coefficients(phi).resolution, 3)
    assert p.params == total
    assert p.trainable_params == trainable
    assert p.macs / 1e9 == pytest.approx(gmacs, rel=0.02)
    assert p.flops == 2 * p.macs


@pytest.mark.parametrize("phi,params_m", [(0, 4.7), (1, 5.4), (2, 6.1), (3, 8.2), (4, 13.0)])
def test_lite_params(phi, params_m):
    model = keras_effnet.build(phi, family="lite", input_shape=(64, 64, 3))
    assert profile(model).trainable_params / 1e6 == pytest.approx(params_m, abs=0.06)
    kinds = {type(layer).__name__ for layer in model.layers}
    assert "Multiply" not in kinds  # no squeeze-excitation
    acts = {layer.get_config()["activation"] for layer in model.layers if type(layer).__name__ == "Activation"}
    assert acts == {"relu6"}


def test_formula_phi_3_matches_the_reference_figures():
    p = profile(keras_effnet.build(3, scaling="formula"))
    assert p.params / 1e6 == pytest.approx(16.35, rel=0.01)
    assert p.macs / 1e9 == pytest.approx(3.25, rel=0.01)


def test_profile_counts_a_hand_computed_model():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)  # 8*8*4 * 3*3*3 = 6912
    x = keras.layers.DepthwiseConv2D(3, strides=2, padding="same")(x)  # 4*4*4 * 9 = 576
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(5)(x)  # 4*5 = 20
    p = profile(keras.Model(inputs, x))
    assert p.macs == 6912 + 576 + 20
    assert p.activations == 8 * 8 * 4 + 4 * 4 * 4 + 5


def test_defaults_take_raw_pixels_and_hold_imagenet_statistics():
    model = keras_effnet.build(0, input_shape=(32, 32, 3), classes=3)
    mean, var, _ = model.get_layer("normalization").get_weights()
    np.testing.assert_allclose(mean, [0.485, 0.456, 0.406], rtol=1e-6)
    np.testing.assert_allclose(var, np.square([0.229, 0.224, 0.225]), rtol=1e-6)
    lite = keras_effnet.build(0, family="lite", input_shape=(32, 32, 3), classes=3)
    x = np.full((1, 32, 32, 3), 127.0, "float32")
    normalised = keras.Model(lite.input, lite.get_layer("normalization").output)(x)
    np.testing.assert_allclose(normalised.numpy(), 0.0, atol=1e-5)  # (127 - 127) / 128


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        ({"classes": 0}, ValueError, "classes must be an integer >= 1, got 0"),
        ({"classes": 2.5}, TypeError, "classes"),
        ({"classes": True}, TypeError, "classes"),
        ({"input_shape": (31, 64, 3)}, ValueError, r"input_shape height must be >= 32 .*got 31"),
        ({"input_shape": (64, 16, 3)}, ValueError, r"input_shape width must be >= 32 .*got 16"),
        ({"input_shape": (64, 64)}, ValueError, "input_shape must be a tuple"),
        ({"pooling": "mean", "include_top": False}, ValueError, "pooling must be one of"),
        ({"include_top": "yes"}, TypeError, "include_top"),
        ({"dropout_rate": 1.5}, ValueError, "dropout_rate must be in"),
        ({"drop_connect_rate": -0.1}, ValueError, "drop_connect_rate"),
        ({"weights": 42}, TypeError, "weights must be None, 'imagenet' or a file path, got 42"),
        ({"weights": "imagenet", "classes": 10}, ValueError, "classes=1000"),
        ({"family": "lite", "weights": "imagenet"}, ValueError, "weights='imagenet' exists for the presets B0..B7"),
        ({"phi": 2.5, "weights": "imagenet"}, ValueError, "weights='imagenet' exists for the presets B0..B7"),
        ({"phi": 8, "weights": "imagenet"}, ValueError, "weights='imagenet' exists for the presets B0..B7"),
        ({"phi": -1}, ValueError, "phi must be >= 0, got -1"),
        ({"phi": "b3"}, TypeError, "phi must be a real number"),
        ({"family": "lite", "phi": 5}, ValueError, "phi=5"),
    ],
)
def test_bad_input_raises_a_clear_error(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        keras_effnet.build(**kwargs)


def test_weights_need_three_channels(tmp_path):
    path = tmp_path / "w.weights.h5"
    keras_effnet.build(0, input_shape=(32, 32, 3), classes=2).save_weights(path)
    with pytest.raises(ValueError, match="3 channels"):
        keras_effnet.build(0, input_shape=(32, 32, 1), classes=2, weights=str(path))


def test_non_rgb_input_without_weights_works():
    model = keras_effnet.build(0, input_shape=(32, 32, 1), classes=2)
    assert np.isfinite(model(np.zeros((1, 32, 32, 1), "float32")).numpy()).all()


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    height=st.integers(32, 80),
    width=st.integers(32, 80),
    phi=st.sampled_from([0, 0.3, 1.7]),
)
def test_any_input_size_at_least_32_runs(height, width, phi):
    model = keras_effnet.build(phi, input_shape=(height, width, 3), classes=4)
    out = model(np.random.default_rng(0).uniform(0, 255, (1, height, width, 3)).astype("float32"), training=False)
    assert out.shape == (1, 4)
    np.testing.assert_allclose(out.numpy().sum(), 1.0, rtol=1e-5)
    keras.backend.clear_session()


def test_dynamic_input_size_model_runs_at_several_sizes():
    model = keras_effnet.build(0, input_shape=(None, None, 3), include_top=False, pooling="avg")
    for size in (32, 48):
        assert model(np.zeros((1, size, size, 3), "float32")).shape == (1, 1280)
    with pytest.raises(ValueError, match="fixed input_shape"):
        profile(model)


def test_include_top_false_and_pooling():
    base = keras_effnet.build(0, include_top=False, input_shape=(64, 64, 3))
    assert base.output_shape == (None, 2, 2, 1280)
    assert keras_effnet.build(0, include_top=False, pooling="max", input_shape=(64, 64, 3)).output_shape == (None, 1280)


def test_input_tensor():
    tensor = keras.Input((48, 48, 3))
    model = keras_effnet.build(0, input_tensor=tensor, classes=5)
    assert model.input_shape == (None, 48, 48, 3) and model.output_shape == (None, 5)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
@pytest.mark.parametrize("family", ["efficientnet", "lite"])
def test_mixed_precision(policy, family):
    keras.config.set_dtype_policy(policy)
    model = keras_effnet.build(0, family=family, input_shape=(64, 64, 3), classes=10)
    x = np.random.default_rng(1).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    out = model(x, training=False)
    assert out.dtype == "float32"
    # The features match float32's with the same weights, to the precision of the 16-bit compute (measured
    # relative error: bfloat16 0.017-0.018, float16 0.005-0.006); the untrained head's output is near-uniform.
    features = keras_effnet.build(0, family=family, input_shape=(64, 64, 3), include_top=False, pooling="avg")
    keras.config.set_dtype_policy("float32")
    reference = keras_effnet.build(0, family=family, input_shape=(64, 64, 3), include_top=False, pooling="avg")
    reference.set_weights(features.get_weights())
    expected = reference(x, training=False).numpy()
    got = features(x, training=False).numpy()
    error = np.linalg.norm(got - expected) / np.linalg.norm(expected)
    assert error < (0.05 if policy == "mixed_bfloat16" else 0.02), error
    keras.config.set_dtype_policy(policy)
    assert model.get_layer("normalization").compute_dtype == "float32"
    assert model.get_layer("rescaling").compute_dtype == "float32"
    assert model.get_layer("stem_conv").compute_dtype == policy.split("_")[1]
    base = keras_effnet.build(0, family=family, input_shape=(64, 64, 3), include_top=False, pooling="avg")
    assert base(x, training=False).dtype == "float32"


@pytest.mark.parametrize("family", ["efficientnet", "lite"])
def test_save_and_load_safe_mode(tmp_path, family):
    model = keras_effnet.build(0, family=family, input_shape=(64, 64, 3), classes=6)
    assert not any(type(layer).__name__ == "Lambda" for layer in model.layers)
    x = np.random.default_rng(2).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    path = tmp_path / "x.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(loaded(x, training=False).numpy(), model(x, training=False).numpy())
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]


def test_weights_file_errors(tmp_path):
    missing = tmp_path / "nope.weights.h5"
    with pytest.raises(FileNotFoundError, match="nope.weights.h5"):
        keras_effnet.build(0, weights=str(missing))
    text = tmp_path / "notes.h5"
    text.write_text("not weights")
    with pytest.raises(ValueError, match="not a Keras weights file"):
        keras_effnet.build(0, input_shape=(32, 32, 3), weights=str(text))
    b1 = tmp_path / "b1.weights.h5"
    keras_effnet.build(1, input_shape=(32, 32, 3)).save_weights(b1)
    with pytest.raises(ValueError, match="made for another network than efficientnetb0"):
        keras_effnet.build(0, input_shape=(32, 32, 3), weights=str(b1))
    ten = tmp_path / "ten.weights.h5"
    keras_effnet.build(0, input_shape=(32, 32, 3), classes=10).save_weights(ten)
    with pytest.raises(ValueError, match="predictions"):
        keras_effnet.build(0, input_shape=(32, 32, 3), classes=5, weights=str(ten))
    ok = keras_effnet.build(0, input_shape=(32, 32, 3), classes=10, weights=str(ten))
    assert ok.output_shape == (None, 10)
