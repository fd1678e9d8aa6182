"""Shared fixtures of the edge/ tests: a real JPEG dataset (training.synthetic, through the trainer's loader),
tiny keras_effnet models saved as .keras files, and one export of every format shared by several tests."""

import os
import subprocess
import sys

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

SIZE = 32
CLASSES = 3
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_module(module, *args, timeout=600, cwd=None):
    """`python -m module args...` in a fresh process (from `cwd`, default a neutral folder: the packages are
    installed); returns the CompletedProcess (check it yourself)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd or os.path.expanduser("~"),
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


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


def _probe(tmp_path_factory, dataset, family, widest=None):
    """A keras_effnet model whose classifier is set from its own pooled features of the training images (class
    means of the standardised features, scaled): outputs with wide margins, so that a top-1 comparison between
    two runtimes does not flip on rounding noise, made in seconds (no backpropagation). The random backbone's
    features say little about the shapes, so its accuracy is near chance: it is a fixture for runtime agreement,
    not a trained model.

    Standardising divides each feature by its spread over the images, which for the random backbone is tiny for
    many features: float runtimes agree on them, but 8-bit rounding of the same features is amplified into the
    decision. `widest=N` reads only the N features that vary most, for comparisons between integer runtimes."""
    import keras_effnet
    from keras_effnet import keras_versions
    from training import data as training_data

    keras = keras_versions.keras3()
    model = keras_effnet.build(0, family=family, input_shape=(SIZE, SIZE, 3), classes=CLASSES)
    features = keras.Model(model.input, model.get_layer("avg_pool").output)
    splits = training_data.load_splits(dataset)
    train = training_data.make_dataset(
        list(splits.train_files),
        list(splits.train_labels),
        image_size=SIZE,
        batch_size=64,
        training=False,
        augment="none",
    )
    x, y = [], []
    for images, labels in train:
        x.append(features.predict(images, verbose=0))
        y.append(labels.numpy())
    x, y = np.concatenate(x), np.concatenate(y)
    mean, std = x.mean(0), x.std(0) + 1e-6
    z = (x - mean) / std
    centres = np.stack([z[y == c].mean(0) for c in range(CLASSES)], axis=1)  # (features, classes)
    if widest:
        centres[np.argsort(std)[:-widest]] = 0.0
    w = centres / np.linalg.norm(centres, axis=0, keepdims=True) * 0.5
    kernel = w / std[:, None]
    bias = -(mean / std) @ w
    model.get_layer("predictions").set_weights([kernel.astype("float32"), bias.astype("float32")])
    folder = tmp_path_factory.mktemp(f"edge_probe_{family}")
    path = folder / "model.keras"
    model.save(str(path))
    (folder / "labels.txt").write_text("".join(f"{c}\n" for c in splits.class_names))
    return str(path)


@pytest.fixture(scope="session")
def probe_path(tmp_path_factory, dataset):
    """The probe B0 (see `_probe`)."""
    return _probe(tmp_path_factory, dataset, "efficientnet")


@pytest.fixture(scope="session")
def lite0_probe_path(tmp_path_factory, dataset):
    """The probe Lite0, reading its 16 widest features (see `_probe`): the QAT test compares two integer
    computations with it."""
    return _probe(tmp_path_factory, dataset, "lite", widest=16)


@pytest.fixture(scope="session")
def b0_export(tmp_path_factory, probe_path, dataset):
    """Every format of the probe B0 at 32 px, the QAT model fine-tuned for 2 steps first; (report, out_dir).
    int8_mixed is off here: `test_quantization_debugger_ranks_real_layers` and
    `test_fewest_float_layers_doubles_then_bisects` test its two parts."""
    from edge import export, formats

    out = str(tmp_path_factory.mktemp("edge_export") / "E")
    report = export.export_all(
        probe_path,
        dataset,
        out,
        formats=formats.FORMATS,
        qat_epochs=1,
        steps_per_epoch=2,
        batch_size=8,
        num_calibration=6,
        latency_runs=3,
        diagnostics=True,
        mixed_int8=False,  # the search's time depends on whether int8 loses a 12-image point; tested on its own
    )
    return report, out
