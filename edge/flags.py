"""Every command-line flag of edge/, defined here and nowhere else (STYLE principle 7).

Each command's `main` turns the parsed flags into a typed config with one of the functions below and calls
plain library functions with it; library code never reads FLAGS. All flags are optional so tests need none.
"""

from __future__ import annotations

import dataclasses

from absl import flags

FLAGS = flags.FLAGS

# Shared by edge.qat and edge.export.
flags.DEFINE_string("model", None, "A .keras model written by training.train (built by keras_effnet).")
flags.DEFINE_string("data_dir", None, "Dataset folder with train/<class>/* and val/<class>/* images.")
flags.DEFINE_string("out", None, "Output folder (edge.qat: QAT weights; edge.export: .tflite files and the report; "
                    "edge.android: the adb script).")
flags.DEFINE_integer("seed", 0, "Seed for shuffling and calibration-image choice.")
# edge.qat
flags.DEFINE_integer("epochs", 1, "edge.qat: QAT fine-tune epochs.")
flags.DEFINE_integer("batch_size", 32, "edge.qat / export: global batch size of the QAT fine-tune.")
flags.DEFINE_float("learning_rate", 1e-4, "edge.qat / export: Adam learning rate of the QAT fine-tune.")
flags.DEFINE_integer("steps_per_epoch", None, "edge.qat / export: limit the QAT fine-tune steps per epoch.")
flags.DEFINE_string("strategy", "auto", "edge.qat: tf.distribute strategy (training.strategy.STRATEGIES).")
flags.DEFINE_integer("cpu_replicas", 1, "edge.qat: logical CPU replicas for MirroredStrategy when there is no GPU.")
# edge.export
flags.DEFINE_string("formats", "float32,float16,dynamic,int8,qat_int8", "edge.export: comma-separated formats.")
flags.DEFINE_enum("io_dtype", "uint8", ["uint8", "int8"], "edge.export: input/output type of the int8 formats.")
flags.DEFINE_integer("qat_epochs", 0, "edge.export: QAT fine-tune epochs before qat_int8 (0: use --qat_dir).")
flags.DEFINE_string("qat_dir", None, "edge.export: a folder written by `python -m edge.qat` to convert as qat_int8.")
flags.DEFINE_integer("num_calibration", 100, "edge.export: training images used to calibrate post-training int8.")
flags.DEFINE_integer("max_val_images", None, "edge.export: evaluate on at most this many validation images.")
flags.DEFINE_integer("latency_runs", 20, "edge.export: timed runs per format (after 3 warm-up runs).")
flags.DEFINE_bool("diagnostics", False, "edge.export: per-layer float-vs-int8 error of the int8 formats.")
# edge.benchmark
flags.DEFINE_string("threads", "1", "edge.benchmark: comma-separated thread counts, e.g. 1,2,4.")
flags.DEFINE_integer("warmup", 5, "edge.benchmark: untimed warm-up runs per file and thread count.")
flags.DEFINE_integer("runs", 50, "edge.benchmark: timed runs per file and thread count.")
flags.DEFINE_bool("json", False, "edge.benchmark / edge.android --parse: print JSON instead of a table.")
# edge.android
flags.DEFINE_string("parse", None, "edge.android: parse this saved output of the generated script instead of "
                    "writing a script.")
flags.DEFINE_string("benchmark_binary", "benchmark_model", "edge.android: local path of the LiteRT benchmark_model "
                    "binary for Android (arm64) that the script pushes.")
flags.DEFINE_string("android_threads", "1,4", "edge.android: CPU thread counts to run with XNNPACK.")


def _required(name):
    value = getattr(FLAGS, name)
    if value in (None, ""):
        raise SystemExit(f"--{name} is required.")
    return value


def int_list(name: str, text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or any(v < 1 for v in values):
        raise ValueError(f"{name} must be comma-separated integers >= 1 (e.g. 1,2,4), got {text!r}.")
    return values


@dataclasses.dataclass(frozen=True)
class QatCli:
    model: str
    data_dir: str
    out: str
    strategy: str
    cpu_replicas: int
    fine_tune: object  # edge.qat.FineTuneConfig


def qat_config() -> QatCli:
    from edge.qat import FineTuneConfig

    return QatCli(
        model=_required("model"), data_dir=_required("data_dir"), out=_required("out"),
        strategy=FLAGS.strategy, cpu_replicas=FLAGS.cpu_replicas,
        fine_tune=FineTuneConfig(epochs=FLAGS.epochs, batch_size=FLAGS.batch_size, learning_rate=FLAGS.learning_rate,
                                 steps_per_epoch=FLAGS.steps_per_epoch, seed=FLAGS.seed),
    )


@dataclasses.dataclass(frozen=True)
class ExportCli:
    model: str
    data_dir: str
    out: str
    formats: str
    io_dtype: str
    qat_epochs: int
    qat_dir: str | None
    num_calibration: int
    max_val_images: int | None
    latency_runs: int
    diagnostics: bool
    qat_steps_per_epoch: int | None
    qat_batch_size: int
    qat_learning_rate: float
    seed: int

    def export_kwargs(self) -> dict:
        out = dataclasses.asdict(self)
        for key in ("model", "data_dir", "out"):
            out.pop(key)
        return out


def export_config() -> ExportCli:
    return ExportCli(
        model=_required("model"), data_dir=_required("data_dir"), out=_required("out"), formats=FLAGS.formats,
        io_dtype=FLAGS.io_dtype, qat_epochs=FLAGS.qat_epochs, qat_dir=FLAGS.qat_dir,
        num_calibration=FLAGS.num_calibration, max_val_images=FLAGS.max_val_images,
        latency_runs=FLAGS.latency_runs, diagnostics=FLAGS.diagnostics, qat_steps_per_epoch=FLAGS.steps_per_epoch,
        qat_batch_size=FLAGS.batch_size, qat_learning_rate=FLAGS.learning_rate, seed=FLAGS.seed,
    )


@dataclasses.dataclass(frozen=True)
class BenchmarkCli:
    files: tuple[str, ...]
    threads: tuple[int, ...]
    warmup: int
    runs: int
    json: bool


def benchmark_config(argv) -> BenchmarkCli:
    files = tuple(argv[1:])
    if not files:
        raise SystemExit("usage: python -m edge.benchmark FILE.tflite... [--threads 1,2,4] [--json]")
    return BenchmarkCli(files=files, threads=int_list("--threads", FLAGS.threads), warmup=FLAGS.warmup,
                        runs=FLAGS.runs, json=FLAGS.json)


@dataclasses.dataclass(frozen=True)
class AndroidCli:
    files: tuple[str, ...]
    out: str | None
    parse: str | None
    benchmark_binary: str
    threads: tuple[int, ...]
    json: bool


def android_config(argv) -> AndroidCli:
    files = tuple(argv[1:])
    if not files and not FLAGS.parse:
        raise SystemExit("usage: python -m edge.android FILE.tflite... [--out=run_android.sh] | --parse=LOG [--json]")
    return AndroidCli(files=files, out=FLAGS.out, parse=FLAGS.parse, benchmark_binary=FLAGS.benchmark_binary,
                      threads=int_list("--android_threads", FLAGS.android_threads), json=FLAGS.json)
