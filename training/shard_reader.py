"""The steps of the tf.data pipeline over TFRecord shards: records in, decoded and augmented images out.

Reading is parallel and interleaved across shards (`tf.data.Dataset.interleave`,
deterministic, so every worker sees the same order); each record is numbered
by `record_key` (shard position, record index), which is how the records the
check found to be no image are dropped. Each example is then decoded as the
folder pipeline does (training.augment: random-resized-crop decoding only the
JPEG crop window, horizontal flip, stateless ops seeded by (seed, epoch,
element)); eval resizes the whole image.
"""

from __future__ import annotations

import os

from training import augment as augment_lib

CYCLE_LENGTH = 16  # shards read at once


def record_key(position, record_index):
    """The int64 number of record `record_index` of the shard at `position`: unique within a split."""
    import tensorflow as tf

    return tf.cast(position, tf.int64) * (1 << 32) + record_index


def shard_files(shards, positions, *, shuffle: bool, seed: int):
    """(path, readable count, position, file name) of the shards at `positions`; their order reshuffled each
    epoch when `shuffle`."""
    import tensorflow as tf

    paths = [shards.paths[p] for p in positions]
    counts = [shards.counts[p] for p in positions]
    names = [os.path.basename(p) for p in paths]
    files = tf.data.Dataset.from_tensor_slices((paths, counts, positions, names))
    if shuffle:
        files = files.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    return files


def shard_records(path, count, position, name):
    """(key, shard name, record index, serialized record) of the first `count` records of one shard."""
    import tensorflow as tf

    ds = tf.data.TFRecordDataset(path).take(tf.cast(count, tf.int64)).enumerate()
    return ds.map(lambda i, r: (record_key(position, i), name, i, r))


def interleaved(files, num_files: int):
    """The records of `files` read `CYCLE_LENGTH` shards at a time, one record from each in turn."""
    import tensorflow as tf

    return files.interleave(
        shard_records,
        cycle_length=max(1, min(CYCLE_LENGTH, num_files)),
        block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )


def without(ds, bad):
    """`ds` less the records numbered (shard position, record index) in `bad`."""
    import tensorflow as tf

    if not bad:
        return ds
    keys = tf.constant(sorted(p * (1 << 32) + r for p, r in bad), tf.int64)
    return ds.filter(lambda key, name, i, r: tf.logical_not(tf.reduce_any(tf.equal(keys, key))))


def parse(record, name, record_index, *, label_offset: int):
    """(image bytes, label counted from 0, example id) of one record; the id is `image/filename`, or
    `<shard>:<record>` when the record has none."""
    import tensorflow as tf

    features = {
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "image/class/label": tf.io.FixedLenFeature([], tf.int64),
        "image/filename": tf.io.FixedLenFeature([], tf.string, default_value=""),
    }
    parsed = tf.io.parse_single_example(record, features)
    label = tf.cast(parsed["image/class/label"] - label_offset, tf.int32)
    example_id = tf.where(
        tf.strings.length(parsed["image/filename"]) > 0,
        parsed["image/filename"],
        tf.strings.join([name, tf.strings.as_string(record_index)], ":"),
    )
    return parsed["image/encoded"], label, example_id


def decode_whole(data):
    """The whole image, uint8 [H, W, 3] (shards hold only what TensorFlow decodes as PIL does)."""
    import tensorflow as tf

    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def example(index, element, *, size, label_offset, augmenting, seed, start_epoch, crop_area, with_ids):
    """(image float32 [S, S, 3] in 0..255, label[, id]) of the `index`-th record of the epoch's stream."""
    import tensorflow as tf

    _, name, record_index, record = element
    data, label, example_id = parse(record, name, record_index, label_offset=label_offset)
    if augmenting:
        element_seed = augment_lib.element_seed(seed, start_epoch, index)
        image = augment_lib.random_crop(
            data, element_seed, crop_area, jpeg=tf.io.is_jpeg(data), decode=lambda: decode_whole(data)
        )
        image = tf.image.resize(image, [size, size], antialias=True)
        image = augment_lib.flip(image, element_seed)
    else:
        image = tf.image.resize(decode_whole(data), [size, size], antialias=True)
    image = tf.clip_by_value(image, 0.0, 255.0)
    return (image, label, example_id) if with_ids else (image, label)
