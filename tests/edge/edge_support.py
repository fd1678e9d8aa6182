"""Shared fixtures of the edge/ tests: a real JPEG dataset (training.synthetic, through the trainer's loader),
tiny keras_effnet models saved as .keras files, and one export of every format shared by several tests."""

import os
import subprocess
import sys

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)  # `edge` and `training` are top-level packages of the repository, not installed

SIZE = 32
CLASSES = 3


def run_module(module, *args, timeout=600):
    """`python -m module args...` from the repository root; returns the CompletedProcess (check it yourself)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO_ROOT)
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="session")
def dataset(tmp_path_factory):
    from training import synthetic

    root = tmp_path_factory.mktemp("edge_data") / "synthetic"
    return synthetic.generate(str(root), num_classes=CLASSES, train_per_class=8, val_per_class=4, image_size=SIZE)


def _saved_model(tmp_path_factory, family):
    import keras_effnet

    model = keras_effnet.build(0, family=family, input_shape=(SIZE, SIZE, 3), classes=CLASSES)
    path = tmp_path_factory.mktemp(f"edge_{family}") / "model.keras"
    model.save(str(path))
    return str(path)


@pytest.fixture(scope="session")
def b0_path(tmp_path_factory):
    return _saved_model(tmp_path_factory, "efficientnet")


@pytest.fixture(scope="session")
def lite0_path(tmp_path_factory):
    return _saved_model(tmp_path_factory, "lite")


@pytest.fixture(scope="session")
def b0_export(tmp_path_factory, b0_path, dataset):
    """Every format of B0 at 32 px, the QAT model fine-tuned for 2 steps first; (report, out_dir)."""
    from edge import export

    out = str(tmp_path_factory.mktemp("edge_export") / "E")
    report = export.export_all(
        b0_path, dataset, out, formats=export.FORMATS, qat_epochs=1, qat_steps_per_epoch=2, qat_batch_size=8,
        num_calibration=6, latency_runs=3, diagnostics=True,
    )
    return report, out
