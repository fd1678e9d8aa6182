"""One folder of class subfolders, split once into train and validation.

A user's photos usually come as `DIR/<class>/*`, not as Imagenette's
`DIR/train/<class>/*` + `DIR/val/<class>/*`. The trainer then holds out
`val_split` of every class (stratified: each class keeps its share, at least
one image on each side), chosen by a seeded permutation of the class's sorted
file names, so the split is a pure function of (folder contents, seed,
val_split). MediaPipe Model Maker's `Dataset.from_folder(...).split(0.8)` is the
same idea; scikit-learn's `train_test_split(stratify=...)` the same rule.

The split is written to the run's folder (`SPLIT_FILE`: the seed, the fraction
and both file lists, relative to the data folder). A resumed run reuses that
file rather than recomputing, so images added to the folder later cannot move
between train and validation mid-run; a run whose seed, fraction or folder
differ from the file is refused naming the fields, as is a folder from which a
listed image has gone. `keras-effnet-evaluate --run=OUT` evaluates exactly the
validation list.
"""

from __future__ import annotations

import json
import os
import zlib

import numpy as np

from training import data as data_lib
from training import decode as decode_lib

SPLIT_FILE = "split.json"
SPLIT_FIELDS = ("data_dir", "seed", "val_split")


def is_one_folder(data_dir: str) -> bool:
    """True when `data_dir` holds class folders directly (no `train` folder)."""
    return os.path.isdir(data_dir) and not os.path.isdir(os.path.join(data_dir, "train"))


def val_count(n: int, val_split: float) -> int:
    """Images of a class of `n` held out: round(n * val_split), at least 1 and at most n - 1."""
    return int(min(n - 1, max(1, round(n * val_split))))


def stratified_split(files, labels, *, val_split: float, seed: int, class_names) -> tuple[list[int], list[int]]:
    """(train indices, val indices) of `files`: per class a permutation seeded by (seed, the class name's CRC32).

    Seeding by the name, not the label index, keeps a class's split the same
    when another class folder is added or removed.
    """
    labels = np.asarray(labels)
    train, val = [], []
    for label, name in enumerate(class_names):
        members = sorted(np.flatnonzero(labels == label), key=lambda i: files[i])
        if len(members) < 2:
            raise ValueError(
                f"class {name!r} has {len(members)} image(s): a one-folder dataset needs at least 2 per "
                "class, one to train on and one to validate"
            )
        order = np.random.default_rng([int(seed), zlib.crc32(name.encode())]).permutation(len(members))
        k = val_count(len(members), val_split)
        val.extend(int(members[i]) for i in order[:k])
        train.extend(int(members[i]) for i in order[k:])
    return sorted(train), sorted(val)


def split_folder(data_dir: str, *, val_split: float, seed: int) -> data_lib.Splits:
    """Scan `data_dir/<class>/*` (undecodable files skipped, as the two-folder loader does) and split it."""
    from training.config import ConfigError

    try:
        split = data_lib.scan_folder(data_dir)
    except ValueError as e:
        raise ConfigError(
            "data_dir", data_dir, f"a folder of images, <class>/* or train/<class>/* and val/<class>/* ({e})"
        ) from None
    try:
        train, val = stratified_split(
            split.files, split.labels, val_split=val_split, seed=seed, class_names=split.class_names
        )
    except ValueError as e:
        raise ConfigError("data_dir", data_dir, f"class folders of at least 2 images each ({e})") from None
    return _splits(data_dir, split, train, val)


def _splits(data_dir, split: data_lib.Split, train, val) -> data_lib.Splits:
    return data_lib.Splits(
        data_dir=data_dir,
        class_names=split.class_names,
        train_files=tuple(split.files[i] for i in train),
        train_labels=tuple(int(split.labels[i]) for i in train),
        val_files=tuple(split.files[i] for i in val),
        val_labels=tuple(int(split.labels[i]) for i in val),
        skipped=split.skipped,
        pil_files=split.pil_files,
    )


def as_record(splits: data_lib.Splits, *, val_split: float, seed: int) -> dict:
    """What SPLIT_FILE holds: the fields that decide the split and both lists, relative to the data folder."""
    root = splits.data_dir

    def rel(paths):
        return [os.path.relpath(p, root) for p in paths]

    return {
        "data_dir": os.path.abspath(root),
        "seed": int(seed),
        "val_split": float(val_split),
        "class_names": list(splits.class_names),
        "train": rel(splits.train_files),
        "val": rel(splits.val_files),
    }


def read(out: str) -> dict | None:
    path = os.path.join(out, SPLIT_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def write(out: str, record: dict) -> None:
    from common.files import atomic_write

    atomic_write(os.path.join(out, SPLIT_FILE), json.dumps(record, indent=1) + "\n")


def from_record(record: dict, data_dir: str | None = None) -> data_lib.Splits:
    """The Splits a SPLIT_FILE lists (under `data_dir`, default the recorded one); every listed file must exist.

    The files that need the PIL decoder are found here, once per run from each file's header, so the
    pipelines a run builds every epoch do not open every file again.
    """
    root = data_dir or record["data_dir"]
    names = list(record["class_names"])
    index = {n: i for i, n in enumerate(names)}
    out = {}
    for part in ("train", "val"):
        paths = [os.path.join(root, p) for p in record[part]]
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            raise ValueError(
                f"data_dir: {root!r} no longer holds {len(missing)} image(s) of the recorded split "
                f"(first: {missing[0]}); restore them, or start over with another --out or --overwrite"
            )
        out[part] = (paths, [index[os.path.normpath(p).split(os.sep)[0]] for p in record[part]])
    return data_lib.Splits(
        data_dir=root,
        class_names=tuple(names),
        train_files=tuple(out["train"][0]),
        train_labels=tuple(out["train"][1]),
        val_files=tuple(out["val"][0]),
        val_labels=tuple(out["val"][1]),
        skipped=(),
        pil_files=frozenset(p for part in ("train", "val") for p in out[part][0] if decode_lib.needs_pil(p)),
    )


def for_run(
    data_dir: str, out: str, *, val_split: float, seed: int, overwrite: bool = False
) -> tuple[data_lib.Splits, dict]:
    """(splits, record) of a one-folder run: the recorded split when `out` holds one, else a fresh one.

    A recorded split made with another folder, seed or fraction is refused,
    naming the fields (unless `overwrite`: the run starts over).
    """
    recorded = None if overwrite else read(out)
    wanted = {"data_dir": os.path.abspath(data_dir), "seed": int(seed), "val_split": float(val_split)}
    if recorded is not None:
        diffs = [
            f"{k} ({recorded.get(k)!r} there, {wanted[k]!r} now)" for k in SPLIT_FIELDS if recorded.get(k) != wanted[k]
        ]
        if diffs:
            from training.config import ConfigError

            raise ConfigError(
                f"--out={out} holds a split of another dataset or seed (differs in: {', '.join(diffs)}); "
                "use the same flags to resume it, another --out, or --overwrite to start over"
            )
        return from_record(recorded, data_dir), recorded
    splits = split_folder(data_dir, val_split=val_split, seed=seed)
    return splits, as_record(splits, val_split=val_split, seed=seed)
