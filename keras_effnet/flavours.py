"""The two Keras flavours, imported here and nowhere else.

The public API returns Keras 3 models. tensorflow-model-optimization only
accepts Keras 2 models (tensorflow/model-optimization#1119), so quantization-
aware training builds a `tf_keras` twin from the same `ModelSpec`.
"""

from __future__ import annotations

import os

FLAVOURS = ("keras3", "tf_keras")


def keras3():
    """Keras 3 (the `keras` package, TensorFlow backend)."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    return keras


def tf_keras():
    """Keras 2 (`tf_keras`), for tensorflow-model-optimization only."""
    import tf_keras as K

    return K


def get(flavour: str):
    if flavour == "keras3":
        return keras3()
    if flavour == "tf_keras":
        return tf_keras()
    raise ValueError(f"flavour must be one of {FLAVOURS}, got {flavour!r}.")
