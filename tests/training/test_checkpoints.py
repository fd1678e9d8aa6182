"""Checkpoint and resume: every recorded epoch is in a checkpoint, mid-epoch checkpoints continue the same
data order, a model_dir holding another run is refused, --overwrite starts over, files are 0644.

In-process runs of the real loop on a tiny convolutional model (`model_fn`), so each takes seconds;
the B0 kill-and-resume of a real process is in test_train_e2e.py.
"""

import os
import stat

import pytest

from training import checkpoints, loop, schedule, synthetic
from training.config import ConfigError, TrainConfig


def tiny_model(config, num_classes, *, image_size=None):
    from keras_effnet import keras_versions

    keras = keras_versions.keras3()
    size = image_size or config.image_size
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, name="conv")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Activation("relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return synthetic.generate(
        str(tmp_path_factory.mktemp("ckpt") / "data"), train_per_class=4, val_per_class=1, image_size=64, seed=0
    )


def _config(data_dir, model_dir, **kw):
    base = dict(
        data_dir=data_dir,
        out=str(model_dir),
        image_size=32,
        batch_size=8,
        epochs=2,
        steps_per_epoch=4,
        strategy="one_device",
        verbose=0,
        tensorboard=False,
        steps_per_loop=1,
    )
    return TrainConfig(**{**base, **kw})


class Stop(Exception):
    pass


def _stop_at(monkeypatch, global_step):
    """Interrupt the run when the loop asks for the rate of `global_step` (0-based): steps before it are done."""
    rate = schedule.learning_rate

    def patched(step, **kw):
        if step == global_step:
            raise Stop
        return rate(step, **kw)

    monkeypatch.setattr(schedule, "learning_rate", patched)


def test_a_mid_epoch_checkpoint_resumes_the_same_data_order(tmp_path, data_dir, monkeypatch):
    whole = loop.run(_config(data_dir, tmp_path / "whole"), model_fn=tiny_model)
    cut = str(tmp_path / "cut")
    _stop_at(monkeypatch, 3)  # inside epoch 1: the checkpoint of global step 3 holds steps 1-3 of epoch 1
    with pytest.raises(Stop):
        loop.run(_config(data_dir, cut, checkpoint_every_steps=3), model_fn=tiny_model)
    monkeypatch.undo()
    assert checkpoints.read_metrics(cut)["epochs"] == []
    state = checkpoints.read_json(os.path.join(cut, "checkpoints", "state-3.json"))
    assert (state["epoch"], state["step"], state["history"]) == (0, 3, [])
    logs = []
    resumed = loop.run(_config(data_dir, cut, checkpoint_every_steps=3), model_fn=tiny_model, log=logs.append)
    assert any("global step 3 (after epoch 0, step 3 of epoch 1)" in line for line in logs), logs
    # Same data order and state: the epoch losses of the resumed run equal the uninterrupted run's.
    for a, b in zip(whole["epochs"], resumed["epochs"]):
        assert a["epoch"] == b["epoch"]
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-5), (a, b)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4, abs=1e-5), (a, b)


def test_another_configuration_is_refused_naming_the_fields_and_overwrite_starts_over(tmp_path, data_dir):
    model_dir = tmp_path / "run"
    loop.run(_config(data_dir, model_dir, epochs=1), model_fn=tiny_model)
    before = sorted(os.listdir(model_dir))
    with pytest.raises(ConfigError, match=r"differs in: batch_size \(8 there, 4 now\), seed \(0 there, 1 now\)"):
        loop.run(_config(data_dir, model_dir, epochs=1, batch_size=4, seed=1), model_fn=tiny_model)
    assert sorted(os.listdir(model_dir)) == before
    # Changing what does not alter the computation (more epochs, the loop length) resumes.
    logs = []
    result = loop.run(_config(data_dir, model_dir, epochs=2, steps_per_loop=2), model_fn=tiny_model, log=logs.append)
    assert [e["epoch"] for e in result["epochs"]] == [1, 2] and any("resumed" in line for line in logs)
    logs = []
    result = loop.run(
        _config(data_dir, model_dir, epochs=1, seed=1, overwrite=True), model_fn=tiny_model, log=logs.append
    )
    assert [e["epoch"] for e in result["epochs"]] == [1] and not any("resumed" in line for line in logs)
    assert checkpoints.read_json(str(model_dir / "run.json"))["config"]["seed"] == 1


def test_outputs_are_0644_and_no_temporary_is_left(tmp_path, data_dir):
    model_dir = tmp_path / "run"
    old = os.umask(0o022)
    try:
        loop.run(_config(data_dir, model_dir, epochs=1, tensorboard=True), model_fn=tiny_model)
    finally:
        os.umask(old)
    for root, _, files in os.walk(model_dir):
        for name in files:
            if "synthetic" in root:
                continue
            assert not name.startswith(".") and not name.endswith(".tmp"), name
            mode = stat.S_IMODE(os.stat(os.path.join(root, name)).st_mode)
            assert mode == 0o644, (os.path.join(root, name), oct(mode))


def test_steps_per_loop_gives_the_same_training(tmp_path, data_dir):
    """Several steps per graph call (sums kept on the device) train exactly like one step per call."""
    one = loop.run(_config(data_dir, tmp_path / "one", epochs=1), model_fn=tiny_model)
    three = loop.run(
        _config(data_dir, tmp_path / "three", epochs=1, steps_per_loop=3), model_fn=tiny_model
    )  # 3 + 1 steps
    assert three["epochs"][0]["loss"] == pytest.approx(one["epochs"][0]["loss"], rel=1e-4)
    assert three["epochs"][0]["accuracy"] == one["epochs"][0]["accuracy"]
