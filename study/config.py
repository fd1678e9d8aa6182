"""The flags of `python -m study` (`keras-effnet-study`): one frozen dataclass, the study's typed config.

Every field is a flag (`--name=value`, booleans `--name` / `--noname`); `__post_init__` checks what can be
checked without touching the disk, so a bad value ends in one line before anything is written.
"""

from __future__ import annotations

import dataclasses
import os

from common import cli
from keras_effnet import architecture, families
from study import measure, members

DATASETS = ("synthetic", "folder", "imagenette")


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    out: str = cli.flag(
        "study_out",
        "Study folder: results.csv/json, report.md, plots, and the finished steps a rerun resumes from.",
        group="output",
    )
    members: tuple[str, ...] = cli.flag(
        (),
        "Members, comma-separated: b0..b7, lite0..lite4, v2-b0..v2-b3, v2-s, "
        "v2-m, v2-l, b0-fused1..b0-fused7, resnet50. Default: B0..B7, V2-B0..B3, "
        "V2-S, ResNet-50 and the fused sweep with --measure_only; else b0, b1, "
        "v2-b0, resnet50.",
        group="members",
    )
    formula_phis: tuple[float, ...] = cli.flag(
        (),
        "phi values also built through the literal compound-scaling "
        "formula, beside their presets (cost and Keras batch 1 only).",
        group="members",
    )
    grid_search: bool = cli.flag(
        False,
        "Run the paper's step 1 instead: train a grid of (alpha, beta, gamma) with alpha*beta^2*gamma^2 ~= 2 at phi=1.",
        group="members",
    )
    grid_points: int = cli.flag(
        0, "Only the first N grid points (0: all); the paper's (1.2, 1.1, 1.15) is first.", group="members"
    )
    measure_only: bool = cli.flag(False, "Skip training; measure cost and latency only.", group="members")

    dataset: str | None = cli.flag(
        None,
        "Training data: 'synthetic' (the embedded generated set), 'folder' "
        "(--data_dir with train/ and val/ class folders) or 'imagenette'. Default: "
        "folder when --data_dir is given, else synthetic.",
        group="data",
        choices=DATASETS,
    )
    data_dir: str | None = cli.flag(
        None,
        "Dataset root (train/<class>/*, val/<class>/*). With --measure_only it "
        "only supplies the int8 calibration images.",
        group="data",
    )
    image_size: int = cli.flag(
        0,
        "0: every member at its native resolution. N >= 32: B0 at N px and every other "
        "member scaled like its native size (B7: N*600/224).",
        group="data",
    )

    epochs: int = cli.flag(5, "Training epochs per member.", group="training")
    batch_size: int = cli.flag(32, "Training batch size.", group="training")
    learning_rate: float = cli.flag(0.0, "Learning rate per 256 images (0: the trainer's default).", group="training")
    target_accuracy: float = cli.flag(
        0.5, "Validation top-1 whose time to reach is reported per member.", group="training"
    )
    plateau_epochs: int = cli.flag(
        3,
        "Plateau criterion: a member has converged when the best validation top-1 "
        "of its last N epochs is within --plateau_delta of its best before them.",
        group="training",
    )
    plateau_delta: float = cli.flag(0.01, "See --plateau_epochs.", group="training")

    backends: tuple[str, ...] = cli.flag(
        measure.BACKENDS, "Timed backends, comma-separated.", group="timing", choices=measure.BACKENDS
    )
    rounds: int = cli.flag(
        7, "Interleaved timing rounds (A B C, A B C, ...); the median and IQR are over rounds.", group="timing"
    )
    sample_s: float = cli.flag(
        0.2,
        "Each round's sample of a cell repeats its call until it fills this many seconds (at least one call).",
        group="timing",
    )
    max_spread: float = cli.flag(0.1, "Flag a cell whose IQR exceeds this share of its median.", group="timing")
    threads: int = cli.flag(
        0, "Threads for TensorFlow (intra-op; inter-op 1) and LiteRT (0: all cores).", group="timing"
    )
    throughput_batch: int = cli.flag(
        32, "Keras throughput batch (capped by --max_batch_gmacs, at least 2).", group="timing"
    )
    max_batch_gmacs: float = cli.flag(
        40.0,
        "Cap on GMACs per throughput batch and per int8 calibration set, so B7 at 600 px uses batch 2 on a CPU.",
        group="timing",
    )
    measure_classes: int = cli.flag(1000, "Classifier classes of untrained (measure-only) models.", group="timing")
    calibration_samples: int = cli.flag(
        8, "Images for int8 calibration (dataset images when there is a dataset, else random pixels).", group="timing"
    )
    compare_with: str | None = cli.flag(
        None,
        "Another study folder (same members): the report adds how the two "
        "runs agree (Spearman of each backend's medians, largest difference).",
        group="output",
    )
    convert_workers: int = cli.flag(
        0,
        "Worker processes converting members to .tflite at once (0: one per core, "
        "at most 2); each exits after its member, so the converter's memory is given "
        "back.",
        group="timing",
    )
    keep_tflite: bool = cli.flag(
        False, "Keep the converted .tflite files under OUT/tflite after timing.", group="output"
    )
    seed: int = cli.flag(0, "Seed of the dataset, training and timing inputs.", group="general")

    def __post_init__(self):
        try:
            names = members.check_names(self.members)
        except ValueError as e:
            raise cli.UsageError(f"--members={','.join(self.members)}: {e}") from None
        object.__setattr__(self, "members", names)
        for phi in self.formula_phis:
            try:
                architecture.coefficients(phi, family="efficientnet", scaling="formula")
            except ValueError as e:
                raise cli.UsageError(f"--formula_phis={phi:g}: {e}") from None
        if not self.out:
            raise cli.UsageError("--out is required (the study folder)")
        if self.grid_search and self.measure_only:
            raise cli.UsageError("grid_search", True, "no --measure_only with it: the grid search trains each point")
        if self.dataset == "folder" and not self.data_dir:
            raise cli.UsageError("--dataset=folder needs --data_dir (a folder with train/<class>/ and val/<class>/)")
        for name in (
            "epochs",
            "batch_size",
            "measure_classes",
            "throughput_batch",
            "calibration_samples",
            "rounds",
            "plateau_epochs",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise cli.UsageError(name, value, "an integer >= 1")
        if self.image_size != 0 and self.image_size < families.MIN_INPUT_SIZE:
            raise cli.UsageError("image_size", self.image_size, f"0 (native) or >= {families.MIN_INPUT_SIZE}")
        for name in ("grid_points", "threads", "convert_workers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise cli.UsageError(name, value, "an integer >= 0")
        for name in ("sample_s", "max_batch_gmacs", "max_spread"):
            if not getattr(self, name) > 0:
                raise cli.UsageError(name, getattr(self, name), "a number > 0")
        if self.learning_rate < 0 or not 0 <= self.plateau_delta < 1:
            raise cli.UsageError(
                "learning_rate" if self.learning_rate < 0 else "plateau_delta",
                self.learning_rate if self.learning_rate < 0 else self.plateau_delta,
                "a number >= 0 (plateau_delta below 1)",
            )
        if not 0 < self.target_accuracy <= 1:
            raise cli.UsageError("target_accuracy", self.target_accuracy, "a fraction in (0, 1]")
        if not self.backends:
            raise cli.UsageError("backends", "", "at least one of " + ", ".join(measure.BACKENDS))

    @property
    def dataset_kind(self) -> str:
        """--dataset, or folder when only --data_dir is given, else synthetic."""
        return self.dataset or ("folder" if self.data_dir else "synthetic")

    @property
    def thread_count(self) -> int:
        return self.threads or os.cpu_count() or 1

    @property
    def convert_worker_count(self) -> int:
        """--convert_workers, or one per core up to 2: the converter is single-threaded, and two of them at once
        already need several GB for the largest members."""
        return self.convert_workers or max(1, min(2, os.cpu_count() or 1))

    def member_names(self) -> tuple[str, ...]:
        if self.members:
            return self.members
        names = members.DEFAULT_MEASURE if self.measure_only else members.DEFAULT_TRAIN
        if not members.v2_available():
            names = tuple(n for n in names if not (n.startswith("v2-") or "-fused" in n))
        return names

    def rounds_policy(self) -> measure.Rounds:
        return measure.Rounds(self.rounds, self.sample_s)
