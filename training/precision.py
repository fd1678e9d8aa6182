"""The run's Keras dtype policy (mixed precision), set once before the model is built.

bfloat16 needs no loss scaling and runs fast on GPUs of compute capability 8
and above (Ampere, Hopper); float16 needs the LossScaleOptimizer that
`training.optimizer.make_optimizer` adds; elsewhere float32.
"""

from __future__ import annotations

import tensorflow as tf

from keras_effnet import keras_versions


def set_precision(config) -> str:
    """Set the Keras dtype policy; "auto" is bf16 on GPUs of compute capability >= 8, else float32."""
    keras = keras_versions.keras3()
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
