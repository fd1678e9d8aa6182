"""TFRecord shards in the ImageNet format: checking a shard set, and the tf.data pipeline that reads it.

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
Class names are the index's (`index.json`, written by `training.make_shards`),
else the synsets sorted by label.

`load_shards` checks a shard set before training, the shard equivalent of the
folder loader's decode check: every record is read once and its image fully
decoded (PIL, as `data.check_image`); a record that is not an image is
skipped and reported, a shard whose TFRecord framing is corrupt is read up to
the damage and the rest reported. The verdicts are kept in
`<dir>/.shards_check.json`, valid while a shard's size and mtime are
unchanged, so a second run reads no image. Mistakes in the set itself (a
missing shard, an index that disagrees with the shards, a label outside the
class range) raise `ShardError` (one line, exit code 2) before training.

Reading is parallel and interleaved across shards (`tf.data.Dataset.interleave`,
deterministic, so every worker sees the same order), and each worker reads
only its part (`split_plan`): whole shards when they divide into equal
parts, else every N-th record, so each example is read once per epoch
across workers.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import io
import json
import os
import re

import numpy as np

from common import cli
from common import files as files_lib
from training import augment as augment_lib

SPLITS = {"train": "train", "val": "validation"}  # the trainer's split name -> the file prefix
SHARD_NAME = re.compile(r"^(train|validation)-(\d{5})-of-(\d{5})$")
INDEX = "index.json"
INDEX_VERSION = 1
CHECK_CACHE = ".shards_check.json"
CHECK_CACHE_VERSION = 1
IMAGENET_LABEL_OFFSET = 1
SHUFFLE_BUFFER = 4096  # records; with the shard order shuffled too (tensorflow/tpu's ImageNet input uses 1024)
CYCLE_LENGTH = 16  # shards read at once
BALANCE = 0.02  # whole shards per worker when the smallest part is within 2% of the mean


class ShardError(cli.UsageError, ValueError):
    """A shard set that cannot be trained on: one line on the command line (exit 2), a ValueError for library callers."""


def shard_name(prefix: str, index: int, count: int) -> str:
    return f"{prefix}-{index:05d}-of-{count:05d}"


def is_shard_dir(path: str | None) -> bool:
    """True when `path` holds an index or `train-NNNNN-of-NNNNN` files (a folder of images holds neither)."""
    if not path or not os.path.isdir(path):
        return False
    return os.path.exists(os.path.join(path, INDEX)) or any(SHARD_NAME.match(n) for n in os.listdir(path))


@dataclasses.dataclass(frozen=True)
class ShardSet:
    """The shards of one split, in order, with what the check found in each."""

    paths: tuple[str, ...]
    counts: tuple[int, ...]  # readable records per shard (the pipeline reads no further)
    bad: tuple[tuple[int, int], ...]  # (shard position, record index) of records that are not images

    @property
    def num_examples(self) -> int:
        return sum(self.counts) - len(self.bad)

    def __len__(self) -> int:
        return self.num_examples


@dataclasses.dataclass(frozen=True)
class ShardSplits:
    """What `data.Splits` is for a folder: the class list and both splits. `train_files` and `val_files` are
    the split's `ShardSet`s (their len() is the number of examples), so the trainer counts either alike."""

    data_dir: str
    class_names: tuple[str, ...]
    train_files: ShardSet
    val_files: ShardSet
    skipped: tuple[str, ...]
    label_offset: int

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


# ---------------------------------------------------------------- finding and checking the shard files


def list_shards(data_dir: str, prefix: str) -> list[str]:
    """The shard files of one split, sorted; ShardError when one is missing or the `-of-N` parts disagree."""
    found = {}
    for name in os.listdir(data_dir):
        m = SHARD_NAME.match(name)
        if m and m.group(1) == prefix:
            found[name] = (int(m.group(2)), int(m.group(3)))
    if not found:
        raise ShardError("data_dir", data_dir, f"{prefix}-NNNNN-of-NNNNN TFRecord shards (none found)")
    totals = sorted({total for _, total in found.values()})
    if len(totals) > 1:
        raise ShardError(
            "data_dir",
            data_dir,
            f"one shard set per split ({prefix} shards say -of-{', -of-'.join(str(t) for t in totals)})",
        )
    total = totals[0]
    missing = sorted(set(range(total)) - {i for i, _ in found.values()})
    if missing:
        names = ", ".join(shard_name(prefix, i, total) for i in missing[:3]) + (" ..." if len(missing) > 3 else "")
        raise ShardError(
            "data_dir",
            data_dir,
            f"all {total} {prefix} shards that their names announce "
            f"({len(found)} found; missing {len(missing)}: {names})",
        )
    return [os.path.join(data_dir, n) for n in sorted(found)]


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


def checked_shards(data_dir: str, paths: list[str], *, workers: int | None = None) -> dict[str, ShardCheck]:
    """{path: ShardCheck}, reading only the shards the cache file does not vouch for (size and mtime in ns).

    The cache is `<data_dir>/CHECK_CACHE`, written atomically; a folder that
    cannot be written is checked in full every time (correct, only slower).
    """
    cache_path = os.path.join(data_dir, CHECK_CACHE)
    entries = {}
    try:
        with open(cache_path) as f:
            saved = json.load(f)
        if saved.get("version") == CHECK_CACHE_VERSION:
            entries = saved["shards"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        entries = {}
    results, stats, todo = {}, {}, []
    for path in paths:
        st = os.stat(path)
        stats[path] = [st.st_size, st.st_mtime_ns]
        entry = entries.get(os.path.basename(path))
        try:
            if entry and entry["stat"] == stats[path]:
                results[path] = ShardCheck.from_json(entry["check"])
                continue
        except (KeyError, TypeError, ValueError, AttributeError):
            pass
        todo.append(path)
    if todo:
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers or min(8, (os.cpu_count() or 1) * 2)) as pool:
            results.update(zip(todo, pool.map(check_shard, todo)))
        fresh = dict(entries)
        fresh.update({os.path.basename(p): {"stat": stats[p], "check": results[p].as_json()} for p in todo})
        try:
            files_lib.atomic_write(cache_path, json.dumps({"version": CHECK_CACHE_VERSION, "shards": fresh}))
        except OSError:
            pass  # a read-only shard folder
    return results


def load_shards(data_dir: str, *, label_offset: int | None = None) -> ShardSplits:
    """Check the train and validation shards of `data_dir` and return them with the class list.

    ShardError (before any training) for: a missing shard, shard files the
    index does not list or lists with another count or checksum, an index
    that is not complete, a label outside the class range (one class list
    serves both splits). Records that are not images are skipped and listed
    in `skipped`, as the folder loader lists files.
    """
    data_dir = os.fspath(data_dir)
    index = read_index(data_dir)
    if index is not None and not index.get("complete"):
        raise ShardError(
            "data_dir",
            data_dir,
            f"a complete shard set ({INDEX} says the writing was interrupted: run "
            "keras-effnet-shards again with the same flags to finish it)",
        )
    offset = label_offset if label_offset is not None else (index or {}).get("label_offset", IMAGENET_LABEL_OFFSET)
    paths = {split: list_shards(data_dir, prefix) for split, prefix in SPLITS.items()}
    checks = checked_shards(data_dir, paths["train"] + paths["val"])
    if index is not None:
        _check_against_index(data_dir, index, paths, checks)
    class_names = _class_names(data_dir, index, checks, offset)
    skipped, sets = [], {}
    for split, split_paths in paths.items():
        bad = []
        for position, path in enumerate(split_paths):
            check = checks[path]
            name = os.path.basename(path)
            for record, reason in sorted(check.bad.items()):
                bad.append((position, record))
                skipped.append(f"{name} record {record}: {reason}")
            if check.damaged:
                skipped.append(f"{name}: {check.damaged}; the records after it are not read")
            for label in check.labels:
                if not 0 <= label - offset < len(class_names):
                    raise ShardError(
                        "data_dir",
                        data_dir,
                        f"labels in 0..{len(class_names) - 1} after subtracting "
                        f"label_offset={offset} ({name} has image/class/label {label}; "
                        f"{len(class_names)} classes)",
                    )
        sets[split] = ShardSet(
            paths=tuple(split_paths), counts=tuple(checks[p].count for p in split_paths), bad=tuple(bad)
        )
        if sets[split].num_examples < 1:
            raise ShardError("data_dir", data_dir, f"{SPLITS[split]} shards with at least one readable image (none)")
    return ShardSplits(
        data_dir=data_dir,
        class_names=tuple(class_names),
        train_files=sets["train"],
        val_files=sets["val"],
        skipped=tuple(skipped),
        label_offset=int(offset),
    )


def _check_against_index(data_dir, index, paths, checks):
    for split, prefix in SPLITS.items():
        listed = index.get("splits", {}).get(prefix, {}).get("shards", {})
        on_disk = {os.path.basename(p): p for p in paths[split]}
        if set(listed) != set(on_disk):
            extra, absent = sorted(set(on_disk) - set(listed)), sorted(set(listed) - set(on_disk))
            raise ShardError(
                "data_dir",
                data_dir,
                f"the {prefix} shards that {INDEX} lists (not listed: "
                f"{extra[:3] or 'none'}; listed but absent: {absent[:3] or 'none'})",
            )
        for name, entry in sorted(listed.items()):
            check = checks[on_disk[name]]
            if entry.get("count") != check.count or entry.get("sha256") != check.sha256:
                what = (
                    f"{entry.get('count')} records, it has {check.count}"
                    if entry.get("count") != check.count
                    else "another sha256: the file changed after it was written"
                )
                raise ShardError("data_dir", data_dir, f"shards that match {INDEX} ({INDEX} gives {name} {what})")


def _class_names(data_dir, index, checks, offset) -> list[str]:
    """The index's classes; else the synsets in label order (all labels then must be offset..offset+n-1);
    else "0".."n-1" up to the largest label."""
    if index is not None:
        return list(index["classes"])
    by_label = {}
    for check in checks.values():
        for label, synset in check.synsets.items():
            if by_label.setdefault(label, synset) != synset:
                raise ShardError(
                    "data_dir", data_dir, f"one synset per label (label {label} has {by_label[label]!r} and {synset!r})"
                )
    if by_label:
        return [by_label[label] for label in sorted(by_label)]
    labels = {label for c in checks.values() for label in c.labels}
    return [str(i) for i in range(max(labels) - offset + 1)] if labels else []


# ---------------------------------------------------------------- splitting across workers


@dataclasses.dataclass(frozen=True)
class SplitPlan:
    """How one split is divided among `workers`: `by` is "file" (worker w reads shards w, w+N, ...) or "data"
    (every worker reads every shard and keeps every N-th record); `per_worker` the examples each one gets."""

    by: str
    workers: int
    per_worker: tuple[int, ...]

    def describe(self, shards: int) -> str:
        if self.workers == 1:
            return f"{shards} shard(s) read by 1 worker ({self.per_worker[0]} examples)"
        how = (
            f"by file ({shards} shards, worker w reads shards w, w+{self.workers}, ...)"
            if self.by == "file"
            else f"by data ({shards} shard(s), worker w keeps records w, w+{self.workers}, ... of the interleaved stream)"
        )
        return f"split over {self.workers} workers {how}: {', '.join(map(str, self.per_worker))} examples each"


def split_plan(shards: ShardSet, workers: int) -> SplitPlan:
    """Whole shards per worker when there are at least as many as workers and the parts are equal within
    BALANCE (the I/O then scales with the workers); else every worker reads all shards and keeps every N-th
    record. Either way each example goes to exactly one worker."""
    if workers > 1 and len(shards.paths) >= workers:
        bad_per_shard = np.bincount([p for p, _ in shards.bad], minlength=len(shards.paths))
        sizes = np.asarray(shards.counts) - bad_per_shard
        parts = tuple(int(sizes[w::workers].sum()) for w in range(workers))
        if min(parts) >= (1 - BALANCE) * (sum(parts) / workers):
            return SplitPlan("file", workers, parts)
    n = shards.num_examples
    return SplitPlan("data", workers, tuple(len(range(w, n, workers)) for w in range(workers)))


def steps_per_epoch(shards: ShardSet, global_batch: int, workers: int) -> int:
    """Full global batches in one epoch: the worker with the smallest part decides (workers step together)."""
    plan = split_plan(shards, workers)
    return min(plan.per_worker) // (global_batch // workers)


# ---------------------------------------------------------------- the tf.data pipeline


def make_dataset(
    shards: ShardSet,
    *,
    image_size: int,
    batch_size: int,
    training: bool,
    label_offset: int = IMAGENET_LABEL_OFFSET,
    worker: int = 0,
    workers: int = 1,
    augment: str = "basic",
    seed: int = 0,
    start_epoch: int = 0,
    repeat: bool = False,
    drop_remainder: bool | None = None,
    crop_area=None,
    randaugment_magnitude: float = 10.0,
    with_ids: bool = False,
):
    """A tf.data.Dataset of (images float32 [B, S, S, 3] in 0..255, labels int32 [B]) from this worker's part.

    The same augmentation as `data.make_dataset` (random-resized-crop decoding
    only the JPEG crop window, horizontal flip, stateless ops seeded by (seed,
    epoch, element)); eval resizes the whole image. `batch_size` is this
    pipeline's batch (the per-replica batch under `distribute_datasets_from_function`).
    `with_ids` adds a third component: each example's `image/filename`
    (or `<shard>:<record>` when it has none).
    """
    import tensorflow as tf

    if augment not in augment_lib.AUGMENTS:
        raise ValueError(f"augment must be one of {augment_lib.AUGMENTS}, got {augment!r}.")
    if drop_remainder is None:
        drop_remainder = training
    size = int(image_size)
    crop_area = tuple(crop_area or augment_lib.CROP_AREA)
    plan = split_plan(shards, workers)
    positions = list(range(len(shards.paths)))
    if plan.by == "file":
        positions = positions[worker::workers]
    paths = [shards.paths[p] for p in positions]
    counts = [shards.counts[p] for p in positions]
    names = [os.path.basename(p) for p in paths]
    bad_keys = [p * (1 << 32) + r for p, r in shards.bad]
    shuffle_seed = augment_lib.shuffle_seed(seed, start_epoch)

    files = tf.data.Dataset.from_tensor_slices((paths, counts, positions, names))
    if training:
        files = files.shuffle(len(paths), seed=shuffle_seed, reshuffle_each_iteration=True)

    def records(path, count, position, name):
        ds = tf.data.TFRecordDataset(path).take(tf.cast(count, tf.int64)).enumerate()
        return ds.map(lambda i, r: (tf.cast(position, tf.int64) * (1 << 32) + i, name, i, r))

    ds = files.interleave(
        records,
        cycle_length=max(1, min(CYCLE_LENGTH, len(paths))),
        block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    if bad_keys:
        bad = tf.constant(sorted(bad_keys), tf.int64)
        ds = ds.filter(lambda key, name, i, r: tf.logical_not(tf.reduce_any(tf.equal(bad, key))))
    if plan.by == "data" and workers > 1:
        ds = ds.shard(workers, worker)
    n = plan.per_worker[worker]
    if training:
        ds = ds.shuffle(min(n, SHUFFLE_BUFFER), seed=shuffle_seed + 1, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()

    features = {
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "image/class/label": tf.io.FixedLenFeature([], tf.int64),
        "image/filename": tf.io.FixedLenFeature([], tf.string, default_value=""),
    }

    def parse(index, element):
        _, name, record_index, record = element
        parsed = tf.io.parse_single_example(record, features)
        data = parsed["image/encoded"]
        label = tf.cast(parsed["image/class/label"] - label_offset, tf.int32)
        example_id = tf.where(
            tf.strings.length(parsed["image/filename"]) > 0,
            parsed["image/filename"],
            tf.strings.join([name, tf.strings.as_string(record_index)], ":"),
        )
        if training and augment != "none":
            element_seed = tf.stack([tf.cast(seed, tf.int64) * 1_000_003 + tf.cast(start_epoch, tf.int64), index])
            image = _random_crop(data, element_seed, crop_area)
            image = tf.image.resize(image, [size, size], antialias=True)
            image = tf.image.stateless_random_flip_left_right(image, seed=element_seed + 1)
        else:
            image = tf.io.decode_image(data, channels=3, expand_animations=False)
            image.set_shape([None, None, 3])
            image = tf.image.resize(image, [size, size], antialias=True)
        image = tf.clip_by_value(image, 0.0, 255.0)
        return (image, label, example_id) if with_ids else (image, label)

    ds = ds.enumerate().map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if training and augment == "randaugment":
        randaugment = augment_lib.randaugment(seed, start_epoch, randaugment_magnitude)
        ds = ds.map(lambda x, y, *ids: randaugment(x, y) + tuple(ids), num_parallel_calls=None)
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF  # split above
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def _random_crop(data, element_seed, crop_area):
    import tensorflow as tf

    def window(shape):
        begin, extent, _ = tf.image.stateless_sample_distorted_bounding_box(
            tf.cast(shape, tf.int32),
            tf.zeros([1, 0, 4], tf.float32),
            seed=element_seed,
            min_object_covered=0.0,
            aspect_ratio_range=augment_lib.CROP_ASPECT,
            area_range=crop_area,
            max_attempts=10,
            use_image_if_no_bounding_boxes=True,
        )
        return begin, extent

    def jpeg_crop():
        begin, extent = window(tf.io.extract_jpeg_shape(data))
        return tf.image.decode_and_crop_jpeg(data, tf.stack([begin[0], begin[1], extent[0], extent[1]]), channels=3)

    def other_crop():
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
        image.set_shape([None, None, 3])
        begin, extent = window(tf.shape(image))
        return tf.slice(image, begin, extent)

    image = tf.cond(tf.io.is_jpeg(data), jpeg_crop, other_crop)
    image.set_shape([None, None, 3])
    return image


def distribute(
    strategy, shards: ShardSet, *, global_batch: int, skip_steps: int = 0, record_ids: str | None = None, **kwargs
):
    """`strategy.distribute_datasets_from_function` over this worker's part of `shards`.

    Each worker builds its own pipeline (input_pipeline_id = worker) batched
    at the per-replica size; a run resumed `skip_steps` into the epoch skips
    that many steps of its own part, so the order continues. `record_ids`, a
    folder: each worker appends "<epoch> <step> <id>" lines (epoch from 1, step from 0) for every example
    its pipeline hands out to `<record_ids>/worker-<w>.txt` (a read-ahead past
    the epoch's last step appears with a step number beyond it).
    """
    import tensorflow as tf

    epoch = kwargs.get("start_epoch", 0) + 1

    def dataset_fn(context):
        workers, worker = context.num_input_pipelines, context.input_pipeline_id
        local_replicas = max(1, context.num_replicas_in_sync // workers)
        ds = make_dataset(
            shards,
            batch_size=context.get_per_replica_batch_size(global_batch),
            worker=worker,
            workers=workers,
            with_ids=bool(record_ids),
            **kwargs,
        )
        ds = ds.enumerate()  # numbered before the skip: a resumed epoch keeps its step numbers
        if skip_steps:
            ds = ds.skip(skip_steps * local_replicas)
        if not record_ids:
            return ds.map(lambda batch_index, element: element)
        os.makedirs(record_ids, exist_ok=True)
        path = os.path.join(record_ids, f"worker-{worker}.txt")

        def write(batch_index, ids):
            step = int(batch_index) // local_replicas
            with open(path, "a") as f:
                f.writelines(f"{epoch} {step} {i.decode()}\n" for i in ids)
            return np.int64(0)

        def log_ids(batch_index, element):
            images, labels, ids = element
            done = tf.numpy_function(write, [batch_index, ids], tf.int64, stateful=True)
            with tf.control_dependencies([done]):
                return tf.identity(images), labels

        return ds.map(log_ids)

    options = tf.distribute.InputOptions(experimental_fetch_to_device=True)
    return strategy.distribute_datasets_from_function(dataset_fn, options)
