"""Helpers of tests/study, importable by a unique name (two test folders each importing `conftest` would get
whichever was imported first)."""

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A real two-class JPEG folder (16 train / 8 val images per class, 32 px) from the synthetic generator."""
    from training import synthetic

    return synthetic.generate(
        str(tmp_path_factory.mktemp("data") / "tiny"), num_classes=2, train_per_class=16, val_per_class=8, image_size=32
    )


def fast_settings(**changes):
    """Study settings for CI: 32 px, one epoch, batch 8, two short rounds, Keras batch 1 only."""
    settings = dict(
        image_size=32,
        epochs=1,
        batch_size=8,
        rounds=2,
        sample_s=0.02,
        throughput_batch=4,
        measure_classes=2,
        calibration_samples=2,
        backends=("keras_b1",),
    )
    settings.update(changes)
    return settings


def check_png(path):
    """A real PNG image with more than one colour (something was drawn), not just a file."""
    from PIL import Image

    assert os.path.getsize(path) > 1000, path
    with Image.open(path) as im:
        assert im.format == "PNG", path
        assert im.width > 200 and im.height > 200, (path, im.size)
        extrema = im.convert("L").getextrema()
        assert extrema[0] < extrema[1], f"{path} is a single colour"
