"""The trainer applies one training contract to whatever a model_fn returns: ResNet-50 (keras.applications)
and keras_effnet's B0 go through the same `training.loop.run` and get the same BN momentum, sync BN and
zero-initialised classifier."""

import math

import pytest

from training import contract, loop, synthetic
from training import model as model_lib
from training.config import TrainConfig


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return synthetic.generate(
        str(tmp_path_factory.mktemp("contract") / "data"), train_per_class=1, val_per_class=1, image_size=64, seed=0
    )


def resnet50(config, num_classes, *, image_size=None):
    from keras_effnet import keras_versions

    keras = keras_versions.keras3()
    return keras.applications.ResNet50(weights=None, input_shape=(image_size, image_size, 3), classes=num_classes)


def test_resnet50_and_b0_get_the_same_treatment(tmp_path, data_dir):
    from keras_effnet import keras_versions

    keras = keras_versions.keras3()
    built = {}

    def capture(name, fn):
        def model_fn(config, num_classes, *, image_size=None):
            model = fn(config, num_classes, image_size=image_size)
            built.setdefault(name, model)  # the trained one; the trainer builds another to save in float32
            return model

        return model_fn

    # A momentum neither builder uses (keras.applications: 0.99; keras_effnet: 0.99), sync BN on, and a
    # vanishing rate: the loss then stays at its value for the initial weights.
    config = TrainConfig(
        data_dir=data_dir,
        image_size=32,
        batch_size=5,
        epochs=1,
        steps_per_epoch=1,
        bn_momentum=0.8,
        sync_bn=True,
        optimizer="sgd",
        learning_rate=1e-12,
        weight_decay=0.0,
        label_smoothing=0.0,
        augment="none",
        strategy="one_device",
        verbose=0,
        tensorboard=False,
    )
    results = {}
    for name, fn in (("resnet50", resnet50), ("b0", model_lib.build_model)):
        results[name] = loop.run(config.replace(out=str(tmp_path / name)), model_fn=capture(name, fn))

    treatments = {
        name: {k: v for k, v in r["contract"].items() if k != "batch_norm_layers"} for name, r in results.items()
    }
    assert (
        treatments["resnet50"]
        == treatments["b0"]
        == {"bn_momentum": 0.8, "sync_bn": True, "classifier": "predictions", "zero_init_head": True}
    )
    for name, model in built.items():
        bn = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
        assert len(bn) == results[name]["contract"]["batch_norm_layers"] > 40, name
        assert all(layer.momentum == 0.8 and layer.synchronized for layer in bn), name
        # Zero-initialised classifier: uniform predictions, so the cross-entropy is ln(10) exactly.
        assert results[name]["epochs"][0]["loss"] == pytest.approx(math.log(10), abs=1e-4), name
    # The saved models keep the momentum and drop the sync flag.
    for name in built:
        saved = keras.saving.load_model(str(tmp_path / name / "model.keras"), safe_mode=True)
        bn = [layer for layer in saved.layers if isinstance(layer, keras.layers.BatchNormalization)]
        assert all(layer.momentum == 0.8 and not layer.synchronized for layer in bn), name


def test_the_classifier_is_found_by_shape_not_by_name():
    from keras_effnet import keras_versions

    keras = keras_versions.keras3()
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(3, name="hidden")(inputs)
    head = keras.layers.Dense(3, name="logits")(keras.layers.Dense(16)(hidden))
    model = keras.Model(inputs, keras.layers.Softmax()(head))
    applied = contract.apply_contract(model, TrainConfig(zero_init_head=True))
    assert applied["classifier"] == "logits" and applied["batch_norm_layers"] == 0
    assert not model.get_layer("logits").get_weights()[0].any()
    assert model.get_layer("hidden").get_weights()[0].any()
