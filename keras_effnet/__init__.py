"""keras_effnet: the compound-scaled EfficientNet family as Keras 3 functional builders.

    import keras_effnet
    model = keras_effnet.build(phi=3)          # the official EfficientNet-B3
    model = keras_effnet.build(phi=2.5)        # compound-scaling formula
    model = keras_effnet.build(0, family="lite")  # EfficientNet-Lite0
"""

from keras_effnet.api import build
from keras_effnet.architecture import Coefficients, coefficients
from keras_effnet.profile import Profile, profile

__all__ = ["build", "coefficients", "profile", "Coefficients", "Profile"]
__version__ = "0.1.0"
