"""Drop-in compatibility with keras.applications.EfficientNetB0..B7 (runs in CI for all eight)."""

import hashlib
import http.server
import re
import threading

import keras
import numpy as np
import pytest

import keras_effnet
from keras_effnet import weights as weights_lib

APPS = {i: getattr(keras.applications, f"EfficientNetB{i}") for i in range(8)}
SIZE = 64  # weights do not depend on resolution; parity at 64 px keeps CI fast


def _strip_counter(name):
    """keras.applications auto-names its preprocessing layers (rescaling_3 after other models were built)."""
    return re.sub(r"_\d+$", "", name) if re.match(r"^(input_layer|rescaling|normalization)", name) else name


def _save_legacy_h5(model, path):
    """Write `model`'s weights as a legacy Keras 2 .h5 file, the format of keras.applications' ImageNet files.

    Keras 3 no longer writes that format, so the same network is built with tf_keras.applications.
    """
    from keras_effnet import keras_versions

    tfk = keras_versions.tf_keras()
    phi = int(model.name[-1])
    legacy = getattr(tfk.applications, f"EfficientNetB{phi}")(
        weights=None, input_shape=model.input_shape[1:], classes=model.output_shape[-1]
    )
    legacy.set_weights(model.get_weights())
    legacy.save_weights(str(path))


def _finalize(model):
    for layer in model.layers:
        if type(layer).__name__ == "Normalization":
            layer.finalize_state()  # Keras 3 caches statistics; set_weights alone does not refresh them


@pytest.mark.parametrize("phi", range(8))
def test_same_layers_weights_and_outputs_as_keras_applications(phi):
    theirs = APPS[phi](weights=None, input_shape=(SIZE, SIZE, 3))
    ours = keras_effnet.build(phi, input_shape=(SIZE, SIZE, 3))
    assert ours.count_params() == theirs.count_params()
    assert ours.name == theirs.name == f"efficientnetb{phi}"
    assert [_strip_counter(l.name) for l in ours.layers] == [_strip_counter(l.name) for l in theirs.layers]
    assert [type(l).__name__ for l in ours.layers] == [type(l).__name__ for l in theirs.layers]
    assert [(w.path.split("/")[-1], tuple(w.shape)) for w in ours.weights] == [
        (w.path.split("/")[-1], tuple(w.shape)) for w in theirs.weights
    ]
    rng = np.random.default_rng(phi)
    theirs.set_weights(
        [rng.normal(0, 0.05, w.shape).astype(w.dtype) if i else w for i, w in enumerate(theirs.get_weights())]
    )
    # the same statistics keras.applications' model would hold after normalisation is set right
    norm = [l for l in theirs.layers if type(l).__name__ == "Normalization"][0]
    norm.set_weights(ours.get_layer("normalization").get_weights())
    _finalize(theirs)
    ours.set_weights(theirs.get_weights())
    _finalize(ours)
    x = rng.uniform(0, 255, (2, SIZE, SIZE, 3)).astype("float32")
    np.testing.assert_allclose(ours(x, training=False).numpy(), theirs(x, training=False).numpy(), rtol=1e-5, atol=1e-6)
    keras.backend.clear_session()


@pytest.mark.parametrize("suffix", [".h5", ".weights.h5"])
def test_weights_saved_from_keras_applications_load(tmp_path, suffix):
    theirs = keras.applications.EfficientNetB0(weights=None, input_shape=(SIZE, SIZE, 3), classes=10)
    rng = np.random.default_rng(0)
    theirs.set_weights([rng.normal(0, 0.05, w.shape).astype(w.dtype) for w in theirs.get_weights()])
    norm = [l for l in theirs.layers if type(l).__name__ == "Normalization"][0]
    norm.set_weights([np.array([0.4, 0.5, 0.6], "float32"), np.array([0.04, 0.05, 0.06], "float32"), np.array(0)])
    _finalize(theirs)
    path = tmp_path / f"b0{suffix}"
    if suffix == ".h5":
        _save_legacy_h5(theirs, path)
    else:
        theirs.save_weights(path)
    ours = keras_effnet.build(0, input_shape=(SIZE, SIZE, 3), classes=10, weights=str(path))
    x = rng.uniform(0, 255, (2, SIZE, SIZE, 3)).astype("float32")
    np.testing.assert_allclose(ours(x, training=False).numpy(), theirs(x, training=False).numpy(), rtol=1e-5, atol=1e-6)


def _official_style_file(tmp_path):
    """A file laid out like keras.applications' efficientnetb0.h5: stddev stored as the variance."""
    theirs = keras.applications.EfficientNetB0(weights=None, input_shape=(SIZE, SIZE, 3))
    norm = [l for l in theirs.layers if type(l).__name__ == "Normalization"][0]
    norm.set_weights(
        [
            np.array(weights_lib.IMAGENET_MEAN_RGB, "float32"),
            np.array(weights_lib.IMAGENET_STDDEV_RGB, "float32"),
            np.array(0),
        ]
    )
    path = tmp_path / "efficientnetb0.h5"
    _save_legacy_h5(theirs, path)
    return theirs, path


def test_official_layout_is_repaired_to_true_variance(tmp_path):
    """keras.applications compensates stddev-as-variance with a second Rescaling (tensorflow/tensorflow#49930)."""
    theirs, path = _official_style_file(tmp_path)
    ours = keras_effnet.build(0, input_shape=(SIZE, SIZE, 3), weights=str(path))
    _, var, _ = ours.get_layer("normalization").get_weights()
    np.testing.assert_allclose(var, np.square(weights_lib.IMAGENET_STDDEV_RGB), rtol=1e-6)
    x = np.random.default_rng(3).uniform(0, 255, (1, SIZE, SIZE, 3)).astype("float32")
    normalised = keras.Model(ours.input, ours.get_layer("normalization").output)(x).numpy()
    expected = (x / 255.0 - np.array(weights_lib.IMAGENET_MEAN_RGB)) / np.array(weights_lib.IMAGENET_STDDEV_RGB)
    np.testing.assert_allclose(normalised, expected, rtol=1e-4, atol=1e-4)


def test_imagenet_fetch_checks_the_hash(tmp_path):
    _, path = _official_style_file(tmp_path)
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        cache = str(tmp_path / "keras_home")
        fetched = weights_lib.fetch_imagenet(0, True, base_url=url, file_hash=md5, cache_dir=cache)
        assert open(fetched, "rb").read() == path.read_bytes()
        ours = keras_effnet.build(0, input_shape=(SIZE, SIZE, 3), weights=fetched)
        assert ours.count_params() == 5_330_571
        assert fetched == str(tmp_path / "keras_home" / "models" / "efficientnetb0.h5")
        (tmp_path / "keras_home" / "models" / "efficientnetb0.h5").unlink()
        with pytest.raises(ValueError, match="hash"):
            weights_lib.fetch_imagenet(0, True, base_url=url, file_hash="0" * 32, cache_dir=cache)
    finally:
        server.shutdown()


def test_imagenet_hashes_are_keras_applications_own():
    from keras.src.applications import efficientnet as ka

    assert weights_lib.BASE_WEIGHTS_URL == ka.BASE_WEIGHTS_PATH
    assert {f"b{k}": v for k, v in weights_lib.WEIGHTS_HASHES.items()} == ka.WEIGHTS_HASHES
