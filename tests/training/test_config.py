"""training.config: defaults for small data, filled per optimizer and variant; bad values name the field."""

import pytest

from training.config import DEFAULT_LEARNING_RATE, DEFAULT_WEIGHT_DECAY, TrainConfig


def test_defaults_suit_small_data():
    c = TrainConfig().validated()
    assert c.optimizer == "adamw" and c.schedule == "cosine" and c.bn_momentum == 0.9
    assert c.learning_rate == DEFAULT_LEARNING_RATE["adamw"] and c.weight_decay == DEFAULT_WEIGHT_DECAY["adamw"]
    assert c.image_size == 224  # B0's native resolution
    assert TrainConfig(phi=3).validated().image_size == 300
    assert TrainConfig(phi=1, family="lite").validated().image_size == 240
    assert TrainConfig(optimizer="rmsprop").validated().learning_rate == 0.016


@pytest.mark.parametrize(
    "field, value",
    [
        ("optimizer", "adam"),
        ("augment", "autoaugment"),
        ("mixed_precision", "fp8"),
        ("strategy", "tpu"),
        ("epochs", 0),
        ("batch_size", 2.5),
        ("image_size", 16),
        ("label_smoothing", 1.0),
        ("ema_decay", -0.1),
        ("learning_rate", 0.0),
        ("cpu_replicas", 0),
        ("phi", -1),
        ("jit_compile", "yes"),
        ("label_noise", 3),
        ("dataset", "imagenet"),
    ],
)
def test_bad_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value}).validated()


def test_cross_field_checks(tmp_path):
    with pytest.raises(ValueError, match="data_dir is required"):
        TrainConfig(dataset="folder").validated()
    with pytest.raises(ValueError, match="label_noise"):
        TrainConfig(dataset="folder", data_dir=str(tmp_path), label_noise=5).validated()
    with pytest.raises(ValueError, match="init_from"):
        TrainConfig(init_from=str(tmp_path / "missing.keras")).validated()
