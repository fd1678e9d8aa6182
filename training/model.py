"""The model a run trains and the model it saves.

`build_model` is the default `model_fn` of `training.loop.run`: keras_effnet's
builder with the run's variant, head and regularisation. `export_model` is
what the run saves: the trained weights in a fresh float32 model at a fixed
size, with the training contract (training.contract) but no sync-BN flag.
"""

from __future__ import annotations

import keras_effnet
from keras_effnet import keras_versions
from training import contract


def build_model(config, num_classes: int, *, image_size=None):
    """keras_effnet.build with the run's variant, head and regularisation (the default `model_fn`).

    The contract (BN momentum, sync BN, zero head) is applied by the trainer, not here.
    """
    shape = (None, None, 3) if image_size is None else (image_size, image_size, 3)
    return keras_effnet.build(
        config.phi,
        family=config.family,
        classes=num_classes,
        input_shape=shape,
        dropout_rate=config.dropout_rate,
        drop_connect_rate=config.drop_connect_rate,
    )


def export_model(trained, config, num_classes: int, image_size: int, *, model_fn=None, pretrained: bool = False):
    """A fresh float32 model at a fixed `image_size`, holding `trained`'s weights.

    What gets saved: no distribution strategy, no mixed-precision policy, no
    sync-BN flag and a fixed input size even after progressive resizing, so it
    loads with `safe_mode=True` and converts to TFLite as built. The BN
    momentum of the contract is kept (it is part of the saved config).
    """
    keras = keras_versions.keras3()
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        plain = config.replace(sync_bn=False, zero_init_head=False)
        model = (model_fn or build_model)(plain, num_classes, image_size=image_size)
        contract.apply_contract(model, plain, pretrained=pretrained)
    finally:
        keras.config.set_dtype_policy(previous)
    model.set_weights([w.numpy() if hasattr(w, "numpy") else w for w in (v.value for v in trained.weights)])
    for layer in model.layers:
        if isinstance(layer, keras.layers.Normalization):
            layer.finalize_state()
    return model
