"""The training contract: what the trainer does to every model it trains, whoever built it.

`apply_contract` is applied by the loop to whatever a `model_fn` returns
(keras_effnet's EfficientNet, Lite and V2 families, ResNet-50, a grid point),
so every model is "trained the same way" (big_vision sets the head
initialisation in the trainer for whatever model the config names):

  * BatchNorm momentum `config.bn_momentum` on every BatchNormalization layer.
    keras_effnet keeps the paper's 0.99; short runs on small data need 0.9
    (0.99 stayed at chance for 12 epochs: the moving statistics lag far behind
    the weights over a few hundred steps).
  * Synchronised BatchNorm across replicas when `config.sync_bn`
    (Keras 3 `BatchNormalization(synchronized=True)`).
  * The classifier starts at zero when `config.zero_init_head`: uniform
    predictions, as big_vision does. The paper's dense initialiser,
    VarianceScaling(1/3, fan_out), scales with 1/classes, so with 10 classes
    B0 starts with confident random predictions (mean max-probability 0.66,
    cross-entropy ~7 instead of ln 10 = 2.3, measured at 32 px) and a short
    run spends its first hundreds of steps unlearning them.

The layers stay stock Keras layers, so the saved model is a plain model that
loads with `safe_mode=True`. `training.model.export_model` then rebuilds it
in float32 at a fixed size without the sync-BN flag.
"""

from __future__ import annotations

import numpy as np

from keras_effnet import keras_versions


def classifier(model):
    """The model's classifier: the last Dense layer whose units equal the model's outputs, or None."""
    keras = keras_versions.keras3()
    outputs = model.output_shape[-1]
    for layer in reversed(model.layers):
        if isinstance(layer, keras.layers.Dense) and layer.units == outputs:
            return layer
    return None


def apply_contract(model, config, *, pretrained: bool = False) -> dict:
    """Give `model` the trainer's BN momentum, sync-BN and head initialisation; return what was done.

    `pretrained` (a fine-tuning start, training.finetune): the BatchNorm momentum
    is left as built (the paper's 0.99, which the pretrained statistics were
    made with); 0.9 is for statistics estimated from scratch in a short run.
    Call it before the pretrained weights are copied in, so the zero head can
    never overwrite a copied layer.
    """
    keras = keras_versions.keras3()
    bn = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in bn:
        if not pretrained:
            layer.momentum = config.bn_momentum
        layer.synchronized = bool(config.sync_bn)
    head = classifier(model)
    zeroed = bool(config.zero_init_head and head is not None)
    if zeroed:
        head.set_weights([np.zeros(tuple(w.shape), "float32") for w in head.weights])
    momentum = "as built (pretrained)" if pretrained else config.bn_momentum
    return {
        "batch_norm_layers": len(bn),
        "bn_momentum": momentum,
        "sync_bn": bool(config.sync_bn),
        "classifier": head.name if head is not None else None,
        "zero_init_head": zeroed,
    }
