"""TFRecord shards in the ImageNet format: the file names, the index, one record, and the check of one shard.

The format is the one of tensorflow/tpu's `tools/datasets/imagenet_to_gcs.py`,
which most ImageNet TFRecords in use were written with:

  * files `train-00000-of-01024` .. and `validation-00000-of-00128` ..: the
    `-of-N` part says how many shards the split has;
  * one `tf.train.Example` per image with `image/encoded` (the image file's
    bytes), `image/class/label` (int64, counted from 1: 0 is "background" in
    the TF-slim convention that script follows), `image/class/synset` (the
    wnid), `image/filename`, `image/format`, `image/height`, `image/width`.

Labels of other writers may count from 0: `label_offset` is subtracted from
`image/class/label` (default: the index's, else 1 as imagenet_to_gcs).
`index.json` (written by `training.make_shards`) holds the class names and
each shard's record count and sha256.

`check_shard` reads every record of one shard once and fully decodes its image
(PIL, as `data.check_image`): the shard equivalent of the folder loader's
decode check.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re

from common import cli

SPLITS = {"train": "train", "val": "validation"}  # the trainer's split name -> the file prefix
SHARD_NAME = re.compile(r"^(train|validation)-(\d{5})-of-(\d{5})$")
INDEX = "index.json"
INDEX_VERSION = 1
IMAGENET_LABEL_OFFSET = 1


class ShardError(cli.UsageError, ValueError):
    """A shard set that cannot be trained on: one line on the command line (exit 2), a ValueError for library callers."""


def shard_name(prefix: str, index: int, count: int) -> str:
    return f"{prefix}-{index:05d}-of-{count:05d}"


def read_index(data_dir: str) -> dict | None:
    path = os.path.join(data_dir, INDEX)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            index = json.load(f)
        assert isinstance(index, dict) and index.get("version") == INDEX_VERSION
    except (OSError, ValueError, AssertionError):
        raise ShardError(
            "data_dir",
            data_dir,
            f"a readable {INDEX} of version {INDEX_VERSION} (this one is damaged "
            "or of another version; write the shards again)",
        ) from None
    return index


@dataclasses.dataclass(frozen=True)
class ShardCheck:
    """What reading one shard found: records readable, labels and synsets seen, images that do not decode."""

    count: int
    labels: dict  # raw label -> number of records
    synsets: dict  # raw label -> synset (when records carry one)
    bad: dict  # record index -> reason
    damaged: str | None  # the TFRecord framing is corrupt after `count` records
    sha256: str

    def as_json(self):
        return {
            "count": self.count,
            "labels": {str(k): v for k, v in self.labels.items()},
            "synsets": {str(k): v for k, v in self.synsets.items()},
            "bad": {str(k): v for k, v in self.bad.items()},
            "damaged": self.damaged,
            "sha256": self.sha256,
        }

    @classmethod
    def from_json(cls, d):
        return cls(
            count=int(d["count"]),
            labels={int(k): int(v) for k, v in d["labels"].items()},
            synsets={int(k): v for k, v in d["synsets"].items()},
            bad={int(k): v for k, v in d["bad"].items()},
            damaged=d["damaged"],
            sha256=d["sha256"],
        )


def image_problem(data: bytes) -> str | None:
    """None when `data` is a fully decodable JPEG/PNG/BMP/GIF, else why not: `data.check_image` on bytes."""
    from PIL import Image

    from training import data as data_lib

    if not data:
        return "empty image/encoded"
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format not in data_lib.FORMATS:
                return f"format {im.format} is not supported (allowed: {', '.join(data_lib.FORMATS)})"
            im.load()
    except Exception as e:  # noqa: BLE001 - PIL raises many types for broken images; each becomes a reason
        return f"not a decodable image ({type(e).__name__}: {e})"
    return None


def parse_record(record: bytes) -> tuple[bytes, int | None, str]:
    """(image bytes, raw label or None, synset) of one serialized tf.train.Example."""
    import tensorflow as tf

    example = tf.train.Example.FromString(record)
    feature = example.features.feature

    def one(key, kind):
        values = getattr(feature[key], kind).value if key in feature else []
        return values[0] if len(values) else None

    label = one("image/class/label", "int64_list")
    return (
        one("image/encoded", "bytes_list") or b"",
        None if label is None else int(label),
        (one("image/class/synset", "bytes_list") or b"").decode("utf-8", "replace"),
    )


def check_shard(path: str) -> ShardCheck:
    """Read every record of one shard; decode every image (the records' own check, as `data.check_image`)."""
    import tensorflow as tf

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    labels, synsets, bad = {}, {}, {}
    count, damaged = 0, None
    iterator = iter(tf.data.TFRecordDataset(path))
    while True:
        try:
            record = next(iterator)
        except StopIteration:
            break
        except tf.errors.DataLossError as e:
            # TF's message, less its graph-node prefix and op suffix
            reason = re.sub(r"\{\{.*?\}\}\s*|\s*\[Op:.*", "", e.message).splitlines()[0][:120]
            damaged = f"corrupt TFRecord data after record {count} ({reason})"
            break
        try:
            image, label, synset = parse_record(record.numpy())
        except Exception as e:  # noqa: BLE001 - a record that is not a tf.train.Example
            bad[count] = f"not a tf.train.Example ({type(e).__name__})"
            count += 1
            continue
        reason = "no image/class/label" if label is None else image_problem(image)
        if reason:
            bad[count] = reason
        else:
            labels[label] = labels.get(label, 0) + 1
            if synset:
                synsets.setdefault(label, synset)
        count += 1
    return ShardCheck(count=count, labels=labels, synsets=synsets, bad=bad, damaged=damaged, sha256=digest.hexdigest())
