"""Loading the official tensorflow/tpu EfficientNet-Lite checkpoints (`keras_effnet.lite_checkpoint`).

The real tarballs cannot be fetched here, so the tests write checkpoints in the
same format (a TF1 name-based bundle, `efficientnet-liteN/model.ckpt.*`) with
the names the official code gives its variables. Those names and shapes are
derived below from the official block table and rules
(models/official/efficientnet/lite/efficientnet_lite_builder.py and
efficientnet_model.py in tensorflow/tpu), independently of the module under
test, so the mapping is checked against them for Lite0..4.
"""

import math
import os
import tarfile
import tempfile

import numpy as np
import pytest

import keras_effnet
from keras_effnet import lite_checkpoint

EMA = "/ExponentialMovingAverage"
# tensorflow/tpu efficientnet_lite_builder.py: _DEFAULT_BLOCKS_ARGS (SE ratio ignored: use_se=False) ...
OFFICIAL_BLOCKS = (
    # repeats, kernel, stride, expand, in, out
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
# ... and efficientnet_lite_params: (width, depth) per variant.
OFFICIAL_PARAMS = {0: (1.0, 1.0), 1: (1.0, 1.1), 2: (1.1, 1.2), 3: (1.2, 1.4), 4: (1.4, 1.8)}
BN = ("gamma", "beta", "moving_mean", "moving_variance")


def _round_filters(filters, width):
    """efficientnet_model.round_filters with depth_divisor 8, min_depth None."""
    scaled = filters * width
    new = max(8, int(scaled + 4) // 8 * 8)
    if new < 0.9 * scaled:
        new += 8
    return int(new)


def official_variables(phi, include_top=True):
    """{name: shape} of the official EfficientNet-Lite`phi` graph (no EMA copies), as TF1 names it."""
    width, depth = OFFICIAL_PARAMS[phi]
    scope = f"efficientnet-lite{phi}"
    out = {f"{scope}/stem/conv2d/kernel": (3, 3, 3, 32)}  # fix_head_stem: 32 filters unscaled
    out.update({f"{scope}/stem/tpu_batch_normalization/{w}": (32,) for w in BN})
    channels = 32
    index = 0
    for i, (repeats, kernel, _, expand, _, filters_out) in enumerate(OFFICIAL_BLOCKS):
        fixed = i in (0, len(OFFICIAL_BLOCKS) - 1)
        repeats = repeats if fixed else int(math.ceil(depth * repeats))
        filters_out = _round_filters(filters_out, width)
        for _ in range(repeats):
            block = f"{scope}/blocks_{index}"
            convs, bns = [], []  # TF1 numbers conv2d, tpu_batch_normalization in call order
            if expand != 1:
                mid = channels * expand
                convs.append((1, 1, channels, mid))
                bns.append(mid)
            else:
                mid = channels
            out[f"{block}/depthwise_conv2d/depthwise_kernel"] = (kernel, kernel, mid, 1)
            bns.append(mid)
            convs.append((1, 1, mid, filters_out))
            bns.append(filters_out)
            for n, shape in enumerate(convs):
                out[f"{block}/conv2d{'_%d' % n if n else ''}/kernel"] = shape
            for n, size in enumerate(bns):
                out.update({f"{block}/tpu_batch_normalization{'_%d' % n if n else ''}/{w}": (size,) for w in BN})
            channels = filters_out
            index += 1
    out[f"{scope}/head/conv2d/kernel"] = (1, 1, channels, 1280)
    out.update({f"{scope}/head/tpu_batch_normalization/{w}": (1280,) for w in BN})
    if include_top:
        out[f"{scope}/head/dense/kernel"] = (1280, 1000)
        out[f"{scope}/head/dense/bias"] = (1000,)
    return out


def write_checkpoint(prefix, tensors):
    """A TF1-style name-based checkpoint (what tf.compat.v1.train.Saver writes), one tensor per name."""
    import tensorflow as tf

    os.makedirs(os.path.dirname(prefix), exist_ok=True)
    names = sorted(tensors)
    tf.raw_ops.SaveV2(
        prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names), tensors=[tensors[n] for n in names]
    )
    with open(os.path.join(os.path.dirname(prefix), "checkpoint"), "w") as f:
        f.write(f'model_checkpoint_path: "{os.path.basename(prefix)}"\n')


def fake_values(phi, seed, *, ema=True, skip_ema=()):
    """Raw variables plus EMA copies with other values, and the training leftovers a real checkpoint has."""
    rng = np.random.default_rng(seed)
    tensors = {"global_step": np.array(1000, np.int64)}
    for name, shape in official_variables(phi).items():
        value = rng.standard_normal(shape, dtype=np.float32)
        if name.endswith("moving_variance"):
            value = np.abs(value) + 0.5
        tensors[name] = value + 1.0
        if ema and name not in skip_ema:
            tensors[name + EMA] = value
    tensors[f"efficientnet-lite{phi}/stem/conv2d/kernel/RMSProp"] = np.zeros((3, 3, 3, 32), np.float32)
    return tensors


NO_EMA = "efficientnet-lite0/head/dense/bias"  # this one falls back to the raw variable
MISSING = "efficientnet-lite0/blocks_5/depthwise_conv2d/depthwise_kernel"


@pytest.fixture(scope="module")
def lite0(tmp_path_factory):
    """The Lite0 checkpoint's tensors, its prefix, a .tar.gz of it, and a broken copy."""
    root = tmp_path_factory.mktemp("lite0")
    tensors = fake_values(0, seed=0, skip_ema=(NO_EMA,))
    prefix = str(root / "efficientnet-lite0" / "model.ckpt")
    write_checkpoint(prefix, tensors)
    tarball = str(root / "efficientnet-lite0.tar.gz")
    with tarfile.open(tarball, "w:gz", compresslevel=1) as tar:
        tar.add(str(root / "efficientnet-lite0"), arcname="efficientnet-lite0")
    broken = {k: v for k, v in tensors.items() if not k.startswith(MISSING)}
    broken_prefix = str(root / "broken" / "model.ckpt")
    write_checkpoint(broken_prefix, broken)
    return {"tensors": tensors, "prefix": prefix, "tarball": tarball, "broken": broken_prefix}


@pytest.fixture(scope="module")
def model0():
    return keras_effnet.build(0, family="lite", input_shape=(32, 32, 3))


def expected_value(tensors, name):
    return tensors.get(name + EMA, tensors[name])


def assert_loaded(model, tensors):
    mapping = lite_checkpoint.variable_map(model, "efficientnet-lite0")
    assert mapping
    for layer_name, index, name in mapping:
        got = np.asarray(model.get_layer(layer_name).weights[index])
        np.testing.assert_array_equal(got, expected_value(tensors, name), err_msg=f"{layer_name}[{index}] <- {name}")


def test_build_with_a_checkpoint_prefix_loads_the_ema_values(lite0):
    model = keras_effnet.build(0, family="lite", input_shape=(32, 32, 3), weights=lite0["prefix"])
    assert_loaded(model, lite0["tensors"])
    tensors = lite0["tensors"]
    np.testing.assert_array_equal(
        np.asarray(model.get_layer("stem_conv").weights[0]), tensors["efficientnet-lite0/stem/conv2d/kernel" + EMA]
    )
    # no EMA copy: the raw variable
    np.testing.assert_array_equal(np.asarray(model.get_layer("predictions").weights[1]), tensors[NO_EMA])
    # the in-model preprocessing is untouched: (x - 127) / 128
    mean, var, _ = model.get_layer("normalization").get_weights()
    np.testing.assert_allclose(mean * 255, 127, rtol=1e-6)
    np.testing.assert_allclose(np.sqrt(var) * 255, 128, rtol=1e-6)
    out = model.predict(np.full((1, 32, 32, 3), 127.0, np.float32), verbose=0)
    assert out.shape == (1, 1000) and np.isfinite(out).all()


def test_tarball_and_folder_load_the_same(lite0):
    model = keras_effnet.build(0, family="lite", input_shape=(32, 32, 3), weights=lite0["tarball"])
    assert_loaded(model, lite0["tensors"])
    notop = keras_effnet.build(
        0, family="lite", input_shape=(32, 32, 3), include_top=False, weights=os.path.dirname(lite0["prefix"])
    )
    assert "predictions" not in {layer.name for layer in notop.layers}
    assert_loaded(notop, lite0["tensors"])


def test_official_names_spot_check(model0):
    got = {(layer, index): name for layer, index, name in lite_checkpoint.variable_map(model0)}
    scope = "efficientnet-lite0"
    assert got[("stem_conv", 0)] == f"{scope}/stem/conv2d/kernel"
    assert got[("stem_bn", 3)] == f"{scope}/stem/tpu_batch_normalization/moving_variance"
    assert got[("block1a_dwconv", 0)] == f"{scope}/blocks_0/depthwise_conv2d/depthwise_kernel"
    assert got[("block1a_bn", 0)] == f"{scope}/blocks_0/tpu_batch_normalization/gamma"  # no expansion: shifted
    assert got[("block1a_project_conv", 0)] == f"{scope}/blocks_0/conv2d/kernel"
    assert got[("block1a_project_bn", 2)] == f"{scope}/blocks_0/tpu_batch_normalization_1/moving_mean"
    assert got[("block2a_expand_conv", 0)] == f"{scope}/blocks_1/conv2d/kernel"
    assert got[("block2a_expand_bn", 1)] == f"{scope}/blocks_1/tpu_batch_normalization/beta"
    assert got[("block2a_bn", 0)] == f"{scope}/blocks_1/tpu_batch_normalization_1/gamma"
    assert got[("block2a_project_conv", 0)] == f"{scope}/blocks_1/conv2d_1/kernel"
    assert got[("block2a_project_bn", 3)] == f"{scope}/blocks_1/tpu_batch_normalization_2/moving_variance"
    assert got[("block7a_project_conv", 0)] == f"{scope}/blocks_15/conv2d_1/kernel"
    assert got[("top_conv", 0)] == f"{scope}/head/conv2d/kernel"
    assert got[("top_bn", 3)] == f"{scope}/head/tpu_batch_normalization/moving_variance"
    assert got[("predictions", 0)] == f"{scope}/head/dense/kernel"
    assert got[("predictions", 1)] == f"{scope}/head/dense/bias"


@pytest.mark.parametrize("phi", [0, 1, 2, 3, 4])
def test_variable_map_covers_every_weight_once_with_the_official_names(phi):
    model = keras_effnet.build(phi, family="lite", input_shape=(32, 32, 3))
    assert lite_checkpoint.model_variant(model) == phi
    mapping = lite_checkpoint.variable_map(model)
    weights = {
        (layer.name, i) for layer in model.layers if layer.name != "normalization" for i in range(len(layer.weights))
    }
    keys = [(layer, index) for layer, index, _ in mapping]
    names = [name for _, _, name in mapping]
    assert len(keys) == len(set(keys)) and set(keys) == weights
    assert len(names) == len(set(names))
    official = official_variables(phi)
    assert set(names) == set(official)
    for layer, index, name in mapping:
        assert tuple(model.get_layer(layer).weights[index].shape) == official[name], (layer, name)


def test_another_variant_is_refused_naming_both(tmp_path, model0):
    prefix = str(tmp_path / "efficientnet-lite1" / "model.ckpt")
    write_checkpoint(prefix, fake_values(1, seed=1, ema=False))
    before = [np.asarray(w).copy() for w in model0.weights]
    with pytest.raises(
        ValueError, match=r"^weights: checkpoint .* is efficientnet-lite1 but the model is efficientnet-lite0"
    ):
        lite_checkpoint.load(model0, prefix)
    for b, w in zip(before, model0.weights):
        np.testing.assert_array_equal(b, np.asarray(w))


def test_a_missing_variable_is_refused_and_nothing_is_set(lite0, model0):
    before = [np.asarray(w).copy() for w in model0.weights]
    with pytest.raises(ValueError, match=f"has no variable '{MISSING}'.*'block4a_dwconv'") as info:
        lite_checkpoint.load(model0, lite0["broken"])
    assert "\n" not in str(info.value)
    for b, w in zip(before, model0.weights):
        np.testing.assert_array_equal(b, np.asarray(w))


def test_a_shape_mismatch_names_the_layer_and_both_shapes(tmp_path, lite0, model0):
    tensors = dict(lite0["tensors"])
    name = "efficientnet-lite0/head/conv2d/kernel" + EMA
    tensors[name] = np.zeros((1, 1, 320, 1000), np.float32)
    prefix = str(tmp_path / "model.ckpt")
    write_checkpoint(prefix, tensors)
    with pytest.raises(
        ValueError,
        match=r"layer 'top_conv' weight 0 has shape \(1, 1, 320, 1280\) in the model "
        r"but .* has shape \(1, 1, 320, 1000\)",
    ):
        lite_checkpoint.load(model0, prefix)


def test_unsafe_tarball_members_are_refused(tmp_path, model0):
    payload = tmp_path / "payload"
    payload.write_text("x")
    tarball = tmp_path / "evil.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(str(payload), arcname="../evil")
    existed = os.path.exists(os.path.join(tempfile.gettempdir(), "evil"))
    with pytest.raises(ValueError, match=r"unsafe member '\.\./evil'"):
        lite_checkpoint.load(model0, str(tarball))
    assert existed or not os.path.exists(os.path.join(tempfile.gettempdir(), "evil"))


def test_build_refuses_other_classes_other_families_and_points_imagenet_to_the_tarball(lite0):
    with pytest.raises(ValueError, match="1000-class head; include_top=True needs classes=1000, got classes=10"):
        keras_effnet.build(0, family="lite", input_shape=(32, 32, 3), classes=10, weights=lite0["prefix"])
    with pytest.raises(ValueError, match="is a TensorFlow checkpoint, which loads into family='lite' only"):
        keras_effnet.build(0, input_shape=(32, 32, 3), weights=lite0["tarball"])
    with pytest.raises(
        ValueError,
        match=r"weights='imagenet' exists for .* download the official checkpoint "
        r"https://storage\.googleapis\.com/cloud-tpu-checkpoints/efficientnet/lite/"
        r"efficientnet-lite2\.tar\.gz and pass its path as weights=",
    ):
        keras_effnet.build(2, family="lite", weights="imagenet")
