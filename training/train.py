"""`python -m training.train`: train a model (the command line of the trainer).

    python -m training.train --data_dir=my_images --image_size=128 --epochs=20 --out=runs/mine

`--data_dir` without `--dataset` is a folder of images (train/<class>/* and
val/<class>/*, or one <class>/* that training.folder_split splits); with
neither, the embedded synthetic set is generated. `--init_from` starts from
pretrained weights with the fine-tuning recipe of training.finetune. A rerun
of the same command resumes from the last checkpoint in `--out`.

The trainer itself lives in `training.loop` (the loop), `training.contract`
(what every model gets) and `training.checkpoints` (checkpoint and resume);
this module parses flags into a `TrainConfig` and calls `training.loop.run`.
"""

from __future__ import annotations

import os
import sys

from common import cli
from training.checkpoints import MODEL
from training.config import TrainConfig

EXIT_NON_FINITE = 3


def train(config: TrainConfig) -> int:
    """The command: validate, train, print where the model is."""
    config = config.validated()
    if config.data_dir and config.dataset == "folder":
        cli.require_dir(
            "data_dir", config.data_dir, what="a folder of images (train/<class>/* and val/<class>/*, or <class>/*)"
        )
    cli.require_writable_dir("out", config.out)
    # Imported here, not at the top: the loop imports TensorFlow, whose start-up logging would surround the
    # one error line of a refused command line (tests/project/test_every_command.py).
    from training import loop
    from training.epoch import NonFiniteLossError

    try:
        result = loop.run(config)
    except NonFiniteLossError as e:
        print(cli.error_line(str(e)), file=sys.stderr)
        return EXIT_NON_FINITE
    except cli.UsageError:
        raise
    except ValueError as e:  # bad data (an empty or inconsistent folder): the message names the folder
        raise cli.UsageError(str(e)) from None
    final = result["final"]
    if final:
        print(
            f"done: val_accuracy {final['val_accuracy']:.4f} after {final['epoch']} epoch(s); model in "
            f"{os.path.join(config.out, MODEL)}"
        )
    return 0


def main(argv=None) -> int:
    from absl import logging

    logging.set_verbosity(logging.WARNING)
    return cli.main(
        TrainConfig,
        train,
        argv,
        prog="keras-effnet-train",
        description="Train an EfficientNet on a folder of images, resuming from --out when a run is there.",
        resumable=True,
    )


if __name__ == "__main__":
    cli.run_main(main)
