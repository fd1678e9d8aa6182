"""`python -m training.make_shards --data_dir=DIR --out=SHARDS`: a folder of images as ImageNet-format TFRecords.

Reads the folder the trainer reads (DIR/train/<class>/*, DIR/val/<class>/*,
through `data.load_splits`, so undecodable files are skipped and reported the
same way) and writes `train-NNNNN-of-NNNNN` and `validation-NNNNN-of-NNNNN`
shards in the format of tensorflow/tpu's `imagenet_to_gcs.py` (see
training/shard_format.py), plus `index.json`: the class names, the number of
examples per shard and per class, and each shard's sha256.

Images are shuffled across shards (seeded, as imagenet_to_gcs does), so every
shard holds every class. JPEG, PNG, BMP and GIF bytes are stored as they are
when TensorFlow decodes them to the same RGB as PIL (the scan's `pil_files`);
others (16-bit PNG, CMYK PNG, ...) are stored as lossless RGB PNG.

Resumable and never half-written: each shard is written to a hidden
temporary name and renamed when complete, then added to the index (written
atomically). A shard the index lists is done; a rerun with the same folder and
flags writes only the others, and the index says `"complete": true` last.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os

import numpy as np

from common import cli
from common import files as files_lib
from training import shard_format

IMAGES_PER_SHARD = 1024


@dataclasses.dataclass(frozen=True)
class ShardsConfig:
    data_dir: str | None = cli.flag(
        None, "A folder of images: train/<class>/* and val/<class>/*.", group="input", required=True
    )
    out: str | None = cli.flag(
        None,
        "Where to write the shards and index.json (a rerun finishes an interrupted set).",
        group="output",
        required=True,
    )
    train_shards: int | None = cli.flag(
        None, f"Train shards (none: one per {IMAGES_PER_SHARD} images; ImageNet: 1024).", group="output"
    )
    val_shards: int | None = cli.flag(
        None, f"Validation shards (none: one per {IMAGES_PER_SHARD} images; ImageNet: 128).", group="output"
    )
    label_offset: int = cli.flag(
        shard_format.IMAGENET_LABEL_OFFSET,
        "image/class/label of the first class (1: imagenet_to_gcs, whose label 0 is background).",
        group="output",
    )
    seed: int = cli.flag(0, "Seed of the order of the images across shards.", group="output")

    def __post_init__(self):
        cli.positive("train_shards", self.train_shards, allow_none=True)
        cli.positive("val_shards", self.val_shards, allow_none=True)
        if self.label_offset is None or self.label_offset < 0:
            raise cli.UsageError("label_offset", self.label_offset, "an integer >= 0")
        if self.seed is None or self.seed < 0:
            raise cli.UsageError("seed", self.seed, "an integer >= 0")


def plan(files, labels, num_shards: int | None, seed: int) -> list[list[tuple[str, int]]]:
    """(file, label) pairs shuffled with `seed` and cut into `num_shards` near-equal shards (sizes differ by <= 1)."""
    pairs = list(zip(files, labels))
    num_shards = num_shards or max(1, -(-len(pairs) // IMAGES_PER_SHARD))
    if num_shards > len(pairs):
        raise cli.UsageError(f"{num_shards} shards for {len(pairs)} images: expected at most one shard per image")
    order = np.random.default_rng(seed).permutation(len(pairs))
    return [[pairs[i] for i in part] for part in np.array_split(order, num_shards)]


def example_bytes(path: str, label: int, synset: str, root: str, *, pil: bool) -> bytes:
    """One serialized tf.train.Example in imagenet_to_gcs's layout (`image/filename` relative to `root`).

    `pil`: TensorFlow would not decode the file to PIL's RGB (`data.Split.pil_files`): it is stored as
    lossless RGB PNG.
    """
    import tensorflow as tf
    from PIL import Image

    with open(path, "rb") as f:
        data = f.read()
    with Image.open(io.BytesIO(data)) as im:
        fmt, width, height = im.format, im.width, im.height
        if pil:
            buffer = io.BytesIO()
            im.convert("RGB").save(buffer, "PNG")
            data, fmt = buffer.getvalue(), "PNG"

    def b(value):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    def i(value):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

    feature = {
        "image/height": i(height),
        "image/width": i(width),
        "image/colorspace": b(b"RGB"),
        "image/channels": i(3),
        "image/class/label": i(label),
        "image/class/synset": b(synset.encode()),
        "image/format": b(fmt.encode()),
        "image/filename": b(os.path.relpath(path, root).replace(os.sep, "/").encode()),
        "image/encoded": b(data),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_shard(path: str, examples) -> dict:
    """Write `examples` (serialized) to `path` atomically; {"count", "sha256"} of the file."""
    import tensorflow as tf

    with files_lib.atomic_path(path) as tmp:
        with tf.io.TFRecordWriter(tmp) as writer:
            count = 0
            for record in examples:
                writer.write(record)
                count += 1
        digest = hashlib.sha256()
        with open(tmp, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return {"count": count, "sha256": digest.hexdigest()}


def write_shards(config: ShardsConfig, *, log=print) -> dict:
    """Write (or finish) the shard set of `config`; return the index."""
    data_dir, splits = _read_folder(config)
    parts = {
        "train": plan(splits.train_files, splits.train_labels, config.train_shards, config.seed),
        "validation": plan(splits.val_files, splits.val_labels, config.val_shards, config.seed),
    }
    key = fingerprint(data_dir, splits.class_names, parts, config.label_offset)
    index = _existing_index(config.out, key) or new_index(splits, parts, key, config.label_offset)
    os.makedirs(config.out, exist_ok=True)
    for s in splits.skipped:
        log(f"skipped: {s}")
    written = _write_missing(config, data_dir, splits, parts, index)
    index["complete"] = True
    _save_index(config.out, index)
    counts = {p: index["splits"][p]["num_examples"] for p in parts}
    log(
        f"{config.out}: {len(parts['train'])} train shards ({counts['train']} images), {len(parts['validation'])} "
        f"validation shards ({counts['validation']} images), {len(splits.class_names)} classes; wrote {written} "
        f"shard(s) now"
    )
    return index


def _read_folder(config: ShardsConfig):
    """(data_dir, data.Splits) of the folder to write, after the checks of both flags."""
    from training import data as data_lib

    data_dir = cli.require_dir("data_dir", config.data_dir, what="a folder of images (train/<class>/*, val/<class>/*)")
    cli.require_writable_dir("out", config.out)
    if os.path.abspath(config.out) == os.path.abspath(data_dir):
        raise cli.UsageError("out", config.out, "a folder other than --data_dir")
    try:
        return data_dir, data_lib.load_splits(data_dir)
    except ValueError as e:
        raise cli.UsageError("data_dir", data_dir, f"a folder of images ({e})") from None


def fingerprint(data_dir: str, class_names, parts: dict, label_offset: int) -> str:
    """sha256 of what decides the shards' contents: the classes, the label offset and each shard's files
    (path relative to `data_dir`, label, size). A rerun finishes a set only when this is unchanged."""
    return hashlib.sha256(
        json.dumps(
            {
                "classes": class_names,
                "offset": label_offset,
                "parts": {
                    k: [[(os.path.relpath(f, data_dir), y, os.path.getsize(f)) for f, y in shard] for shard in v]
                    for k, v in parts.items()
                },
            }
        ).encode()
    ).hexdigest()


def _existing_index(out: str, key: str) -> dict | None:
    """The index of an interrupted set of the same fingerprint in `out`; None for a new set. UsageError when
    `out` holds shards of other images or flags, or shards without an index."""
    if not os.path.isdir(out):
        return None
    index = shard_format.read_index(out) if os.path.exists(os.path.join(out, shard_format.INDEX)) else None
    if index is not None and index.get("fingerprint") != key:
        raise cli.UsageError(
            "out",
            out,
            "an empty folder or the shards of this same --data_dir and flags "
            "(it holds shards written from other images or with other flags)",
        )
    if index is None and any(shard_format.SHARD_NAME.match(n) for n in os.listdir(out)):
        raise cli.UsageError(
            "out",
            out,
            f"an empty folder or a shard set with its {shard_format.INDEX} (it holds shards without one)",
        )
    return index


def new_index(splits, parts: dict, key: str, label_offset: int) -> dict:
    """The index of a set not written yet: classes, per-split counts, no shard done, not complete."""
    return {
        "version": shard_format.INDEX_VERSION,
        "format": "imagenet_to_gcs",
        "complete": False,
        "fingerprint": key,
        "label_offset": label_offset,
        "classes": list(splits.class_names),
        "splits": {
            prefix: {
                "num_shards": len(part),
                "num_examples": sum(len(s) for s in part),
                "class_counts": {
                    name: int(sum(1 for s in part for _, y in s if y == c)) for c, name in enumerate(splits.class_names)
                },
                "shards": {},
            }
            for prefix, part in parts.items()
        },
        "skipped": [str(s) for s in splits.skipped],
    }


def _write_missing(config: ShardsConfig, data_dir: str, splits, parts: dict, index: dict) -> int:
    """Write the shards the index does not list as done, saving the index after each; how many were written."""
    written = 0
    for prefix, part in parts.items():
        done = index["splits"][prefix]["shards"]
        for i, shard in enumerate(part):
            name = shard_format.shard_name(prefix, i, len(part))
            if name in done and os.path.exists(os.path.join(config.out, name)):
                continue
            records = (
                example_bytes(f, y + config.label_offset, splits.class_names[y], data_dir, pil=f in splits.pil_files)
                for f, y in shard
            )
            done[name] = write_shard(os.path.join(config.out, name), records)
            _save_index(config.out, index)
            written += 1
    return written


def _save_index(out: str, index: dict) -> None:
    files_lib.atomic_write(os.path.join(out, shard_format.INDEX), json.dumps(index, indent=1, sort_keys=True))


def _command(config: ShardsConfig) -> int:
    write_shards(config)
    return 0


def main(argv=None) -> int:
    return cli.main(
        ShardsConfig,
        _command,
        argv,
        prog="keras-effnet-shards",
        resumable=True,
        description="Write a folder of images as ImageNet-format TFRecord shards with an index.",
    )


if __name__ == "__main__":
    cli.run_main(main)
