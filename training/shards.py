"""TFRecord shards as a training input: the shard set of a folder, its split across workers, its pipelines.

The format (tensorflow/tpu's `imagenet_to_gcs.py` layout, the file names,
`index.json`) is training.shard_format's; the check of the set before
training, with its cache, training.shard_check's; the per-record steps of the
pipeline, training.shard_reader's.

`load_shards` checks the train and validation shards of a folder and returns
them with the class list (`ShardSplits`, what `data.Splits` is for a folder).
Class names are the index's (`index.json`, written by `training.make_shards`),
else the synsets sorted by label.

Each worker reads only its part (`split_plan`): whole shards when they divide
into equal parts, else every N-th record, so each example is read once per
epoch across workers.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import numpy as np

from training import augment as augment_lib
from training import shard_check, shard_reader
from training.shard_format import IMAGENET_LABEL_OFFSET, INDEX, SHARD_NAME, SPLITS, ShardError, read_index

SHUFFLE_BUFFER = 4096  # records; with the shard order shuffled too (tensorflow/tpu's ImageNet input uses 1024)
BALANCE = 0.02  # whole shards per worker when the smallest part is within 2% of the mean


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
    paths = {split: shard_check.list_shards(data_dir, prefix) for split, prefix in SPLITS.items()}
    checks = shard_check.checked_shards(data_dir, paths["train"] + paths["val"])
    if index is not None:
        shard_check.check_against_index(data_dir, index, paths, checks)
    class_names = shard_check.class_names(data_dir, index, checks, offset)
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

    from training import data as data_lib

    if augment not in augment_lib.AUGMENTS:
        raise ValueError(f"augment must be one of {augment_lib.AUGMENTS}, got {augment!r}.")
    if drop_remainder is None:
        drop_remainder = training
    plan = split_plan(shards, workers)
    shuffle_seed = augment_lib.shuffle_seed(seed, start_epoch)
    ds = _worker_records(shards, plan, worker, shuffle=training, seed=shuffle_seed)
    if training:
        ds = ds.shuffle(
            min(plan.per_worker[worker], SHUFFLE_BUFFER), seed=shuffle_seed + 1, reshuffle_each_iteration=True
        )
    if repeat:
        ds = ds.repeat()
    example = functools.partial(
        shard_reader.example,
        size=int(image_size),
        label_offset=label_offset,
        augmenting=training and augment != "none",
        seed=seed,
        start_epoch=start_epoch,
        crop_area=tuple(crop_area or augment_lib.CROP_AREA),
        with_ids=with_ids,
    )
    ds = ds.enumerate().map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if training and augment == "randaugment":
        randaugment = augment_lib.randaugment(seed, start_epoch, randaugment_magnitude)
        ds = ds.map(lambda x, y, *ids: randaugment(x, y) + tuple(ids), num_parallel_calls=None)
    return data_lib.finish_pipeline(ds, "OFF")  # split above


def _worker_records(shards: ShardSet, plan: SplitPlan, worker: int, *, shuffle: bool, seed: int):
    """This worker's records, (key, shard name, record index, record), less those that are not images."""
    positions = list(range(len(shards.paths)))
    if plan.by == "file":
        positions = positions[worker :: plan.workers]
    files = shard_reader.shard_files(shards, positions, shuffle=shuffle, seed=seed)
    ds = shard_reader.without(shard_reader.interleaved(files, len(positions)), shards.bad)
    if plan.by == "data" and plan.workers > 1:
        ds = ds.shard(plan.workers, worker)
    return ds


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
