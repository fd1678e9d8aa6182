"""Decoding one image of the input pipeline to the RGB that PIL gives, as tf.data functions.

tf.io.decode_image reads JPEG, PNG, BMP and GIF; for some of their modes
(16-bit PNG, palette BMP, ...) its RGB is not PIL's, and those files
are decoded by PIL inside the pipeline (`needs_pil`, from the header; the folder
scan records the verdict per file, `data.Split.pil_files`). Training decodes
only the random-resized-crop window of a JPEG (training.augment).
Images come out as float32 RGB in [0, 255].
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from training import augment as augment_lib

# (format, PIL mode) pairs that tf.io.decode_image turns into the same RGB as PIL
# (checked by tests/training/test_data.py); anything else is decoded by PIL in the pipeline.
TF_NATIVE = {
    "JPEG": {"L", "RGB", "CMYK"},
    "PNG": {"1", "L", "LA", "P", "RGB", "RGBA"},
    "GIF": {"L", "P"},
    "BMP": {"L", "RGB", "RGBA"},
}


def needs_pil(path: str) -> bool:
    """True when TensorFlow's decoders would not give PIL's RGB for this file (e.g. 16-bit PNG, palette BMP),
    decided from its header (`TF_NATIVE`); True for a file PIL cannot open."""
    try:
        with Image.open(path) as im:
            return im.mode not in TF_NATIVE.get(im.format, ())
    except Exception:  # noqa: BLE001 - check_image has already reported it
        return True


def pil_rgb(path) -> np.ndarray:
    """Decode with PIL to uint8 RGB (H, W, 3); the first frame of an animation."""
    if isinstance(path, bytes):
        path = path.decode()
    elif hasattr(path, "numpy"):
        path = path.numpy().decode()
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def read_file(path, label, pil):
    """(path, the file's bytes, label, pil): the first step of every folder pipeline."""
    import tensorflow as tf

    return path, tf.io.read_file(path), label, pil


def decode_full(data, path, pil):
    """The whole image, uint8 [H, W, 3]: PIL's RGB when `pil`, else TensorFlow's decoder on the bytes `data`."""
    import tensorflow as tf

    def via_pil():
        image = tf.numpy_function(pil_rgb, [path], tf.uint8, stateful=False)
        return tf.reshape(image, tf.stack([tf.shape(image)[0], tf.shape(image)[1], 3]))

    image = tf.cond(pil, via_pil, lambda: tf.io.decode_image(data, channels=3, expand_animations=False))
    image.set_shape([None, None, 3])
    return image


def decode_eval(path, data, label, pil, *, size):
    """The whole image resized to size x size (antialiased), float32 in 0..255."""
    import tensorflow as tf

    image = tf.image.resize(decode_full(data, path, pil), [size, size], antialias=True)
    return tf.clip_by_value(image, 0.0, 255.0), label


def decode_train(index, element, *, size, seed, start_epoch, crop_area):
    """Random-resized-crop of the `index`-th element of the epoch (only the window of a JPEG is decoded), flipped."""
    import tensorflow as tf

    path, data, label, pil = element
    element_seed = augment_lib.element_seed(seed, start_epoch, index)
    jpeg = tf.logical_and(tf.io.is_jpeg(data), tf.logical_not(pil))
    image = augment_lib.random_crop(
        data, element_seed, crop_area, jpeg=jpeg, decode=lambda: decode_full(data, path, pil)
    )
    image = tf.image.resize(image, [size, size], antialias=True)
    image = augment_lib.flip(image, element_seed)
    return tf.clip_by_value(image, 0.0, 255.0), label


def crop_cached(index, element, *, size, seed, start_epoch, crop_area):
    """Random-resized-crop and flip of a cached uint8 image of the training size, resized back to it."""
    import tensorflow as tf

    image, label = element
    element_seed = augment_lib.element_seed(seed, start_epoch, index)
    begin, extent = augment_lib.crop_window(tf.shape(image), element_seed, crop_area)
    # Crop and flip the uint8 image, then one float pass: the resize. Bilinear interpolation without
    # antialiasing stays within the inputs' range, so no clip is needed.
    channels = image.shape[-1]
    image = augment_lib.flip(tf.slice(image, begin, extent), element_seed)
    image = tf.image.resize(image, [size, size])
    image.set_shape([size, size, channels])  # the slice's window is a tensor: keep the static shape it cannot infer
    return image, label
