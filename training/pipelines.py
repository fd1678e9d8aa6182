"""The input pipelines of a run: one epoch's training iterator and the validation datasets.

Both kinds of split are served: a folder's image files (`training.data`),
distributed with `experimental_distribute_dataset`, which splits each global
batch into equal per-replica shares (`drop_remainder` keeps them equal,
tensorflow/tensorflow#52986), and TFRecord shards (`training.shards`), which
each worker reads its own part of.

One pipeline per epoch: its order depends on (seed, epoch) only, so an epoch
resumed after `skip` steps skips the steps already done and continues the
same order.
"""

from __future__ import annotations

from training import data as data_lib
from training import shards as shards_lib
from training.config import TrainConfig


def train_iterator(config: TrainConfig, strategy, splits, *, epoch: int, size: int, global_batch: int, skip: int, reg):
    """An iterator over the distributed training batches of 1-based `epoch` at `size` px, `skip` steps in.

    `reg` is the epoch's `training.regularization` setting (crop area, RandAugment magnitude).
    """
    same = dict(  # what both kinds of split take alike
        image_size=size,
        training=True,
        augment=config.augment,
        seed=config.seed,
        repeat=True,
        start_epoch=epoch - 1,
        crop_area=(reg.crop_scale_min, 1.0),
        randaugment_magnitude=reg.randaugment_magnitude,
    )
    if isinstance(splits, shards_lib.ShardSplits):
        return iter(
            shards_lib.distribute(
                strategy,
                splits.train_files,
                global_batch=global_batch,
                skip_steps=skip,
                record_ids=config.record_ids,
                label_offset=splits.label_offset,
                **same,
            )
        )
    ds = data_lib.make_dataset(
        splits.train_files,
        splits.train_labels,
        batch_size=global_batch,
        cache=config.cache,
        drop_remainder=True,
        pil_files=splits.pil_files,
        **same,
    )
    if skip:
        ds = ds.skip(skip)
    return iter(strategy.experimental_distribute_dataset(ds))


def val_dataset(splits, *, image_size: int, batch_size: int, cache: bool = False):
    """The validation images of a folder split, in order, every one of them (the last batch may be short)."""
    return data_lib.make_dataset(
        splits.val_files,
        splits.val_labels,
        image_size=image_size,
        batch_size=batch_size,
        training=False,
        augment="none",
        cache=cache,
        drop_remainder=False,
        pil_files=splits.pil_files,
    )


def distributed_val(config: TrainConfig, strategy, splits, *, image_size: int, global_batch: int):
    """The validation split distributed over the replicas, for the evaluation after every epoch."""
    if isinstance(splits, shards_lib.ShardSplits):
        return shards_lib.distribute(
            strategy,
            splits.val_files,
            global_batch=global_batch,
            image_size=image_size,
            training=False,
            label_offset=splits.label_offset,
        )
    ds = val_dataset(splits, image_size=image_size, batch_size=global_batch, cache=config.cache)
    return strategy.experimental_distribute_dataset(ds)
