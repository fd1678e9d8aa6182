"""training.regularization: the adaptive rule (EfficientNetV2 section 4.2) as a pure function of image and data size."""

import pytest

from training import regularization as reg


def test_strength_ends_and_monotone():
    assert reg.strength(32, 500) == reg.strength(64, 10**6) == 0.0
    assert reg.strength(224, 100_000) == reg.strength(600, 10**7) == 1.0
    assert reg.strength(224, 1_000) == 0.5  # large images, little data: half strength
    sizes = [32, 64, 96, 128, 160, 192, 224, 300]
    data = [100, 1_000, 3_000, 10_000, 30_000, 100_000]
    for n in data:
        values = [reg.strength(s, n) for s in sizes]
        assert values == sorted(values)
    for s in sizes:
        values = [reg.strength(s, n) for n in data]
        assert values == sorted(values)


def test_small_images_get_weak_regularisation_large_get_strong():
    weak = reg.for_stage(32, 1_000)
    strong = reg.for_stage(224, 100_000)
    # At 32 px no crop at all (random-resized-crop at area 0.25 cuts the object away), flip only.
    assert weak.crop_scale_min == 1.0 and weak.drop_connect_rate == 0.0
    assert weak.randaugment_magnitude == 5.0 and weak.dropout_rate == pytest.approx(0.1)
    assert strong.crop_scale_min == pytest.approx(0.08) and strong.randaugment_magnitude == 15.0
    assert strong.dropout_rate == pytest.approx(0.2) and strong.drop_connect_rate == pytest.approx(0.2)
    mid = reg.for_stage(128, 10_000)
    assert strong.crop_scale_min < mid.crop_scale_min < weak.crop_scale_min
    assert weak.randaugment_magnitude < mid.randaugment_magnitude < strong.randaugment_magnitude
    assert weak.dropout_rate < mid.dropout_rate < strong.dropout_rate
    # The model's own rates set the strong end: B7's head dropout 0.5.
    assert reg.for_stage(600, 10**6, model_dropout=0.5).dropout_rate == pytest.approx(0.5)


def test_explicit_values_win_over_the_rule():
    r = reg.for_stage(32, 1_000, crop_scale_min=0.3, randaugment_magnitude=9, dropout_rate=0.4, drop_connect_rate=0.25)
    assert (r.crop_scale_min, r.randaugment_magnitude, r.dropout_rate, r.drop_connect_rate) == (0.3, 9.0, 0.4, 0.25)


def test_progressive_stages_grow_together():
    from training import schedule

    sizes = schedule.progressive_sizes(224, 8)
    stages = [reg.for_stage(s, 50_000) for s in sizes]
    for a, b in zip(stages, stages[1:]):
        assert b.crop_scale_min <= a.crop_scale_min and b.randaugment_magnitude >= a.randaugment_magnitude
        assert b.dropout_rate >= a.dropout_rate and b.drop_connect_rate >= a.drop_connect_rate
    assert stages[0].strength < stages[-1].strength


def test_table_and_bad_input():
    rows = reg.table()
    assert len(rows) == 15 and all(isinstance(r, reg.Regularization) for _, _, r in rows)
    for name, args in (("image_size", (0, 10)), ("num_train_images", (32, 0)), ("image_size", (True, 10))):
        with pytest.raises(ValueError, match=name):
            reg.strength(*args)


def test_apply_rates_sets_head_dropout_and_scales_stochastic_depth():
    import keras_effnet

    model = keras_effnet.build(0, classes=3, input_shape=(32, 32, 3), dropout_rate=0.2, drop_connect_rate=0.2)
    drops = {layer.name: layer.rate for layer in model.layers if layer.name.endswith("drop")}
    assert drops and max(drops.values()) < 0.2
    changed = reg.apply_rates(model, dropout_rate=0.05, drop_connect_rate=0.1, built_drop_connect_rate=0.2)
    assert changed == len(drops) + 1
    assert model.get_layer("top_dropout").rate == 0.05
    for name, rate in drops.items():
        assert model.get_layer(name).rate == pytest.approx(rate / 2)
    # Stages go back up as well as down: rates are always relative to the built ones.
    reg.apply_rates(model, dropout_rate=0.2, drop_connect_rate=0.2, built_drop_connect_rate=0.2)
    for name, rate in drops.items():
        assert model.get_layer(name).rate == pytest.approx(rate)


def test_for_config_uses_the_variant_dropout_and_explicit_fields():
    from training.config import ConfigError, TrainConfig

    b7 = reg.for_config(TrainConfig(phi=7), 600, 10**6)
    assert b7.dropout_rate == pytest.approx(0.5) and b7.drop_connect_rate == pytest.approx(0.2)
    mine = reg.for_config(TrainConfig(crop_scale_min=0.5, drop_connect_rate=0.05), 32, 1_000)
    assert mine.crop_scale_min == 0.5 and mine.drop_connect_rate == 0.05 and mine.dropout_rate == pytest.approx(0.1)
    for field, value in (
        ("crop_scale_min", 0.0),
        ("crop_scale_min", 1.5),
        ("randaugment_magnitude", 31),
        ("drop_connect_rate", 1.0),
    ):
        with pytest.raises(ConfigError, match=field):
            TrainConfig(**{field: value}).validated()
