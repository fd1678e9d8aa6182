"""training.finetune and training.imbalance: the recipe's stages, the pretrained sources, class weights, bad sources.

The learning check (a fine-tune from a locally made pretrained model beats
scratch; frozen statistics and the head stage leave the pretrained weights
bit-identical) is tests/training/test_finetune_learning.py.
"""

import os
import tarfile

import numpy as np
import pytest

import keras_effnet
from keras_effnet import lite_checkpoint
from training import checkpoints, finetune, imbalance, synthetic, train
from training.config import ConfigError, TrainConfig

QUIET = dict(strategy="one_device", tensorboard=False, verbose=0, image_size=32)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return synthetic.generate(
        str(tmp_path_factory.mktemp("ft") / "data"),
        num_classes=3,
        train_per_class=4,
        val_per_class=2,
        image_size=64,
        seed=0,
    )


@pytest.fixture(scope="module")
def b0():
    return keras_effnet.build(0, classes=3, input_shape=(32, 32, 3))


def test_plan_defaults_and_stages():
    assert finetune.plan(TrainConfig().validated()) is None  # no pretrained start: no recipe
    assert finetune.plan(TrainConfig(init_from="imagenet", finetune="off").validated()) is None
    plan = finetune.plan(TrainConfig(init_from="imagenet", epochs=15).validated())
    assert plan == finetune.Plan(
        head_epochs=3,
        unfreeze="all",
        bn_trainable=False,
        lr_scale=finetune.LR_SCALE,
        head_lr_scale=finetune.HEAD_LR_SCALE,
    )
    assert [plan.stage(e) for e in (1, 3, 4, 15)] == ["head", "head", "backbone", "backbone"]
    assert finetune.stage_steps(plan, 2, 15, 10) == (0, 30) and finetune.stage_steps(plan, 4, 15, 10) == (30, 120)
    assert finetune.plan(TrainConfig(init_from="imagenet", epochs=2).validated()).head_epochs == 1
    with pytest.raises(ConfigError, match="--head_epochs=5: expected at most --epochs"):
        finetune.plan(TrainConfig(init_from="imagenet", epochs=4, head_epochs=5).validated())
    with pytest.raises(ConfigError, match="--unfreeze=top: expected all, or a number"):
        TrainConfig(unfreeze="top").validated()


def test_what_trains_in_each_stage(b0):
    plan = finetune.Plan(head_epochs=1, unfreeze="all", bn_trainable=False, lr_scale=0.1)
    assert finetune.trainable_in_stage(b0, "head", plan) == {"predictions"}
    everything = finetune.trainable_in_stage(b0, "backbone", plan)
    assert "stem_conv" in everything and "top_conv" in everything and "predictions" in everything
    assert not any(name.endswith("bn") for name in everything) and "normalization" not in everything
    with_bn = finetune.trainable_in_stage(b0, "backbone", finetune.Plan(1, "all", True, 0.1))
    assert "stem_bn" in with_bn and "block3a_bn" in with_bn
    top2 = finetune.trainable_in_stage(b0, "backbone", finetune.Plan(1, "2", False, 0.1))
    assert finetune.block_names(b0)[-2:] == ["block6d", "block7a"]
    assert {n.split("_")[0] for n in top2} == {"block6d", "block7a", "top", "predictions"}
    assert finetune.trainable_in_stage(b0, "backbone", finetune.Plan(1, "0", False, 0.1)) == {"predictions"}
    finetune.set_stage(b0, "head", plan)
    assert [v.path for v in b0.trainable_variables] == ["predictions/kernel", "predictions/bias"]
    finetune.set_stage(b0, "backbone", plan)
    assert not b0.get_layer("stem_bn").trainable and b0.get_layer("stem_conv").trainable
    b0.trainable = True


def test_balanced_class_weights_change_the_loss_as_stated():
    import tensorflow as tf

    from keras_effnet import keras_versions
    from training import optimizer as optimizer_lib
    from training.trainer import Trainer

    keras = keras_versions.keras3()
    keras.utils.set_random_seed(0)
    labels = np.array([0, 0, 0, 0, 0, 0, 1, 2], np.int32)
    weights = imbalance.class_weights("balanced", labels, 3)
    np.testing.assert_allclose(weights, [8 / 18, 8 / 3, 8 / 3], rtol=1e-6)  # N / (C * n_c)
    assert imbalance.class_weights("none", labels, 3) is None
    inputs = keras.Input((4, 4, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="predictions")(x))
    images = np.random.default_rng(0).normal(size=(8, 4, 4, 3)).astype("float32")
    config = TrainConfig(label_smoothing=0.0).validated()
    probs = model(images).numpy()
    per_example = -np.log(probs[np.arange(8), labels])
    losses = {}
    for name, w in (("none", None), ("balanced", weights)):
        trainer = Trainer(
            config,
            tf.distribute.get_strategy(),
            model,
            optimizer_lib.make_optimizer(config, model, 1e-3),
            global_batch_size=8,
            jit_compile=False,
            class_weights=w,
        )
        losses[name] = float(trainer._replica_gradients(tf.constant(images), tf.constant(labels))[0])
        assert losses[name] == pytest.approx(imbalance.weighted_mean_loss(per_example, labels, w, 8), rel=1e-5)
    expected = (per_example[:6].sum() * 8 / 18 + per_example[6:].sum() * 8 / 3) / 8
    assert losses["balanced"] == pytest.approx(expected, rel=1e-5) and losses["balanced"] != pytest.approx(
        losses["none"]
    )


def _lite_tarball(root, phi=0):
    """A stand-in for the official efficientnet-lite0.tar.gz: a TF1 name-based checkpoint with EMA copies."""
    import tensorflow as tf

    model = keras_effnet.build(phi, family="lite", include_top=True, input_shape=(32, 32, 3))
    rng = np.random.default_rng(1)
    tensors = {}
    for layer_name, index, name in lite_checkpoint.variable_map(model):
        shape = tuple(model.get_layer(layer_name).weights[index].shape)
        value = rng.normal(size=shape).astype("float32") * 0.1
        if name.endswith("moving_variance"):
            value = np.abs(value) + 1.0
        tensors[name + lite_checkpoint.EMA_SUFFIX] = value
        tensors[name] = value + 1.0  # the raw variable: not what the trainer should take
    folder = os.path.join(root, f"efficientnet-lite{phi}")
    os.makedirs(folder)
    names = sorted(tensors)
    tf.raw_ops.SaveV2(
        prefix=os.path.join(folder, "model.ckpt"),
        tensor_names=names,
        shape_and_slices=[""] * len(names),
        tensors=[tensors[n] for n in names],
    )
    tarball = os.path.join(root, f"efficientnet-lite{phi}.tar.gz")
    with tarfile.open(tarball, "w:gz", compresslevel=1) as tar:
        tar.add(folder, arcname=f"efficientnet-lite{phi}")
    return tarball, tensors


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("sources"))
    tarball, tensors = _lite_tarball(root)
    garbage = os.path.join(root, "garbage", "efficientnet-lite0.tar.gz")
    os.makedirs(os.path.dirname(garbage))
    with open(garbage, "wb") as f:
        f.write(b"\x1f\x8b this is not a tarball")
    b0_keras = os.path.join(root, "b0.keras")
    keras_effnet.build(0, include_top=False, input_shape=(32, 32, 3)).save(b0_keras)
    return {"tarball": tarball, "tensors": tensors, "garbage": garbage, "b0_keras": b0_keras}


def test_a_lite_stand_in_tarball_is_accepted_by_init_from(sources, data_dir, tmp_path):
    from keras_effnet import keras_versions

    out = tmp_path / "run"
    code = train.main(
        [
            f"--data_dir={data_dir}",
            f"--out={out}",
            "--family=lite",
            f"--init_from={sources['tarball']}",
            "--epochs=1",
            "--head_epochs=1",
            "--batch_size=4",
            "--image_size=32",
            "--strategy=one_device",
            "--notensorboard",
            "--verbose=0",
        ]
    )
    assert code == 0
    model = keras_versions.keras3().saving.load_model(str(out / checkpoints.MODEL))
    ema = sources["tensors"][
        "efficientnet-lite0/blocks_3/depthwise_conv2d/depthwise_kernel" + lite_checkpoint.EMA_SUFFIX
    ]
    np.testing.assert_array_equal(model.get_layer("block3a_dwconv").weights[0].numpy(), ema)
    metrics = checkpoints.read_metrics(str(out))
    assert metrics["finetune"]["source"] == sources["tarball"] and metrics["epochs"][0]["stage"] == "head"
    assert model.output_shape[-1] == 3


@pytest.mark.parametrize("case", ["lite_tarball_into_b0", "b0_into_lite", "unreadable_tarball", "imagenet_for_lite"])
def test_a_source_that_does_not_fit_is_one_line_exit_2_and_nothing_written(case, sources, data_dir, tmp_path, capsys):
    family, source, words = {
        "lite_tarball_into_b0": ("efficientnet", sources["tarball"], "weights of the efficientnet family"),
        "b0_into_lite": ("lite", sources["b0_keras"], "another family or variant"),
        "unreadable_tarball": ("lite", sources["garbage"], "a readable official EfficientNet-Lite0 checkpoint"),
        "imagenet_for_lite": ("lite", "imagenet", "official tarball"),
    }[case]
    out = tmp_path / "run"
    code = train.main(
        [
            f"--data_dir={data_dir}",
            f"--out={out}",
            f"--family={family}",
            f"--init_from={source}",
            "--epochs=1",
            "--batch_size=4",
            "--image_size=32",
            "--strategy=one_device",
            "--verbose=0",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: --init_from={source}: expected") and words in err[0], err[0]
    assert not out.exists()
