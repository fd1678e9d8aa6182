"""What an export reads, checked and loaded before anything is written: the model, its class names, the
evaluation images and the calibration images.

The class names come from --labels, else labels.txt beside the model, else the class folders of --data_dir;
the data folder is scanned once (`training.data.load_splits`) and that scan is what the evaluation reads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os

import numpy as np

from edge import data as data_lib
from edge.export_config import ExportConfig
from edge.formats import LABELS
from training import data as training_data


@dataclasses.dataclass(frozen=True)
class Inputs:
    """Everything export needs, checked and loaded before anything is written."""

    model: object
    model_path: str
    class_names: tuple[str, ...]
    labels_source: str
    eval_images: np.ndarray
    eval_labels: np.ndarray | None  # None: the images are not labelled (no accuracy)
    eval_source: str
    representative: np.ndarray | None
    calibration_source: str | None
    version: str
    splits: training_data.Splits | None = None  # the one scan of --data_dir (QAT fine-tunes on it)


def read_labels(path: str) -> tuple[str, ...]:
    with open(path, encoding="utf-8") as f:
        names = tuple(line.strip() for line in f if line.strip())
    if not names:
        raise ValueError(f"labels: {path!r} holds no class name (expected one per line).")
    return names


def file_version(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()[:12]


def class_names(config: ExportConfig, splits: training_data.Splits | None, classes: int) -> tuple[tuple[str, ...], str]:
    """The model's class names and where they come from: --labels, else labels.txt beside the model, else the
    class folders of --data_dir; raises ValueError when none is given or they do not fit `classes` outputs."""
    beside = os.path.join(os.path.dirname(os.path.abspath(config.model)), LABELS)
    if config.labels:
        names, source = read_labels(config.labels), os.fspath(config.labels)
    elif os.path.isfile(beside):
        names, source = read_labels(beside), beside
    elif splits is not None:
        names, source = tuple(splits.class_names), f"the class folders of {config.data_dir}"
    else:
        raise ValueError(
            f"labels: the model has no {LABELS} beside it; give --labels=FILE (one class name per "
            f"line, {classes} lines) or --data_dir with one folder per class."
        )
    if len(names) != classes:
        raise ValueError(
            f"labels: {source} names {len(names)} classes but the model {config.model!r} has {classes} outputs."
        )
    if len(set(names)) != len(names):
        raise ValueError(f"labels: {source} names a class twice.")
    return names, source


def calibration_set(
    config: ExportConfig, splits: training_data.Splits | None, image_size: int
) -> tuple[np.ndarray | None, str | None]:
    """The calibration images and where they come from: --calibration_dir, else the train images of
    --data_dir, else none."""
    if config.calibration_dir:
        representative = data_lib.folder_images(
            config.calibration_dir, config.num_calibration, image_size, seed=config.seed
        )
        return representative, f"{len(representative)} images under {config.calibration_dir}"
    if splits is not None:
        representative = training_data.representative_images(
            splits, config.num_calibration, image_size, seed=config.seed
        )
        return representative, f"{len(representative)} training images of {config.data_dir}"
    return None, None


def load_inputs(config: ExportConfig) -> Inputs:
    """Load and check the model, labels and images of `config`; raises ValueError/FileNotFoundError naming the
    flag for anything a user must fix."""
    model = data_lib.load_model(config.model)
    image_size = int(model.input_shape[1])
    classes = int(model.output_shape[-1])
    splits = training_data.load_splits(config.data_dir) if config.data_dir else None
    names, source = class_names(config, splits, classes)
    eval_labels = None
    if splits is not None:
        unknown = [c for c in splits.class_names if c not in names]
        if unknown:
            raise ValueError(
                f"data_dir: {config.data_dir!r} has {len(splits.class_names)} classes {list(splits.class_names)} but "
                f"the model {config.model!r} has {classes} outputs named by {source}; not among them: {unknown[:5]}."
            )
        val = data_lib.validation_set(splits, image_size, limit=config.max_val_images)
        index = {c: i for i, c in enumerate(names)}
        eval_images = val.images
        eval_labels = np.asarray([index[val.class_names[y]] for y in val.labels], dtype=np.int64)
        eval_source = f"{len(eval_labels)} labelled validation images of {config.data_dir}"
    representative, cal_source = calibration_set(config, splits, image_size)
    if eval_labels is None:
        if representative is not None:
            eval_images, eval_source = representative, f"the {cal_source} (unlabelled: agreement only)"
        else:
            rng = np.random.default_rng(config.seed)
            eval_images = rng.uniform(0, 255, size=(8, image_size, image_size, 3)).astype(np.float32)
            eval_source = "8 random images (no images given: agreement with Keras only)"
    return Inputs(
        model=model,
        model_path=os.fspath(config.model),
        class_names=names,
        labels_source=source,
        eval_images=eval_images,
        eval_labels=eval_labels,
        eval_source=eval_source,
        representative=representative,
        calibration_source=cal_source,
        version=config.model_version or file_version(config.model),
        splits=splits,
    )
