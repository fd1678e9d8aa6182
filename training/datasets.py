"""Where a run's images come from: the synthetic set, Imagenette/Imagewoof archives, or a user folder.

Imagenette and Imagewoof are fastai's archives: a .tgz
holding `<name>/train/<wnid>/*.JPEG`, `<name>/val/<wnid>/*.JPEG` and, for
Imagenette, `noisy_imagenette.csv` whose `noisy_labels_<k>` columns give labels
with k% of the training labels changed. The archive is downloaded once into
`root`, unpacked into a temporary directory and renamed into place, so an
interrupted download or unpacking never leaves a half dataset that later runs
would trust.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import shutil
import tarfile
import tempfile
import urllib.request

FASTAI_URL = "https://s3.amazonaws.com/fast-ai-imageclas/"
ARCHIVES = {
    ("imagenette", "160"): "imagenette2-160",
    ("imagenette", "320"): "imagenette2-320",
    ("imagenette", "full"): "imagenette2",
    ("imagewoof", "160"): "imagewoof2-160",
    ("imagewoof", "320"): "imagewoof2-320",
    ("imagewoof", "full"): "imagewoof2",
}
NOISE_COLUMNS = (0, 1, 5, 25, 50)


def default_root() -> str:
    return os.path.join(os.path.expanduser("~"), ".keras", "datasets")


def download_fastai(name: str, size: str = "160", root: str | None = None, *, base_url: str = FASTAI_URL) -> str:
    """The directory of fastai's `name` ("imagenette" or "imagewoof") at `size`, downloading it if needed."""
    if (name, str(size)) not in ARCHIVES:
        raise ValueError(
            f"no fastai archive for dataset={name!r}, size={size!r}; allowed datasets imagenette, imagewoof "
            "and sizes '160', '320', 'full'."
        )
    archive = ARCHIVES[(name, str(size))]
    root = os.path.abspath(root or default_root())
    target = os.path.join(root, archive)
    if os.path.isdir(os.path.join(target, "train")) and os.path.isdir(os.path.join(target, "val")):
        return target
    os.makedirs(root, exist_ok=True)
    url = base_url.rstrip("/") + "/" + archive + ".tgz"
    tgz = os.path.join(root, archive + ".tgz")
    if not os.path.exists(tgz):
        fd, partial = tempfile.mkstemp(prefix=f".{archive}-", suffix=".tgz.part", dir=root)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
                shutil.copyfileobj(response, out, length=1 << 20)
            os.replace(partial, tgz)
        except Exception as e:
            if os.path.exists(partial):
                os.remove(partial)
            raise RuntimeError(f"could not download {url} into {root!r}: {e}") from e
    unpack = tempfile.mkdtemp(prefix=f".{archive}-", dir=root)
    try:
        with tarfile.open(tgz, "r:gz") as tar:
            tar.extractall(unpack, filter="data")
        inner = os.path.join(unpack, archive)
        if not (os.path.isdir(os.path.join(inner, "train")) and os.path.isdir(os.path.join(inner, "val"))):
            raise ValueError(f"archive {tgz!r} does not hold {archive}/train and {archive}/val.")
        if os.path.exists(target):
            shutil.rmtree(target)
        os.replace(inner, target)
    except tarfile.TarError as e:
        os.remove(tgz)  # a corrupt download: fetch it again next time
        raise RuntimeError(
            f"archive {tgz!r} from {url} is not a valid .tgz ({e}); removed it, run again to download."
        ) from e
    finally:
        shutil.rmtree(unpack, ignore_errors=True)
    return target


def apply_label_noise(splits, percent: int):
    """`splits` with train labels from noisy_imagenette.csv's `noisy_labels_<percent>` column.

    Files are matched by their path relative to the dataset directory
    (`train/<wnid>/<file>`). A train file missing from the CSV, or a noisy
    label that is not one of the class folders, is an error.
    """
    if percent not in NOISE_COLUMNS:
        raise ValueError(f"label_noise must be one of {NOISE_COLUMNS}, got {percent!r}.")
    path = os.path.join(splits.data_dir, "noisy_imagenette.csv")
    if not os.path.exists(path):
        raise ValueError(f"label_noise={percent} needs {path!r} (Imagenette's label-noise file), which does not exist.")
    column = f"noisy_labels_{percent}"
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if column not in (reader.fieldnames or ()):
            raise ValueError(f"{path!r} has no column {column!r} (columns: {reader.fieldnames}).")
        noisy = {row["path"].replace("\\", "/"): row[column] for row in reader}
    index = {name: i for i, name in enumerate(splits.class_names)}
    labels = []
    for f in splits.train_files:
        rel = os.path.relpath(f, splits.data_dir).replace(os.sep, "/")
        if rel not in noisy:
            raise ValueError(f"{rel!r} is not listed in {path!r}.")
        if noisy[rel] not in index:
            raise ValueError(f"{path!r} gives {rel!r} the label {noisy[rel]!r}, which is not a class folder.")
        labels.append(index[noisy[rel]])
    return dataclasses.replace(splits, train_labels=tuple(labels))


FASTAI_DATASETS = ("imagenette", "imagewoof")


def dataset_folder(kind: str, data_dir: str | None, *, fastai_size: str = "160", synthetic_options=None) -> str:
    """The folder a dataset kind is read from, made ready once: the one place that decides it.

    `synthetic`: generated into `data_dir` (kept and reused; `synthetic_options` go to `synthetic.generate`);
    `imagenette`, `imagewoof`: fastai's archive, downloaded once under `data_dir` (None: `default_root()`);
    `folder` (anything else): `data_dir` as given. The trainer and the study both call this.
    """
    if kind == "synthetic":
        from training import synthetic

        return synthetic.generate(data_dir, **(synthetic_options or {}))
    if kind in FASTAI_DATASETS:
        return download_fastai(kind, fastai_size, data_dir)
    return data_dir
