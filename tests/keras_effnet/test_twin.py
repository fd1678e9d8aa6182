"""The tf_keras (Keras 2) twin: same names, same weights, same outputs."""

import keras
import numpy as np
import pytest

import keras_effnet
from keras_effnet import twin


@pytest.mark.parametrize("family,phi", [("efficientnet", 0), ("lite", 0), ("efficientnet", 1.5)])
def test_twin_matches_keras3(family, phi, tmp_path):
    model = keras_effnet.build(phi, family=family, input_shape=(64, 64, 3), classes=7)
    rng = np.random.default_rng(0)
    # positive BN variances: a negative one makes both outputs NaN, which assert_allclose would call equal
    model.set_weights(
        [
            w.numpy()
            if "normalization" in w.path
            else rng.uniform(0.5, 1.5, w.shape).astype(w.dtype)
            if "variance" in w.path
            else rng.normal(0, 0.05, w.shape).astype(w.dtype)
            for w in model.weights
        ]
    )
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)  # the twin works from a saved model too
    other = twin.twin(loaded)
    assert type(other).__module__.startswith("tf_keras")
    assert [l.name for l in other.layers] == [l.name for l in model.layers]
    assert other.count_params() == model.count_params()
    x = rng.uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    expected = model(x, training=False).numpy()
    assert np.isfinite(expected).all()
    np.testing.assert_allclose(other(x, training=False).numpy(), expected, rtol=1e-4, atol=1e-5)


def test_spec_from_model_rejects_foreign_models():
    foreign = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(2, 3)])
    with pytest.raises(ValueError, match="not built by keras_effnet"):
        twin.spec_from_model(foreign)
