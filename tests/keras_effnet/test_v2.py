"""EfficientNetV2: drop-in parity with keras.applications.EfficientNetV2*, weights, the fused_stages knob,
BN momentum, mixed precision, saving and the tf_keras twin."""

import hashlib
import http.server
import re
import threading

import keras
import numpy as np
import pytest

import keras_effnet
from keras_effnet import twin
from keras_effnet import weights as weights_lib

APPS = {
    "efficientnetv2-b0": "EfficientNetV2B0",
    "efficientnetv2-b1": "EfficientNetV2B1",
    "efficientnetv2-b2": "EfficientNetV2B2",
    "efficientnetv2-b3": "EfficientNetV2B3",
    "efficientnetv2-s": "EfficientNetV2S",
    "efficientnetv2-m": "EfficientNetV2M",
    "efficientnetv2-l": "EfficientNetV2L",
}
SIZE = 32  # weights do not depend on resolution; 32 px (1x1 after five stride-2 stages) keeps CI fast
CLASSES = 10


def _strip_counter(name):
    """keras.applications auto-names its preprocessing layers (rescaling_3 after other models were built)."""
    return re.sub(r"_\d+$", "", name) if re.match(r"^(input_layer|rescaling|normalization)", name) else name


def _randomise(model, rng):
    """Random weights that keep activations O(1) through 100+ blocks at inference: kernels N(0, 1/fan_in),
    biases, BN betas and means N(0, 0.1), BN gammas and variances U(0.5, 1.5). (The layers' own initialisers are scaled for batch
    statistics; with moving statistics at inference the activations of deep members overflow.)"""
    values = []
    for w in model.weights:
        shape, name = tuple(w.shape), w.path.split("/")[-1]
        if name in ("kernel", "depthwise_kernel"):
            fan_in = int(np.prod(shape[:-1])) if name == "kernel" else int(np.prod(shape[:2]))
            values.append(rng.normal(0, fan_in**-0.5, shape).astype("float32"))
        elif name in ("gamma", "moving_variance"):
            values.append(rng.uniform(0.5, 1.5, shape).astype("float32"))
        elif name in ("bias", "beta", "moving_mean"):
            values.append(rng.normal(0, 0.1, shape).astype("float32"))
        else:  # preprocessing statistics (V1 only) and the like: keep
            values.append(np.asarray(w))
    model.set_weights(values)


# keras.applications with include_top and 1000 classes: (total, trainable) parameters (Keras 3.15.1).
APPLICATIONS_PARAMS = {
    "efficientnetv2-b0": (7_200_312, 7_139_704),
    "efficientnetv2-b1": (8_212_124, 8_141_052),
    "efficientnetv2-b2": (10_178_374, 10_096_086),
    "efficientnetv2-b3": (14_467_622, 14_358_406),
    "efficientnetv2-s": (21_612_360, 21_458_488),
    "efficientnetv2-m": (54_431_388, 54_139_356),
    "efficientnetv2-l": (119_027_848, 118_515_272),
}
BIG = ("efficientnetv2-m", "efficientnetv2-l")  # 54 M and 119 M parameters: building them dominates the test time


def _reference(name, **kwargs):
    return getattr(keras.applications, APPS[name])(
        weights=None, input_shape=(SIZE, SIZE, 3), classes=CLASSES, classifier_activation=None, **kwargs
    )


def _assert_same_structure(ours, theirs, name):
    assert ours.name == theirs.name == name
    assert ours.count_params() == theirs.count_params()
    assert [_strip_counter(l.name) for l in ours.layers] == [_strip_counter(l.name) for l in theirs.layers]
    assert [type(l).__name__ for l in ours.layers] == [type(l).__name__ for l in theirs.layers]
    assert [(w.path.split("/")[-1], tuple(w.shape)) for w in ours.weights] == [
        (w.path.split("/")[-1], tuple(w.shape)) for w in theirs.weights
    ]
    # the same network at 1000 classes has the reference table's parameter count
    head = ours.get_layer("top_conv").filters
    total = ours.count_params() + (1000 - CLASSES) * (head + 1)
    trainable = sum(int(np.prod(w.shape)) for w in ours.trainable_weights) + (1000 - CLASSES) * (head + 1)
    assert (total, trainable) == APPLICATIONS_PARAMS[name]


@pytest.mark.parametrize("name", [n if n not in BIG else pytest.param(n, marks=pytest.mark.slow) for n in sorted(APPS)])
def test_same_layers_weights_and_outputs_as_keras_applications(name):
    """Count, names, layer types, weight order and shapes, then outputs with the reference's weights transplanted.

    Logits, so softmax cannot hide differences.
    """
    theirs = _reference(name)
    ours = keras_effnet.build_variant(name, input_shape=(SIZE, SIZE, 3), classes=CLASSES, classifier_activation=None)
    _assert_same_structure(ours, theirs, name)
    rng = np.random.default_rng(len(name))
    _randomise(theirs, rng)
    ours.set_weights(theirs.get_weights())
    x = rng.uniform(0, 255, (2, SIZE, SIZE, 3)).astype("float32")
    expected = theirs(x, training=False).numpy()
    assert np.isfinite(expected).all() and np.std(expected) > 1e-2  # the outputs carry information
    np.testing.assert_allclose(ours(x, training=False).numpy(), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", BIG)
def test_big_members_same_structure_as_keras_applications(name):
    """V2-M and V2-L in the default suite: count, names, types, weight order and shapes, without initialising
    their 54 M / 119 M weights (`keras.StatelessScope` defers variable values; the output check is slow-marked)."""
    with keras.StatelessScope(initialize_variables=False):
        theirs = _reference(name)
        ours = keras_effnet.build_variant(
            name, input_shape=(SIZE, SIZE, 3), classes=CLASSES, classifier_activation=None
        )
        _assert_same_structure(ours, theirs, name)


def test_preprocessing_holds_statistics_without_weights():
    """V2-B*: ImageNet mean/stddev as constants (no weights, as keras.applications); V2-S/M/L: x / 128 - 1."""
    b0 = keras_effnet.build(0, family="v2", input_shape=(SIZE, SIZE, 3), classes=3)
    norm = b0.get_layer("normalization")
    assert not norm.weights
    x = np.random.default_rng(0).uniform(0, 255, (1, SIZE, SIZE, 3)).astype("float32")
    got = keras.Model(b0.input, norm.output)(x).numpy()
    np.testing.assert_allclose(
        got, (x / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225]), rtol=1e-4, atol=1e-4
    )
    spec = keras_effnet.architecture.model_spec(keras_effnet.variant_coefficients("efficientnetv2-s"))
    assert spec.preprocessing.mean_rgb is None and spec.preprocessing.offset == -1.0
    assert spec.preprocessing.scale == 1.0 / 128.0


def test_weights_saved_from_keras_applications_load(tmp_path):
    """Both formats: Keras 3 `.weights.h5`, and the legacy `.h5` of keras.applications' ImageNet files
    (which Keras 3 no longer writes, so tf_keras.applications writes it)."""
    from keras_effnet import keras_versions

    theirs = keras.applications.EfficientNetV2B0(weights=None, input_shape=(SIZE, SIZE, 3), classes=CLASSES)
    rng = np.random.default_rng(1)
    _randomise(theirs, rng)
    theirs.save_weights(tmp_path / "v2b0.weights.h5")
    legacy = keras_versions.tf_keras().applications.EfficientNetV2B0(
        weights=None, input_shape=(SIZE, SIZE, 3), classes=CLASSES
    )
    legacy.set_weights(theirs.get_weights())
    legacy.save_weights(str(tmp_path / "v2b0.h5"))
    x = rng.uniform(0, 255, (2, SIZE, SIZE, 3)).astype("float32")
    expected = theirs(x, training=False).numpy()
    for path in (tmp_path / "v2b0.weights.h5", tmp_path / "v2b0.h5"):
        ours = keras_effnet.build(0, family="v2", input_shape=(SIZE, SIZE, 3), classes=CLASSES, weights=str(path))
        np.testing.assert_allclose(ours(x, training=False).numpy(), expected, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="made for another network than efficientnetv2-b1"):
        keras_effnet.build(1, family="v2", input_shape=(SIZE, SIZE, 3), classes=CLASSES, weights=str(path))


def test_imagenet_weights_come_from_keras_applications_with_a_hash_check(tmp_path, monkeypatch):
    """weights='imagenet' fetches keras.applications' V2 file (served here on loopback) and checks its MD5."""
    from keras.src.backend import config as keras_config

    from keras_effnet import keras_versions

    theirs = keras_versions.tf_keras().applications.EfficientNetV2B0(
        weights=None, include_top=False, input_shape=(SIZE, SIZE, 3)
    )
    rng = np.random.default_rng(2)
    theirs.set_weights(
        [
            rng.uniform(0.5, 1.5, w.shape).astype("float32") if "variance" in w.name else w.numpy()
            for w in theirs.weights
        ]
    )
    served = tmp_path / "served"
    served.mkdir()
    path = served / "efficientnetv2-b0_notop.h5"
    theirs.save_weights(str(path))
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(served), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        (tmp_path / "keras_home").mkdir()  # keras falls back to /tmp/.keras for a folder that does not exist
        monkeypatch.setattr(keras_config, "_KERAS_DIR", str(tmp_path / "keras_home"))
        monkeypatch.setattr(weights_lib, "V2_BASE_WEIGHTS_URL", f"http://127.0.0.1:{server.server_address[1]}/")
        top, _ = weights_lib.V2_WEIGHTS_HASHES["efficientnetv2-b0"]
        monkeypatch.setitem(weights_lib.V2_WEIGHTS_HASHES, "efficientnetv2-b0", (top, md5))
        ours = keras_effnet.build(0, family="v2", weights="imagenet", include_top=False, input_shape=(SIZE, SIZE, 3))
        assert (tmp_path / "keras_home" / "models" / "efficientnetv2-b0_notop.h5").read_bytes() == path.read_bytes()
        x = np.random.default_rng(3).uniform(0, 255, (1, SIZE, SIZE, 3)).astype("float32")
        np.testing.assert_allclose(ours(x).numpy(), theirs(x, training=False).numpy(), rtol=1e-4, atol=1e-4)
        (tmp_path / "keras_home" / "models" / "efficientnetv2-b0_notop.h5").unlink()
        monkeypatch.setitem(weights_lib.V2_WEIGHTS_HASHES, "efficientnetv2-b0", (top, "0" * 32))
        with pytest.raises(ValueError, match="hash"):
            keras_effnet.build(0, family="v2", weights="imagenet", include_top=False, input_shape=(SIZE, SIZE, 3))
    finally:
        server.shutdown()


def test_imagenet_hashes_and_url_are_keras_applications_own():
    from keras.src.applications import efficientnet_v2 as ka

    assert weights_lib.V2_BASE_WEIGHTS_URL == ka.BASE_WEIGHTS_PATH
    ours = {
        k[len("efficientnetv2-") :] if "-b" in k else k[len("efficientnetv2") :]: v
        for k, v in weights_lib.V2_WEIGHTS_HASHES.items()
    }
    assert ours == ka.WEIGHTS_HASHES


def _block_types(model):
    names = {l.name for l in model.layers}
    prefixes = sorted({m.group(1) for n in names if (m := re.match(r"^(block\d+[a-z]+_)project_conv$", n))})
    return {p: ("mbconv" if p + "dwconv" in names or p + "dwconv2" in names else "fused") for p in prefixes}


@pytest.mark.parametrize("family,k", [("v2", 0), ("v2", 6), ("lite", 2)])
def test_fused_stages_knob(family, k):
    model = keras_effnet.build(0, family=family, input_shape=(SIZE, SIZE, 3), classes=4, fused_stages=k)
    types = _block_types(model)
    assert {p for p, t in types.items() if t == "fused"} == {p for p in types if int(p[5]) <= k}
    has_depthwise = any(type(l).__name__ == "DepthwiseConv2D" for l in model.layers)
    assert has_depthwise == (k < len({p[5] for p in types}))
    assert model.name.endswith(f"_fused{k}")
    out = model(np.random.default_rng(k).uniform(0, 255, (1, SIZE, SIZE, 3)).astype("float32"), training=False)
    np.testing.assert_allclose(out.numpy().sum(), 1.0, rtol=1e-5)


def test_fused_stages_trades_macs_for_fewer_layers():
    """Fused-MBConv costs more MACs than MBConv where it replaces it (Tan & Le 2021, Table 3): B0 with all
    seven stages fused, against B0's 0.386 GMACs and 5.29 M trainable parameters at 224 px."""
    fused = keras_effnet.build(0, fused_stages=7)
    p = keras_effnet.profile(fused)
    assert not any(type(l).__name__ == "DepthwiseConv2D" for l in fused.layers)
    assert p.macs / 1e9 > 0.386 * 3 and p.trainable_params > 5_288_548
    own = keras_effnet.architecture.model_spec(keras_effnet.coefficients(0, family="v2"), fused_stages=3)
    assert own.coefficients.name == "efficientnetv2-b0"  # the member's own table: no suffix


@pytest.mark.parametrize(
    "call,match",
    [
        (
            lambda: keras_effnet.build_variant("efficientnetv2-xl"),
            r"name must be one of the variants .*efficientnetv2-l.*got 'efficientnetv2-xl'",
        ),
        (lambda: keras_effnet.build_variant("efficientnetb3", phi=2), r"phi=2 is fixed by the variant name"),
        (lambda: keras_effnet.build_variant("efficientnetb3", colour="red"), r"unexpected keyword argument 'colour'"),
        (lambda: keras_effnet.build(0, fused_stages=8), r"fused_stages must be None or an integer 0\.\.7 .*got 8"),
        (
            lambda: keras_effnet.build(0, family="v2", fused_stages=7),
            r"fused_stages must be None or an integer 0\.\.6 .*got 7",
        ),
        (lambda: keras_effnet.build(0, fused_stages=-1), r"fused_stages .*got -1"),
        (lambda: keras_effnet.build(0, fused_stages=1.0), r"fused_stages .*got 1\.0"),
        (lambda: keras_effnet.build_variant("efficientnetv2-m", fused_stages=8), r"integer 0\.\.7 .*got 8"),
        (lambda: keras_effnet.build(-1, family="v2"), r"phi must be >= 0, got -1"),
        (lambda: keras_effnet.build(13, family="v2"), r"phi must be <= 12 for family='v2', got 13.*build_variant"),
        (
            lambda: keras_effnet.build(4, family="v2", scaling="preset"),
            r"scaling='preset' needs an integer phi in \[0, 1, 2, 3\]",
        ),
        (lambda: keras_effnet.build(0, family="v3"), r"family must be one of .*'v2'.*got 'v3'"),
        (lambda: keras_effnet.build(0, bn_momentum=1.0), r"bn_momentum must be None .*\[0, 1\), got 1\.0"),
        (lambda: keras_effnet.build(0, bn_momentum="0.9"), r"bn_momentum .*got '0\.9'"),
        (lambda: keras_effnet.build(2.5, family="v2", weights="imagenet"), r"weights='imagenet' exists for .*V2"),
        (lambda: keras_effnet.build(0, family="v2", fused_stages=0, weights="imagenet"), r"efficientnetv2-b0_fused0"),
    ],
)
def test_bad_input_names_argument_value_and_allowed(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_bn_momentum_is_the_familys_saved_and_kept_by_the_twin(tmp_path):
    from keras_effnet import architecture, families

    def momenta(model):
        return {l.momentum for l in model.layers if "BatchNormalization" in type(l).__name__}

    assert {
        f: architecture.model_spec(architecture.coefficients(0, family=f)).bn_momentum for f in families.FAMILIES
    } == {"efficientnet": 0.99, "lite": 0.99, "v2": 0.9}
    assert momenta(keras_effnet.build(0, family="v2", input_shape=(SIZE, SIZE, 3))) == {0.9}
    model = keras_effnet.build(0, input_shape=(SIZE, SIZE, 3), classes=3, bn_momentum=0.97)
    assert momenta(model) == {0.97}
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert momenta(loaded) == {0.97}
    assert momenta(twin.twin(loaded)) == {0.97}


@pytest.mark.parametrize("policy", ["mixed_bfloat16"])
def test_mixed_precision_float32_outputs(policy):
    keras.config.set_dtype_policy(policy)
    model = keras_effnet.build(0, family="v2", input_shape=(SIZE, SIZE, 3), classes=10)
    x = np.random.default_rng(1).uniform(0, 255, (2, SIZE, SIZE, 3)).astype("float32")
    out = model(x, training=False)
    assert out.dtype == "float32" and np.isfinite(out.numpy()).all()
    for name in ("rescaling", "normalization"):
        assert model.get_layer(name).compute_dtype == "float32"
    assert model.get_layer("block1a_project_conv").compute_dtype == policy.split("_")[1]


def test_keras_round_trip_safe_mode_and_twin(tmp_path):
    """A .keras file of a V2 model (formula member with the fused knob: both block types, both preprocessings
    are covered by the parity test) loads under safe_mode and gives a tf_keras twin with the same outputs."""
    keras.utils.set_random_seed(4)
    model = keras_effnet.build(0.5, family="v2", input_shape=(48, 48, 3), classes=5, fused_stages=2)
    rng = np.random.default_rng(4)
    _randomise(model, rng)
    path = tmp_path / "v2.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    x = rng.uniform(0, 255, (2, 48, 48, 3)).astype("float32")
    expected = model(x, training=False).numpy()
    np.testing.assert_array_equal(loaded(x, training=False).numpy(), expected)
    assert [l.name for l in loaded.layers] == [l.name for l in model.layers]
    other = twin.twin(loaded)
    assert type(other).__module__.startswith("tf_keras")
    assert [l.name for l in other.layers] == [l.name for l in model.layers]
    assert other.count_params() == model.count_params()
    assert _block_types(other) == _block_types(model)
    np.testing.assert_allclose(other(x, training=False).numpy(), expected, rtol=1e-4, atol=1e-5)


def test_twin_of_minus_one_to_one_preprocessing():
    """V2-S/M/L's Rescaling(1/128, offset=-1) survives the twin (V2-B0 table with S's preprocessing)."""
    from keras_effnet import architecture, families, graph, keras_versions

    spec = architecture.model_spec(keras_effnet.coefficients(0, family="v2"))
    spec = architecture.dataclasses.replace(spec, preprocessing=families.MINUS_ONE_TO_ONE)
    model = graph.build_graph(keras, spec, input_shape=(SIZE, SIZE, 3), classes=3)
    other = twin.twin(model)
    assert "normalization" not in {l.name for l in other.layers}
    assert other.get_layer("rescaling").get_config()["offset"] == -1.0
    x = np.random.default_rng(5).uniform(0, 255, (1, SIZE, SIZE, 3)).astype("float32")
    np.testing.assert_allclose(other(x, training=False).numpy(), model(x, training=False).numpy(), rtol=1e-4, atol=1e-6)
    assert isinstance(other, keras_versions.tf_keras().Model) and not isinstance(other, keras.Model)  # the Keras 2 twin
