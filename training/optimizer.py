"""The optimizer of a run and the weights that take L2 weight decay."""

from __future__ import annotations

from keras_effnet import keras_versions


def make_optimizer(config, model, learning_rate: float):
    """AdamW (decoupled decay, not on BN/biases), RMSProp with the paper's settings, or SGD with Nesterov momentum.

    Under mixed_float16 the optimizer is wrapped in Keras' LossScaleOptimizer (dynamic loss scaling,
    Micikevicius et al. 2018): float16 gradients of small losses would underflow to zero.
    """
    keras = keras_versions.keras3()
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
