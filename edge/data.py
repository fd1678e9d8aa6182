"""What edge/ reads: a keras_effnet model file and the trainer's JPEG folders.

The folders go through the trainer's own loader (`training.data`), so QAT fine-tunes and export calibrates on
exactly the images, the decoding and the resizing that training used. This module only adds the checks edge/ needs (a model file that
is missing, corrupt or not made by keras_effnet; a model whose classes do not match the folders).
"""

from __future__ import annotations

import dataclasses
import os
import zipfile

import numpy as np

from keras_effnet import keras_versions
from keras_effnet import twin as twin_lib
from training import data as training_data


def load_model(path: str):
    """A Keras 3 model saved by `training.train` (or any `model.save`) that keras_effnet built.

    Raises FileNotFoundError for a missing file and ValueError for a file that is not a loadable .keras model
    or a model that keras_effnet did not build (its twin cannot be made, so it cannot be quantized).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model: {path!r} does not exist (expected a .keras file written by training.train).")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"model: {path!r} is not a Keras .keras file (not a zip archive; corrupt or wrong format).")
    keras = keras_versions.keras3()
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # noqa: BLE001 - Keras raises many types for a bad archive; each becomes this one error
        raise ValueError(
            f"model: {path!r} could not be loaded as a Keras model ({type(exc).__name__}: {exc})."
        ) from None
    try:
        twin_lib.spec_from_model(model)
    except ValueError as exc:
        raise ValueError(f"model: {path!r}: {exc}") from None
    shape = model.input_shape
    if len(shape) != 4 or shape[1] is None or shape[2] is None or shape[1] != shape[2] or shape[3] != 3:
        raise ValueError(f"model: {path!r} must take fixed square RGB images (N, S, S, 3), got input shape {shape}.")
    return model


@dataclasses.dataclass(frozen=True)
class EvalSet:
    images: np.ndarray  # float32 (N, S, S, 3), 0..255
    labels: np.ndarray  # int (N,)
    class_names: tuple[str, ...]


def validation_set(
    splits: training_data.Splits, image_size: int, *, limit: int | None = None, batch_size: int = 64
) -> EvalSet:
    """The val images of `splits` (`training.data.load_splits`) decoded and resized as the trainer's eval
    pipeline does; the first `limit` images in class order when `limit` is given (spread over classes: every
    class contributes before any contributes twice)."""
    files, labels = list(splits.val_files), list(splits.val_labels)
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be None or an integer >= 1, got {limit!r}.")
        order = training_data.round_robin(labels)[:limit]
        files, labels = [files[i] for i in order], [labels[i] for i in order]
    ds = training_data.make_dataset(
        files,
        labels,
        image_size=image_size,
        batch_size=batch_size,
        training=False,
        augment="none",
        pil_files=splits.pil_files,
    )
    images, targets = [], []
    for x, y in ds:
        images.append(x.numpy())
        targets.append(y.numpy())
    return EvalSet(np.concatenate(images), np.concatenate(targets).astype(np.int64), splits.class_names)


def folder_images(folder: str, n: int, image_size: int, *, seed: int = 0) -> np.ndarray:
    """`n` images (float32, N x S x S x 3, 0..255, resized like eval) from anywhere under `folder`, labelled or
    not: every decodable image file in it and its sub-folders, a seeded sample of `n` when there are more.

    Raises ValueError when the folder holds no decodable image (naming the first files it skipped).
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise ValueError(f"calibration_dir: {folder!r} is not a folder.")
    files = sorted(
        os.path.join(root, name) for root, dirs, names in os.walk(folder) for name in names if not name.startswith(".")
    )
    good, bad = [], []
    for f in files:
        (bad if training_data.check_image(f) else good).append(f)
    if not good:
        detail = f" (skipped {len(bad)} file(s), first: {bad[0]!r})" if bad else " (it is empty)"
        raise ValueError(f"calibration_dir: {folder!r} holds no decodable image{detail}.")
    rng = np.random.default_rng(seed)
    if len(good) > n:
        good = sorted(rng.choice(good, size=n, replace=False).tolist())
    ds = training_data.make_dataset(
        good, [0] * len(good), image_size=image_size, batch_size=len(good), training=False, augment="none"
    )
    return next(iter(ds))[0].numpy()
