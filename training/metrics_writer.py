"""What a run records as it trains: metrics.json, TensorBoard scalars and the optional Weights & Biases run.

Only the chief writes. metrics.json is rewritten whole and atomically
(`common.files.write_json`) after every epoch's checkpoint, so every epoch it
lists is in a checkpoint (training.checkpoints). TensorBoard gets one
`logs/train` and one `logs/val` writer, one scalar per value and epoch.
Weights & Biases is an optional extra, offline unless WANDB_MODE says
otherwise; `import_wandb` is called before anything starts, so a missing
extra is refused in one line.
"""

from __future__ import annotations

import os

import tensorflow as tf

from common.files import write_json
from training import checkpoints as ckpt_lib
from training.config import ConfigError, TrainConfig


def import_wandb():
    """The wandb module, or a ConfigError naming the extra to install."""
    try:
        import wandb
    except ImportError:
        raise ConfigError(
            "--wandb needs the optional wandb extra, which is not installed: pip install '.[wandb]'"
        ) from None
    return wandb


def _start_wandb(config: TrainConfig, info: dict):
    """Weights & Biases (optional extra), offline unless WANDB_MODE says otherwise."""
    wandb = import_wandb()
    mode = os.environ.get("WANDB_MODE", "offline")
    return wandb.init(project=config.wandb_project, dir=config.out, mode=mode, config=info)


class MetricsWriter:
    """metrics.json of `write_dir`, and the TensorBoard and W&B logs once `open_logs` is called (chief only)."""

    def __init__(self, write_dir: str, *, chief: bool):
        self.write_dir = write_dir
        self.chief = chief
        self.tensorboard = None  # (train writer, val writer)
        self.wandb_run = None

    def write(self, metrics: dict) -> None:
        """Rewrite metrics.json with `metrics` (the chief's; the other workers write nothing)."""
        if self.chief:
            write_json(os.path.join(self.write_dir, ckpt_lib.METRICS), metrics)

    def open_logs(self, config: TrainConfig, info: dict) -> None:
        """Start the TensorBoard writers (--tensorboard) and the W&B run (--wandb) of the chief."""
        if self.chief and config.tensorboard:
            logs = os.path.join(self.write_dir, ckpt_lib.LOGS)
            self.tensorboard = (
                tf.summary.create_file_writer(os.path.join(logs, "train")),
                tf.summary.create_file_writer(os.path.join(logs, "val")),
            )
        self.wandb_run = _start_wandb(config, info) if self.chief and config.wandb else None

    def log_epoch(self, record: dict) -> None:
        """One finished epoch's record to TensorBoard and W&B."""
        epoch = record["epoch"]
        if self.tensorboard:
            train = {
                "loss": record["loss"],
                "accuracy": record["accuracy"],
                "images_per_sec": record["images_per_sec"],
                "learning_rate": record["learning_rate"],
            }
            val = {"loss": record["val_loss"], "accuracy": record["val_accuracy"], "top5": record["val_top5"]}
            for writer, values in zip(self.tensorboard, (train, val)):
                with writer.as_default(step=epoch):
                    for k, v in values.items():
                        tf.summary.scalar(k, v)
                writer.flush()
        if self.wandb_run is not None:
            self.wandb_run.log(record, step=epoch)

    def close(self) -> None:
        """Finish the W&B run."""
        if self.wandb_run is not None:
            self.wandb_run.finish()
