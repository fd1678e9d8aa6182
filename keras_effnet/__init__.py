"""keras_effnet: the compound-scaled EfficientNet families as Keras 3 functional builders.

import keras_effnet
model = keras_effnet.build(phi=3)                      # the official EfficientNet-B3
model = keras_effnet.build(phi=2.5)                    # compound-scaling formula
model = keras_effnet.build(0, family="lite")           # EfficientNet-Lite0
model = keras_effnet.build(1, family="v2")             # EfficientNetV2-B1
model = keras_effnet.build_variant("efficientnetv2-s") # any official member by name
model = keras_effnet.build(0, fused_stages=3)          # B0 with Fused-MBConv in its first 3 stages
"""

from keras_effnet.api import build, build_variant, variants
from keras_effnet.architecture import coefficients, variant_coefficients
from keras_effnet.families import Coefficients
from keras_effnet.profile import Profile, profile

__all__ = [
    "build",
    "build_variant",
    "variants",
    "coefficients",
    "variant_coefficients",
    "profile",
    "Coefficients",
    "Profile",
]
__version__ = "0.1.0"
