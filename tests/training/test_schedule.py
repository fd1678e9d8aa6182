"""training.schedule: the learning-rate and image-size schedules are pure functions with the documented shape."""

import math

import pytest

from training import schedule


def test_linear_scaling_per_256():
    assert schedule.scaled_learning_rate(0.016, 256) == pytest.approx(0.016)
    assert schedule.scaled_learning_rate(0.016, 64) == pytest.approx(0.004)


def test_warmup_then_cosine():
    kw = dict(base=1.0, total_steps=110, warmup_steps=10, kind="cosine")
    warm = [schedule.learning_rate(s, **kw) for s in range(10)]
    assert warm == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert schedule.learning_rate(10, **kw) == pytest.approx(1.0)
    assert schedule.learning_rate(60, **kw) == pytest.approx(0.5)
    assert schedule.learning_rate(110, **kw) == pytest.approx(0.0, abs=1e-12)
    after = [schedule.learning_rate(s, **kw) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(after, after[1:]))


def test_exponential_is_the_papers_staircase():
    kw = dict(base=0.016, total_steps=10_000, warmup_steps=0, kind="exponential", steps_per_epoch=100)
    assert schedule.learning_rate(0, **kw) == pytest.approx(0.016)
    assert schedule.learning_rate(239, **kw) == pytest.approx(0.016)  # 2.4 epochs = 240 steps
    assert schedule.learning_rate(240, **kw) == pytest.approx(0.016 * 0.97)
    assert schedule.learning_rate(2400, **kw) == pytest.approx(0.016 * 0.97**10)


def test_constant_and_bad_arguments():
    assert schedule.learning_rate(5, base=0.1, total_steps=10, kind="constant") == 0.1
    with pytest.raises(ValueError, match="schedule must be one of"):
        schedule.learning_rate(0, base=0.1, total_steps=10, kind="step")
    with pytest.raises(ValueError, match="total_steps"):
        schedule.learning_rate(0, base=0.1, total_steps=0)


def test_progressive_sizes_grow_to_the_final_size():
    sizes = schedule.progressive_sizes(64, 8)
    assert sizes[0] == 32 and sizes[-1] == 64
    assert sizes == sorted(sizes) and len(set(sizes)) == 4
    assert all(s % 8 == 0 and s >= 32 for s in sizes)
    assert schedule.progressive_sizes(224, 3) == [112, 168, 224]
    assert schedule.progressive_sizes(64, 1) == [64]
    assert schedule.progressive_sizes(32, 5) == [32] * 5
    with pytest.raises(ValueError, match="epochs"):
        schedule.progressive_sizes(64, 0)


def test_cosine_is_continuous_at_the_end_of_warmup():
    kw = dict(base=2.0, total_steps=50, warmup_steps=5)
    assert math.isclose(schedule.learning_rate(4, **kw), schedule.learning_rate(5, **kw))
