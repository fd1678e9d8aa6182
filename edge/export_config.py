"""The configuration of `keras-effnet-export`: its flags as one typed config, and the checks that need no model.

Library code takes an `ExportConfig`; only `edge.export` reads the command line.
"""

from __future__ import annotations

import dataclasses

from common import cli
from edge import formats as formats_lib
from edge.evaluate import MAX_TOP1_DROP_POINTS
from edge.formats import ALL_FORMATS, CALIBRATED_FORMATS, FLOAT_FORMATS, IO_DTYPES, MIXED, SAVED_MODEL


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """The flags of `keras-effnet-export`, and the keywords of `export_all`."""

    model: str | None = cli.flag(
        None,
        "A .keras model built by keras_effnet (labels.txt beside it names the classes).",
        group="input",
        required=True,
    )
    data_dir: str | None = cli.flag(
        None,
        "Folder with train/<class>/ and val/<class>/ images: calibration from train, accuracy on val.",
        group="input",
    )
    calibration_dir: str | None = cli.flag(
        None,
        "Any folder of images, labelled or not, to calibrate the int8 "
        "formats (default: the train images of --data_dir).",
        group="input",
    )
    labels: str | None = cli.flag(
        None,
        "Class names, one per line (default: labels.txt beside the model, then the class folders of --data_dir).",
        group="input",
    )
    out: str | None = cli.flag(
        None,
        "Output folder: one .tflite per format, labels.txt, report.json, report.md.",
        group="output",
        required=True,
    )
    formats: tuple[str, ...] = cli.flag(
        (), "Formats, comma-separated (default: every one the inputs allow).", group="output", choices=ALL_FORMATS
    )
    io_dtype: str = cli.flag(
        formats_lib.IO_DTYPE,
        "Input/output type of int8 and qat_int8 (float32 runs fully on XNNPACK).",
        group="output",
        choices=IO_DTYPES,
    )
    model_version: str | None = cli.flag(
        None, "Version written into the metadata (default: sha256 of the model file).", group="output"
    )
    mixed_int8: bool = cli.flag(
        True,
        f"When int8 loses more than {MAX_TOP1_DROP_POINTS:g} top-1 point, also "
        f"write {MIXED} (fewest layers in float within it).",
        group="output",
    )
    num_calibration: int = cli.flag(100, "Images used to calibrate the int8 and int16x8 formats.", group="data")
    max_val_images: int | None = cli.flag(None, "Evaluate on at most this many validation images.", group="data")
    qat_epochs: int = cli.flag(0, "QAT fine-tune epochs before qat_int8 (0: use --qat_dir).", group="qat")
    qat_dir: str | None = cli.flag(None, "A folder written by keras-effnet-qat to convert as qat_int8.", group="qat")
    batch_size: int = cli.flag(32, "Global batch size of the QAT fine-tune.", group="qat")
    learning_rate: float = cli.flag(1e-4, "Adam learning rate of the QAT fine-tune.", group="qat")
    steps_per_epoch: int | None = cli.flag(None, "Limit the QAT fine-tune steps per epoch.", group="qat")
    threads: int = cli.flag(1, "CPU threads for the latency measurement.", group="timing")
    latency_runs: int = cli.flag(50, "Timed runs per format (after 5 warm-up runs).", group="timing")
    diagnostics: bool = cli.flag(False, "Per-layer float-vs-int8 error of the int8 format.", group="output")
    audit_ranges: bool = cli.flag(
        True,
        "Check the calibrator's activation ranges against LiteRT's reference kernels "
        "and build int8 from the observed ones where they differ.",
        group="data",
    )
    seed: int = cli.flag(0, "Seed for the calibration-image choice and the QAT shuffle.", group="data")

    def __post_init__(self):
        for name in ("num_calibration", "threads", "latency_runs", "batch_size"):
            cli.positive(name, getattr(self, name))
        for name in ("max_val_images", "steps_per_epoch"):
            cli.positive(name, getattr(self, name), allow_none=True)
        cli.positive("learning_rate", self.learning_rate, kind="number")
        if self.qat_epochs < 0:
            raise cli.UsageError("qat_epochs", self.qat_epochs, "an integer >= 0")
        if formats_lib.repeated(self.formats):
            raise cli.UsageError("formats", ",".join(self.formats), "each format at most once")
        if formats_lib.unknown(self.formats):
            raise cli.UsageError("formats", ",".join(self.formats), "formats among " + ", ".join(ALL_FORMATS))
        try:
            formats_lib.check_io_dtype(self.io_dtype)
        except ValueError:
            raise cli.UsageError("io_dtype", self.io_dtype, "one of " + ", ".join(IO_DTYPES)) from None

    def chosen_formats(self) -> tuple[str, ...]:
        """The formats to write: those asked for, else every one the inputs allow."""
        if self.formats:
            return self.formats
        out = list(FLOAT_FORMATS)
        if self.data_dir or self.calibration_dir:
            out += CALIBRATED_FORMATS
        if self.data_dir and (self.qat_epochs or self.qat_dir):
            out.append("qat_int8")
        return tuple(out) + (SAVED_MODEL,)


def check_config(config: ExportConfig) -> None:
    """Every flag-level check that needs no model loaded; raises cli.UsageError."""
    cli.require_file("model", config.model, what="a .keras model file")
    if config.data_dir:
        cli.require_dir("data_dir", config.data_dir, what="a folder with train/<class>/ and val/<class>/ images")
    if config.calibration_dir:
        cli.require_dir("calibration_dir", config.calibration_dir, what="a folder of images")
    if config.labels:
        cli.require_file("labels", config.labels, what="a text file with one class name per line")
    if config.qat_dir:
        cli.require_dir("qat_dir", config.qat_dir, what="a folder written by keras-effnet-qat")
    cli.require_writable_dir("out", config.out)
    formats = config.chosen_formats()
    needs_images = [f for f in formats if f in CALIBRATED_FORMATS]
    if needs_images and not (config.data_dir or config.calibration_dir):
        raise cli.UsageError(
            "formats",
            ",".join(formats),
            f"formats without {', '.join(needs_images)}, or --data_dir / --calibration_dir with calibration images",
        )
    if "qat_int8" in formats and not config.data_dir and not config.qat_dir:
        raise cli.UsageError("formats", ",".join(formats), "qat_int8 with --data_dir (QAT fine-tune data) or --qat_dir")
