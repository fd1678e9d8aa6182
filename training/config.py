"""`TrainConfig`: every choice of one training run, typed (issue 3; STYLE principle 7).

`training.flags` turns command-line flags into this dataclass; tests build it
directly. `validated()` checks every field and fills the variant-dependent
defaults, with errors that name the field, the value and what is allowed.

Defaults suit small data and short runs, not the paper's 350 ImageNet epochs
(REFERENCE section 5, measured on these machines with keras.applications B0
from scratch, 1.4k images, 32 px, 15 epochs): BatchNorm momentum 0.99 stayed
at chance for 12 epochs because the moving statistics lag far behind the
weights over a few hundred steps; momentum 0.9 with AdamW 3e-3, warm-up +
cosine and weight decay 0.05 reached 0.95; the paper's RMSProp at 0.016
reached 0.39. Hence bn_momentum 0.9, AdamW, cosine by default; the paper's
recipe is one flag away (--optimizer=rmsprop --schedule=exponential
--bn_momentum=0.99 --weight_decay=1e-5 --ema_decay=0.9999).
"""

from __future__ import annotations

import dataclasses
import numbers
import os

DATASETS = ("synthetic", "imagenette", "imagewoof", "folder")
OPTIMIZERS = ("adamw", "rmsprop", "sgd")
AUGMENTS = ("none", "basic", "randaugment")
PRECISIONS = ("auto", "off", "bf16", "fp16")
JIT = ("auto", "on", "off")
STRATEGIES = ("auto", "mirrored", "one_device", "multi_worker")
SCHEDULES = ("cosine", "exponential", "constant")
FAMILIES = ("efficientnet", "lite")
FASTAI_SIZES = ("160", "320", "full")
LABEL_NOISE = (0, 1, 5, 25, 50)

# Per BASE_BATCH (256) images; the rate used is scaled linearly with the global batch.
# adamw 0.024 per 256 = REFERENCE section 5's 3e-3 at batch 32; rmsprop: the paper's 0.016; sgd: Goyal et al.'s 0.1.
DEFAULT_LEARNING_RATE = {"adamw": 0.024, "rmsprop": 0.016, "sgd": 0.1}
# AdamW's decoupled decay (Loshchilov & Hutter 2019); L2 in the loss for the others, as the paper.
DEFAULT_WEIGHT_DECAY = {"adamw": 0.05, "rmsprop": 1e-5, "sgd": 5e-5}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    # model
    phi: float = 0
    family: str = "efficientnet"
    image_size: int | None = None  # None: the variant's native resolution
    dropout_rate: float | None = None  # None: the variant's
    drop_connect_rate: float = 0.2
    bn_momentum: float = 0.9
    zero_init_head: bool = True  # start from uniform predictions (see training.train.build_model)
    init_from: str | None = None  # "imagenet", a .keras model or a .weights.h5 file
    # data
    dataset: str = "synthetic"
    data_dir: str | None = None
    fastai_size: str = "160"
    label_noise: int = 0  # Imagenette noisy_imagenette.csv column noisy_labels_<k>
    augment: str = "basic"
    cache: bool = False
    synthetic_per_class: int = 100
    # optimisation
    epochs: int = 15
    batch_size: int = 64  # global, across all replicas and workers
    learning_rate: float | None = None  # per 256 images; None: DEFAULT_LEARNING_RATE[optimizer]
    optimizer: str = "adamw"
    schedule: str = "cosine"
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    weight_decay: float | None = None  # None: DEFAULT_WEIGHT_DECAY[optimizer]
    ema_decay: float = 0.0  # 0: off
    progressive_resize: bool = False
    steps_per_epoch: int | None = None  # None: one pass over the train set
    # devices
    strategy: str = "auto"
    num_gpus: int | None = None
    cpu_replicas: int = 1
    sync_bn: bool = False
    mixed_precision: str = "auto"
    jit_compile: str = "auto"
    # bookkeeping
    seed: int = 0
    model_dir: str = "runs/effnet"
    tensorboard: bool = True
    wandb: bool = False
    wandb_project: str = "keras_effnet"
    verbose: int = 1

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def validated(self) -> "TrainConfig":
        """A copy with defaults filled in; raises ValueError naming the first bad field."""
        _choice("family", self.family, FAMILIES)
        _choice("dataset", self.dataset, DATASETS)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("augment", self.augment, AUGMENTS)
        _choice("mixed_precision", self.mixed_precision, PRECISIONS)
        _choice("jit_compile", self.jit_compile, JIT)
        _choice("strategy", self.strategy, STRATEGIES)
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("fastai_size", str(self.fastai_size), FASTAI_SIZES)
        _choice("label_noise", self.label_noise, LABEL_NOISE)
        _number("phi", self.phi, low=0)
        _integer("epochs", self.epochs, 1)
        _integer("batch_size", self.batch_size, 1)
        _integer("cpu_replicas", self.cpu_replicas, 1)
        _integer("seed", self.seed, 0)
        _integer("synthetic_per_class", self.synthetic_per_class, 1)
        if self.image_size is not None:
            _integer("image_size", self.image_size, 32)
        if self.steps_per_epoch is not None:
            _integer("steps_per_epoch", self.steps_per_epoch, 1)
        if self.num_gpus is not None:
            _integer("num_gpus", self.num_gpus, 0)
        _number("drop_connect_rate", self.drop_connect_rate, low=0, high=1, high_open=True)
        if self.dropout_rate is not None:
            _number("dropout_rate", self.dropout_rate, low=0, high=1, high_open=True)
        _number("bn_momentum", self.bn_momentum, low=0, high=1, high_open=True)
        _number("warmup_epochs", self.warmup_epochs, low=0)
        _number("label_smoothing", self.label_smoothing, low=0, high=1, high_open=True)
        _number("ema_decay", self.ema_decay, low=0, high=1, high_open=True)
        if self.learning_rate is not None:
            _number("learning_rate", self.learning_rate, low=0, low_open=True)
        if self.weight_decay is not None:
            _number("weight_decay", self.weight_decay, low=0)
        if self.dataset == "folder" and not self.data_dir:
            raise ValueError("data_dir is required with dataset='folder' (a directory with train/<class>/* and val/<class>/*).")
        if self.label_noise and self.dataset != "imagenette":
            raise ValueError(f"label_noise={self.label_noise} needs dataset='imagenette' (noisy_imagenette.csv), got dataset={self.dataset!r}.")
        if not self.model_dir:
            raise ValueError("model_dir must be a directory path, got an empty value.")
        if self.init_from not in (None, "imagenet") and not os.path.exists(self.init_from):
            raise ValueError(f"init_from: {self.init_from!r} does not exist (allowed: 'imagenet', a .keras model or a .weights.h5 file).")
        changes = {}
        if self.learning_rate is None:
            changes["learning_rate"] = DEFAULT_LEARNING_RATE[self.optimizer]
        if self.weight_decay is None:
            changes["weight_decay"] = DEFAULT_WEIGHT_DECAY[self.optimizer]
        if self.image_size is None:
            from keras_effnet import coefficients

            changes["image_size"] = coefficients(self.phi, family=self.family).resolution
        return dataclasses.replace(self, **changes)


def _choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}.")


def _integer(name, value, low):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")


def _number(name, value, *, low=None, high=None, low_open=False, high_open=False):
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = "" if low is None else (f"> {low}" if low_open else f">= {low}")
        hi = "" if high is None else (f"< {high}" if high_open else f"<= {high}")
        raise ValueError(f"{name} must be a number {' and '.join(x for x in (lo, hi) if x)}, got {value!r}.")
