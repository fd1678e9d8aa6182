"""absl flags of `python -m training.demo`, until that command moves to keras_effnet.cli like the others.

The trainer, `training.evaluate` and `training.predict` declare their flags as
typed configs (keras_effnet.cli); library code never reads FLAGS.
"""

from __future__ import annotations

from absl import flags


def define_demo_flags() -> None:
    from training import demo

    flags.DEFINE_string("out", "demo_out", "Output directory: data/ (the synthetic set) and train/ (model.keras, labels.txt, metrics.json).")
    flags.DEFINE_integer("epochs", demo.EPOCHS, "Epochs.")
    flags.DEFINE_integer("image_size", demo.IMAGE_SIZE, "Training resolution.")
    flags.DEFINE_integer("per_class", demo.PER_CLASS, "Synthetic training images per class.")
    flags.DEFINE_integer("verbose", 2, "Progress: 0 none, 1 bar, 2 one line per epoch.")
