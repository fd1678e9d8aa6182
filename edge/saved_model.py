"""A SavedModel for a server (TensorFlow Serving, `tf.saved_model.load`), written by `--formats=saved_model`.

The converter's SavedModel (`edge.convert.export_saved_model`) has a fixed batch of 1 so that the SE reshape
folds for TFLite; a server wants any batch and, from a browser or a phone, the encoded file rather than a
decoded tensor. This one carries two signatures, both returning `probabilities` (N, classes) and
`class_names` (N, classes: the names in column order, repeated per row, because TF Serving's row format needs
every output to share the batch dimension) and `top_class` (N,):

- `serving_default(images)`: float32 (N, S, S, 3), raw RGB pixels 0..255 at the model's size S (the model holds
  its own rescaling and normalisation).
- `serve_image_bytes(image_bytes)`: string (N,), encoded JPEG/PNG/GIF/BMP files of any size. Each is decoded to
  RGB (`tf.io.decode_image(channels=3, expand_animations=False)`) and resized to S x S bilinearly with
  antialiasing (`tf.image.resize(..., antialias=True)`): the evaluation pipeline of `training.data`, so a server
  sees what training and export evaluated.

TF Serving's REST API carries binary strings as `{"b64": ...}` objects (tensorflow.org/tfx/serving/api_rest,
"Encoding binary values"); docs/edge.md has the request.
"""

from __future__ import annotations

import os

SERVING = "serving_default"
BYTES = "serve_image_bytes"
IMAGES_INPUT = "images"
BYTES_INPUT = "image_bytes"


def decode_and_resize(data, image_size: int):
    """One encoded image (a scalar string tensor) as float32 (S, S, 3), 0..255: the eval pipeline's decode."""
    import tensorflow as tf

    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return tf.image.resize(image, [image_size, image_size], antialias=True)


def build_module(model, class_names):
    """A `tf.Module` holding `model` with the two serving functions (see the module docstring)."""
    import tensorflow as tf

    size = int(model.input_shape[1])
    classes = int(model.output_shape[-1])
    names = [str(c) for c in class_names]
    if len(names) != classes:
        raise ValueError(f"class_names: {len(names)} names for a model with {classes} outputs.")
    module = tf.Module()
    module.model = model
    module.names = tf.constant(names)

    def classify(images):
        probs = tf.cast(model(images, training=False), tf.float32)
        batch = tf.shape(probs)[0]
        return {
            "probabilities": probs,
            "class_names": tf.tile(module.names[None], [batch, 1]),
            "top_class": tf.gather(module.names, tf.argmax(probs, axis=1)),
        }

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32, name=IMAGES_INPUT)])
    def serve_images(images):
        return classify(images)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=BYTES_INPUT)])
    def serve_bytes(image_bytes):
        images = tf.map_fn(
            lambda b: decode_and_resize(b, size),
            image_bytes,
            fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32),
        )
        return classify(images)

    module.serve_images = serve_images
    module.serve_bytes = serve_bytes
    return module


def write(model, class_names, directory: str) -> str:
    """Write the serving SavedModel of `model` to `directory` (which must not exist) and return it."""
    import tensorflow as tf

    directory = os.fspath(directory)
    if os.path.exists(directory):
        raise ValueError(f"saved_model: {directory!r} already exists.")
    module = build_module(model, class_names)
    tf.saved_model.save(
        module,
        directory,
        signatures={
            SERVING: module.serve_images.get_concrete_function(),
            BYTES: module.serve_bytes.get_concrete_function(),
        },
    )
    return directory
