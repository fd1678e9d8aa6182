"""The two Keras versions (Keras 3 and Keras 2 as `tf_keras`), imported here and nowhere else.

The public API returns Keras 3 models. tensorflow-model-optimization only
accepts Keras 2 models (tensorflow/model-optimization#1119), so quantization-
aware training builds a `tf_keras` twin from the same `ModelSpec`.
"""

from __future__ import annotations

import contextlib
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


def deferred_variables(K):
    """A context in which Keras 3 creates layer variables without values, initialising them all on exit.

    Building a functional model spends most of its time creating one TensorFlow
    variable per weight while every layer is traced symbolically; inside
    `keras.StatelessScope` Keras defers that and initialises the variables in
    one pass when the scope exits, with the same initialisers, which roughly
    halves the build time of the large members. A no-op for tf_keras, and
    inside a stateless scope the caller opened (their scope decides).
    """
    scope = getattr(K, "StatelessScope", None)
    try:
        from keras.src.backend.common.stateless_scope import in_stateless_scope
    except ImportError:  # another Keras 3 layout: build the ordinary way
        return contextlib.nullcontext()
    if scope is None or K is not keras3() or in_stateless_scope():
        return contextlib.nullcontext()
    return scope()
