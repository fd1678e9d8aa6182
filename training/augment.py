"""The training augmentations shared by the folder and the shard pipelines.

Random-resized-crop (Szegedy et al. 2015, "Going deeper with convolutions",
as EfficientNet's input pipeline: area `CROP_AREA`, aspect 3/4..4/3) decodes
only the crop window of a JPEG (`tf.image.decode_and_crop_jpeg`), then a
horizontal flip; RandAugment (Cubuk et al. 2020) runs on whole batches.

Every random op is stateless, seeded by (seed, epoch, element index)
(`element_seed`), and every shuffle by (seed, epoch) (`shuffle_seed`): a
pipeline is deterministic for a given seed, and a run resumed at epoch k sees
the same images as one that never stopped.
"""

from __future__ import annotations

AUGMENTS = ("none", "basic", "randaugment")
CROP_AREA = (0.25, 1.0)
CROP_ASPECT = (3 / 4, 4 / 3)


def shuffle_seed(seed: int, start_epoch: int) -> int:
    """The seed of the shuffles of a pipeline that starts at `start_epoch`."""
    return int(seed) * 7919 + int(start_epoch)


def element_seed(seed, start_epoch, index):
    """The stateless-op seed (a [2] int64 tensor) of the element numbered `index` of the epoch's stream."""
    import tensorflow as tf

    return tf.stack([tf.cast(seed, tf.int64) * 1_000_003 + tf.cast(start_epoch, tf.int64), index])


def crop_window(shape, seed, crop_area):
    """(begin, extent) of a random-resized-crop window in an image of `shape` [H, W, C] (stateless, `seed`)."""
    import tensorflow as tf

    begin, extent, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.cast(shape, tf.int32),
        tf.zeros([1, 0, 4], tf.float32),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=CROP_ASPECT,
        area_range=tuple(crop_area),
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    return begin, extent


def random_crop(data, seed, crop_area, *, jpeg, decode):
    """The crop window of the encoded image `data`, uint8 [h, w, 3].

    When `jpeg` (a bool tensor) is true only the window is decoded
    (`decode_and_crop_jpeg`); else `decode()` gives the whole image and the
    window is sliced from it.
    """
    import tensorflow as tf

    def jpeg_crop():
        begin, extent = crop_window(tf.io.extract_jpeg_shape(data), seed, crop_area)
        return tf.image.decode_and_crop_jpeg(data, tf.stack([begin[0], begin[1], extent[0], extent[1]]), channels=3)

    def other_crop():
        image = decode()
        begin, extent = crop_window(tf.shape(image), seed, crop_area)
        return tf.slice(image, begin, extent)

    image = tf.cond(jpeg, jpeg_crop, other_crop)
    image.set_shape([None, None, 3])
    return image


def flip(image, seed):
    """A horizontal flip with probability 1/2, seeded by the element's seed + 1 (the crop uses the seed itself)."""
    import tensorflow as tf

    return tf.image.stateless_random_flip_left_right(image, seed=seed + 1)


def randaugment(seed, start_epoch, magnitude=10.0):
    """RandAugment (Cubuk et al. 2020) on a batch: N=2 ops at `magnitude` of 30 (EfficientNet's recipe: 10)."""
    from keras_effnet import keras_versions

    keras = keras_versions.keras3()
    layer = keras.layers.RandAugment(
        value_range=(0, 255), num_ops=2, factor=float(magnitude) / 30, seed=shuffle_seed(seed, start_epoch)
    )

    def apply(images, labels):
        return layer(images, training=True), labels

    return apply
