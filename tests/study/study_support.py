import os
import sys

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)  # `training` is a top-level package of the repository, not installed


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A real two-class JPEG folder (8 train / 4 val images per class, 32 px) from the synthetic generator."""
    from training import synthetic

    return synthetic.generate(str(tmp_path_factory.mktemp("data") / "tiny"), num_classes=2, train_per_class=8,
                              val_per_class=4, image_size=32)


def fast_settings(**changes):
    """Study settings for CI: 32 px, one epoch, batch 8, few timing repetitions."""
    settings = dict(image_size=32, epochs=1, batch_size=8, min_reps=1, max_reps=2, budget_s=0.1,
                    throughput_batch=4, measure_classes=2, calibration_samples=2, formula_phis=(), baselines=())
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
