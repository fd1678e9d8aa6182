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
loads with `safe_mode=True`. `export_model` then rebuilds it in float32 at a
fixed size without the sync-BN flag.
"""

from __future__ import annotations

import numpy as np


def classifier(model):
    """The model's classifier: the last Dense layer whose units equal the model's outputs, or None."""
    from keras_effnet import flavours

    keras = flavours.keras3()
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
    from keras_effnet import flavours

    keras = flavours.keras3()
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


def build_model(config, num_classes: int, *, image_size=None):
    """keras_effnet.build with the run's variant, head and regularisation (the default `model_fn`).

    The contract (BN momentum, sync BN, zero head) is applied by the trainer, not here.
    """
    import keras_effnet

    shape = (None, None, 3) if image_size is None else (image_size, image_size, 3)
    return keras_effnet.build(
        config.phi,
        family=config.family,
        classes=num_classes,
        input_shape=shape,
        dropout_rate=config.dropout_rate,
        drop_connect_rate=config.drop_connect_rate,
    )


def set_precision(config) -> str:
    """Set the Keras dtype policy; "auto" is bf16 on GPUs of compute capability >= 8, else float32."""
    import tensorflow as tf

    from keras_effnet import flavours

    keras = flavours.keras3()
    mode = config.mixed_precision
    if mode == "auto":
        mode = "off"
        for gpu in tf.config.list_physical_devices("GPU"):
            cc = tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0))
            if cc and cc[0] >= 8:
                mode = "bf16"
    policy = {"off": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}[mode]
    keras.config.set_dtype_policy(policy)
    return policy


def export_model(trained, config, num_classes: int, image_size: int, *, model_fn=None, pretrained: bool = False):
    """A fresh float32 model at a fixed `image_size`, holding `trained`'s weights.

    What gets saved: no distribution strategy, no mixed-precision policy, no
    sync-BN flag and a fixed input size even after progressive resizing, so it
    loads with `safe_mode=True` and converts to TFLite as built. The BN
    momentum of the contract is kept (it is part of the saved config).
    """
    from keras_effnet import flavours

    keras = flavours.keras3()
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        plain = config.replace(sync_bn=False, zero_init_head=False)
        model = (model_fn or build_model)(plain, num_classes, image_size=image_size)
        apply_contract(model, plain, pretrained=pretrained)
    finally:
        keras.config.set_dtype_policy(previous)
    model.set_weights([w.numpy() if hasattr(w, "numpy") else w for w in (v.value for v in trained.weights)])
    for layer in model.layers:
        if isinstance(layer, keras.layers.Normalization):
            layer.finalize_state()
    return model


def make_optimizer(config, model, learning_rate: float):
    """AdamW (decoupled decay, not on BN/biases), RMSProp with the paper's settings, or SGD with Nesterov momentum.

    Under mixed_float16 the optimizer is wrapped in Keras' LossScaleOptimizer (dynamic loss scaling,
    Micikevicius et al. 2018): float16 gradients of small losses would underflow to zero.
    """
    from keras_effnet import flavours

    keras = flavours.keras3()
    if config.optimizer == "adamw":
        opt = keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=config.weight_decay)
        opt.exclude_from_weight_decay(var_list=[v for v in model.trainable_variables if len(v.shape) <= 1])
    elif config.optimizer == "rmsprop":
        # Tan & Le 2019, section 5.2: decay 0.9, momentum 0.9, epsilon 1e-3.
        opt = keras.optimizers.RMSprop(learning_rate=learning_rate, rho=0.9, momentum=0.9, epsilon=1e-3)
    else:
        opt = keras.optimizers.SGD(learning_rate=learning_rate, momentum=0.9, nesterov=True)
    if keras.config.dtype_policy().name == "mixed_float16":
        opt = keras.optimizers.LossScaleOptimizer(opt)
    return opt


def l2_variables(model):
    """Kernels that take L2 weight decay: everything but BatchNorm parameters and biases (paper: not on BN)."""
    return [v for v in model.trainable_variables if len(v.shape) > 1]
