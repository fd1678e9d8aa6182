"""`TrainConfig`: every choice of one training run, typed, and the trainer's command-line flags.

The fields are the flags of `python -m training.train` (common.cli's
convention: `--name=value`, `--name` / `--noname` for booleans); tests and
library callers build the dataclass directly. `validated()` checks every field
and fills the variant-dependent defaults, with errors that name the flag, the
value and what is allowed.

Defaults suit small data and short runs, not the paper's 350 ImageNet epochs
(measured on 2-core CPUs with keras.applications B0 from scratch, 1.4k images,
32 px, 15 epochs): BatchNorm momentum 0.99 stayed at chance for 12 epochs
because the moving statistics lag far behind the weights over a few hundred
steps; momentum 0.9 with AdamW 3e-3, warm-up + cosine and weight decay 0.05
reached 0.95; the paper's RMSProp at 0.016 reached 0.39. Hence bn_momentum 0.9,
AdamW, cosine by default; the paper's recipe is one flag away
(--optimizer=rmsprop --schedule=exponential --bn_momentum=0.99
--weight_decay=1e-5 --ema_decay=0.9999).
"""

from __future__ import annotations

import dataclasses
import numbers
import os

from common import cli
from keras_effnet.families import FAMILIES
from training.augment import AUGMENTS
from training.cluster import CLUSTERS, DEFAULT_PORT

DATASETS = ("synthetic", "imagenette", "imagewoof", "folder")
OPTIMIZERS = ("adamw", "rmsprop", "sgd")
PRECISIONS = ("auto", "off", "bf16", "fp16")
JIT = ("auto", "on", "off")
STRATEGIES = ("auto", "mirrored", "one_device", "multi_worker")
SCHEDULES = ("cosine", "exponential", "constant")
FASTAI_SIZES = ("160", "320", "full")
LABEL_NOISE = (0, 1, 5, 25, 50)
CLASS_WEIGHTS = ("none", "balanced")
FINETUNE = ("auto", "off")

# Per BASE_BATCH (256) images; the rate used is scaled linearly with the global batch.
# adamw 0.024 per 256 = 3e-3 at batch 32 (measured, see above); rmsprop: the paper's 0.016; sgd: Goyal et al.'s 0.1.
DEFAULT_LEARNING_RATE = {"adamw": 0.024, "rmsprop": 0.016, "sgd": 0.1}
# AdamW's decoupled decay (Loshchilov & Hutter 2019); L2 in the loss for the others, as the paper.
DEFAULT_WEIGHT_DECAY = {"adamw": 0.05, "rmsprop": 1e-5, "sgd": 5e-5}

# Fields that do not change what a run computes: a rerun may change them and still resume.
RESUMABLE_CHANGES = frozenset(
    {
        "epochs",
        "verbose",
        "tensorboard",
        "wandb",
        "wandb_project",
        "overwrite",
        "steps_per_loop",
        "checkpoint_every_steps",
        "cache",
        "strategy",
        "num_gpus",
        "cpu_replicas",
        "jit_compile",
        "out",
        "cluster",
        "cluster_port",
        "record_ids",
    }
)


class ConfigError(cli.UsageError, ValueError):
    """A bad field value: one line on the command line (exit 2), a ValueError for library callers."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    # model
    phi: float = cli.flag(
        0,
        "Compound coefficient: 0..8 the official B0..B8 (Lite0..4 with --family=lite, V2-B0..B3 with --family=v2).",
        group="model",
    )
    family: str = cli.flag("efficientnet", "Model family.", group="model", choices=FAMILIES)
    image_size: int | None = cli.flag(
        None, "Training resolution (none: the variant's native resolution).", group="model"
    )
    dropout_rate: float | None = cli.flag(
        None, "Head dropout (none: adaptive, up to the variant's; see training/regularization.py).", group="model"
    )
    drop_connect_rate: float | None = cli.flag(
        None, "Stochastic depth rate (none: adaptive, 0 at small images up to 0.2).", group="model"
    )
    bn_momentum: float = cli.flag(
        0.9, "BatchNorm moving-average momentum (the paper: 0.99; 0.9 suits short runs).", group="model"
    )
    zero_init_head: bool = cli.flag(
        True, "Start the classifier at zero (uniform predictions); suits few classes.", group="model"
    )
    init_from: str | None = cli.flag(
        None,
        "Start from pretrained weights: 'imagenet' (B0-B7, V2), the official Lite "
        ".tar.gz, its folder or checkpoint prefix (Lite), a .keras model or a .weights.h5 file.",
        group="model",
    )
    # data
    dataset: str | None = cli.flag(
        None,
        "synthetic (embedded, no download), imagenette, imagewoof or folder "
        "(none: folder when --data_dir is given, else synthetic).",
        group="data",
        choices=DATASETS,
    )
    data_dir: str | None = cli.flag(
        None,
        "folder: a folder of images (train/<class>/* and val/<class>/*, or one <class>/* split by --val_split); imagenette/imagewoof: "
        "where the archive is unpacked; synthetic: where it is generated (none: OUT/synthetic_data).",
        group="data",
    )
    fastai_size: str = cli.flag("160", "Imagenette/Imagewoof archive size.", group="data", choices=FASTAI_SIZES)
    label_noise: int = cli.flag(
        0,
        "Imagenette: train labels from noisy_imagenette.csv column noisy_labels_<k>.",
        group="data",
        choices=LABEL_NOISE,
    )
    augment: str = cli.flag(
        "basic", "none, basic (random-resized-crop + flip) or randaugment.", group="data", choices=AUGMENTS
    )
    crop_scale_min: float | None = cli.flag(
        None,
        "Random-resized-crop: smallest crop area, a fraction of the image "
        "(none: adaptive, 1 = no crop at <= 64 px down to 0.08 at 224 px on 100k images).",
        group="data",
    )
    randaugment_magnitude: float | None = cli.flag(
        None,
        "RandAugment magnitude of 30 with --augment=randaugment (none: adaptive, 5 at small images up to 15).",
        group="data",
    )
    cache: bool = cli.flag(
        True,
        "Keep the images decoded at the training size in memory when they fit (a quarter of RAM, "
        "at most 2 GiB; else the file bytes): after the first epoch a step only crops and flips.",
        group="data",
    )
    val_split: float = cli.flag(
        0.2,
        "One-folder dataset (DIR/<class>/*): the fraction of every class held out for "
        "validation, split once per --seed and recorded in OUT/split.json.",
        group="data",
    )
    class_weight: str = cli.flag(
        "none",
        "none, or balanced: weight each class's loss by its inverse frequency.",
        group="data",
        choices=CLASS_WEIGHTS,
    )
    synthetic_per_class: int = cli.flag(100, "Synthetic dataset: training images per class.", group="data")
    label_offset: int | None = cli.flag(
        None,
        "TFRecord shards: subtracted from image/class/label (none: index.json's, "
        "else 1 as tensorflow/tpu's imagenet_to_gcs.py; 0 for writers that count from 0).",
        group="data",
    )
    record_ids: str | None = cli.flag(
        None,
        "TFRecord shards: each worker appends '<epoch> <step> <id>' for every "
        "training example its pipeline reads to DIR/worker-<w>.txt (checks the split).",
        group="data",
    )
    # optimisation
    epochs: int = cli.flag(15, "Epochs.", group="optimisation")
    batch_size: int = cli.flag(64, "Global batch size, across all replicas and workers.", group="optimisation")
    learning_rate: float | None = cli.flag(
        None,
        "Peak learning rate per 256 images, scaled linearly with the global batch "
        f"(none: per optimizer, {DEFAULT_LEARNING_RATE}).",
        group="optimisation",
    )
    optimizer: str = cli.flag(
        "adamw",
        "adamw, rmsprop (the paper's: decay 0.9, momentum 0.9, eps 1e-3) or sgd.",
        group="optimisation",
        choices=OPTIMIZERS,
    )
    schedule: str = cli.flag(
        "cosine",
        "After warm-up: cosine, exponential (the paper's 0.97 every 2.4 epochs) or constant.",
        group="optimisation",
        choices=SCHEDULES,
    )
    warmup_epochs: float = cli.flag(1.0, "Linear warm-up length in epochs.", group="optimisation")
    label_smoothing: float = cli.flag(0.1, "Label smoothing.", group="optimisation")
    weight_decay: float | None = cli.flag(
        None,
        "Weight decay, not on BatchNorm or biases: decoupled for adamw, L2 in the loss "
        f"otherwise (none: per optimizer, {DEFAULT_WEIGHT_DECAY}).",
        group="optimisation",
    )
    ema_decay: float = cli.flag(
        0.0, "Exponential moving average of the weights (0 = off; the paper: 0.9999).", group="optimisation"
    )
    progressive_resize: bool = cli.flag(
        False, "Train at growing image sizes over the epochs (EfficientNetV2).", group="optimisation"
    )
    steps_per_epoch: int | None = cli.flag(
        None, "Cap on steps per epoch (none: one pass over the train set).", group="optimisation"
    )
    # fine-tuning (training/finetune.py)
    finetune: str = cli.flag(
        "auto",
        "auto: the fine-tuning recipe whenever --init_from is given; off: every layer "
        "trains from the first step, as from scratch.",
        group="fine-tuning",
        choices=FINETUNE,
    )
    head_epochs: int | None = cli.flag(
        None,
        "Fine-tuning: epochs that train the new classifier only, backbone frozen "
        "(none: a fifth of --epochs, at least 1).",
        group="fine-tuning",
    )
    unfreeze: str = cli.flag(
        "all",
        "Fine-tuning: after the head epochs, train all backbone layers or the top N blocks "
        "(0: the head only throughout).",
        group="fine-tuning",
    )
    bn_trainable: bool = cli.flag(
        False,
        "Fine-tuning: let BatchNorm layers train (batch statistics); by default they "
        "stay in inference mode with the pretrained statistics.",
        group="fine-tuning",
    )
    head_lr_scale: float | None = cli.flag(
        None,
        "Fine-tuning: the head stage's peak learning rate as a multiple of "
        "--learning_rate (none: 10, measured in docs/finetune.md).",
        group="fine-tuning",
    )
    finetune_lr_scale: float | None = cli.flag(
        None,
        "Fine-tuning: the backbone stage's peak learning rate as a multiple "
        "of --learning_rate (none: 1, measured in docs/finetune.md).",
        group="fine-tuning",
    )
    # devices
    strategy: str = cli.flag(
        "auto", "auto, mirrored, one_device or multi_worker (TF_CONFIG).", group="devices", choices=STRATEGIES
    )
    num_gpus: int | None = cli.flag(None, "GPUs to use (none: all).", group="devices")
    cpu_replicas: int = cli.flag(
        1, "Without GPUs: split the CPU into N logical devices (MirroredStrategy on CPU).", group="devices"
    )
    sync_bn: bool = cli.flag(False, "Synchronise BatchNorm statistics across replicas.", group="devices")
    mixed_precision: str = cli.flag(
        "auto",
        "auto (bf16 on GPUs with compute capability >= 8), off, bf16, fp16 (with loss scaling).",
        group="devices",
        choices=PRECISIONS,
    )
    jit_compile: str = cli.flag(
        "auto", "XLA: auto = on for GPUs only (on CPU it trained B0 ~10x slower).", group="devices", choices=JIT
    )
    steps_per_loop: int | None = cli.flag(
        None,
        "Training steps per graph call; loss and accuracy stay on the device in between "
        "(none: as many as take about 0.25 s, so the progress bar moves a few times a second).",
        group="devices",
    )
    cluster: str = cli.flag(
        "auto",
        "Multi-worker cluster: auto (TF_CONFIG when set), tf_config (a Kubernetes TFJob) or "
        "slurm (srun's variables; implies --strategy=multi_worker).",
        group="devices",
        choices=CLUSTERS,
    )
    cluster_port: int = cli.flag(
        DEFAULT_PORT,
        "--cluster=slurm: port of each node's first task (the next tasks take the next ports).",
        group="devices",
    )
    # output
    seed: int = cli.flag(0, "Random seed (data order, augmentation, initialisation).", group="output")
    out: str = cli.flag(
        "runs/effnet",
        "Output: model.keras, labels.txt, metrics.json, checkpoints/, logs/. A rerun resumes.",
        group="output",
    )
    checkpoint_every_steps: int | None = cli.flag(
        None,
        "Also checkpoint every N steps inside an epoch (none: at the end of each "
        "epoch only); a kill then loses at most N steps.",
        group="output",
    )
    overwrite: bool = cli.flag(
        False, "Start over in an --out folder that holds a run with another configuration (deletes it).", group="output"
    )
    tensorboard: bool = cli.flag(True, "Write TensorBoard logs to OUT/logs.", group="output")
    wandb: bool = cli.flag(
        False,
        "Log to Weights & Biases (needs pip install '.[wandb]'; offline unless WANDB_MODE is set).",
        group="output",
    )
    wandb_project: str = cli.flag("keras_effnet", "Weights & Biases project.", group="output")
    verbose: int = cli.flag(1, "Progress: 0 none, 1 bar, 2 one line per epoch.", group="output", choices=(0, 1, 2))

    def __post_init__(self):
        # --phi=1 parses as 1.0: keep whole numbers as ints, so configs compare and print as users wrote them.
        if isinstance(self.phi, float) and self.phi.is_integer():
            object.__setattr__(self, "phi", int(self.phi))

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def validated(self) -> "TrainConfig":
        """A copy with defaults filled in; raises ConfigError (a ValueError) naming the first bad field."""
        self._check_choices_and_counts()
        self._check_rates()
        dataset = self._check_sources()
        return dataclasses.replace(self, **self._filled_defaults(dataset))

    def _check_choices_and_counts(self) -> None:
        _choice("family", self.family, FAMILIES)
        if self.dataset is not None:
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
        _choice("class_weight", self.class_weight, CLASS_WEIGHTS)
        _choice("finetune", self.finetune, FINETUNE)
        _number("val_split", self.val_split, low=0, high=1, low_open=True, high_open=True)
        if self.head_epochs is not None:
            _integer("head_epochs", self.head_epochs, 0)
        if not (str(self.unfreeze) == "all" or (not isinstance(self.unfreeze, bool) and str(self.unfreeze).isdigit())):
            raise ConfigError("unfreeze", self.unfreeze, "all, or a number of top blocks >= 0")
        if self.finetune_lr_scale is not None:
            _number("finetune_lr_scale", self.finetune_lr_scale, low=0, low_open=True)
        if self.head_lr_scale is not None:
            _number("head_lr_scale", self.head_lr_scale, low=0, low_open=True)
        _integer("epochs", self.epochs, 1)
        _integer("batch_size", self.batch_size, 1)
        _integer("cpu_replicas", self.cpu_replicas, 1)
        _integer("seed", self.seed, 0)
        _integer("synthetic_per_class", self.synthetic_per_class, 1)
        _choice("cluster", self.cluster, CLUSTERS)
        _integer("cluster_port", self.cluster_port, 1)
        if self.label_offset is not None:
            _integer("label_offset", self.label_offset, 0)
        for name in ("image_size", "steps_per_epoch", "num_gpus", "steps_per_loop", "checkpoint_every_steps"):
            value = getattr(self, name)
            if value is not None:
                _integer(name, value, {"image_size": 32, "num_gpus": 0}.get(name, 1))

    def _check_rates(self) -> None:
        if self.drop_connect_rate is not None:
            _number("drop_connect_rate", self.drop_connect_rate, low=0, high=1, high_open=True)
        if self.crop_scale_min is not None:
            _number("crop_scale_min", self.crop_scale_min, low=0, high=1, low_open=True)
        if self.randaugment_magnitude is not None:
            _number("randaugment_magnitude", self.randaugment_magnitude, low=0, high=30)
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

    def _check_sources(self) -> str:
        """The dataset kind the run reads, after checking that its data and its starting weights exist."""
        dataset = self.dataset or ("folder" if self.data_dir else "synthetic")
        if dataset == "folder" and not self.data_dir:
            raise ConfigError(
                "--data_dir is required with --dataset=folder (a folder with train/<class>/* and val/<class>/*)"
            )
        if self.label_noise and dataset != "imagenette":
            raise ConfigError(
                "label_noise",
                self.label_noise,
                f"0 unless --dataset=imagenette (noisy_imagenette.csv); dataset is {dataset}",
            )
        if not self.out:
            raise ConfigError("out", "''", "a folder path")
        if self.init_from not in (None, "imagenet") and not (
            os.path.exists(self.init_from) or os.path.exists(self.init_from + ".index")
        ):
            raise ConfigError(
                "init_from",
                self.init_from,
                "'imagenet', an existing .keras model or .weights.h5 file, or "
                "for Lite the official .tar.gz, its folder or checkpoint prefix",
            )
        return dataset

    def _filled_defaults(self, dataset: str) -> dict:
        changes = {"dataset": dataset, "unfreeze": str(self.unfreeze)}
        if self.learning_rate is None:
            changes["learning_rate"] = DEFAULT_LEARNING_RATE[self.optimizer]
        if self.weight_decay is None:
            changes["weight_decay"] = DEFAULT_WEIGHT_DECAY[self.optimizer]
        if self.image_size is None:
            from keras_effnet import coefficients

            changes["image_size"] = coefficients(self.phi, family=self.family).resolution
        return changes


def differences(old: dict, new: "TrainConfig") -> list[str]:
    """The fields whose values in `old` (a config as saved in JSON) and `new` change what the run computes."""
    wanted = json_config(new)
    # A field added after the run was saved reads as its default there, so older runs still resume.
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    return sorted(
        k for k in set(old) | set(wanted) if k not in RESUMABLE_CHANGES and old.get(k, defaults.get(k)) != wanted.get(k)
    )


def json_config(config: "TrainConfig") -> dict:
    """The config as it reads back from metrics.json (tuples as lists)."""
    import json

    return json.loads(json.dumps(dataclasses.asdict(config)))


def _choice(name, value, allowed):
    if value not in allowed:
        raise ConfigError(name, value, "one of " + ", ".join(map(str, allowed)))


def _integer(name, value, low):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ConfigError(name, value, f"an integer >= {low}")


def _number(name, value, *, low=None, high=None, low_open=False, high_open=False):
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = "" if low is None else (f"> {low}" if low_open else f">= {low}")
        hi = "" if high is None else (f"< {high}" if high_open else f"<= {high}")
        raise ConfigError(name, value, f"a number {' and '.join(x for x in (lo, hi) if x)}")
