"""`python -m training.study`: how efficient is EfficientNet on *your* hardware and data? (issue 5)

EfficientNet wins on MACs per accuracy (Tan & Le 2019), but MACs are not
wall-clock time: B0 has 10x fewer MACs than ResNet-50 yet trains only
1.0-1.4x faster on GPUs, because its depthwise and squeeze-excitation layers are
memory-bound (REFERENCE section 4; Radosavovic et al. 2020 found activations
predict GPU time better). The study measures, for each member and a ResNet-50
reference: params, MACs, activations, training images/s and time to reach its
final accuracy, Keras latency at batch 1 and throughput at a larger batch, LiteRT
float32 and int8 latency on the host CPU, and validation top-1; plus the
compound-scaling formula beside the official presets and, with --grid_search,
the paper's step-1 grid of (alpha, beta, gamma).

The study is a flat list of steps (one member x one measurement). Each finished
step is kept on disk, so an interrupted study rerun with the same settings
continues where it stopped; `S/results.csv`, `S/results.json`, `S/report.md` and
the PNG plots are rebuilt from all finished steps at the end.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import sys
import time

from training.study_lib import hardware, members as members_lib, measure, plots, report, store

DATASETS = ("synthetic", "folder")
TRAIN_STEPS = ("train",)
FULL_MEASURES = ("cost", "keras_b1", "keras_batch", "tflite_float32", "tflite_int8")
FORMULA_MEASURES = ("cost", "keras_b1")
CSV_COLUMNS = [
    "model", "key", "role", "family", "phi", "scaling", "alpha", "beta", "gamma", "resolution",
    "measurement", "value", "unit", "backend", "batch_size", "reps", "cpu_model", "cpu_cores", "gpu",
]


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """Everything a study depends on. Fields after `grid_points` decide the numbers (see `fingerprint`)."""

    out: str
    phis: tuple = ()  # () = the default members: B0..B7 (Lite0..4) measure-only, else 0..3
    baselines: tuple = ("resnet50",)
    formula_phis: tuple = (1.0, 2.0, 3.0)
    grid_points: int = 0  # 0 = the whole grid
    family: str = "efficientnet"
    measure_only: bool = False
    grid_search: bool = False
    dataset: str = "synthetic"
    data_dir: str = ""
    epochs: int = 5
    batch_size: int = 32
    image_size: int = 0  # 0 = each member's native resolution; else B0's size, others scaled alike
    measure_classes: int = 1000
    throughput_batch: int = 32
    max_batch_gmacs: float = 40.0
    min_reps: int = 3
    max_reps: int = 20
    budget_s: float = 5.0
    tflite: bool = True
    tflite_threads: int = 0
    keep_tflite: bool = False
    calibration_samples: int = 8
    learning_rate: float = 0.0  # 0 = the trainer's default
    seed: int = 0

    def timing(self) -> measure.Timing:
        return measure.Timing(self.min_reps, self.max_reps, self.budget_s)


TRAINING_ONLY = ("epochs", "batch_size", "learning_rate")
MEMBER_SELECTION = ("out", "phis", "baselines", "formula_phis", "grid_points", "keep_tflite")


def validate(config: StudyConfig) -> StudyConfig:
    """Check every field; errors name the flag, the value and what is allowed."""
    from keras_effnet import architecture

    if not config.out:
        raise ValueError("out: the study folder is required (e.g. --out=study_out).")
    architecture.check_family(config.family)
    for phi in config.phis:
        architecture.coefficients(phi, family=config.family)
    for phi in config.formula_phis:
        if config.family == "efficientnet":
            architecture.coefficients(phi, family="efficientnet", scaling="formula")
    for name in config.baselines:
        members_lib.baseline_member(name, 0)
    if config.dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {config.dataset!r}.")
    if config.dataset == "folder" and not config.data_dir:
        raise ValueError("data_dir: --dataset=folder needs --data_dir=<root with train/<class>/ and val/<class>/>.")
    if config.grid_search and config.measure_only:
        raise ValueError("grid_search: the grid search trains each point to compare accuracy; it cannot run with --measure_only.")
    if config.grid_search and config.family != "efficientnet":
        raise ValueError(f"grid_search: needs family='efficientnet' (Lite has no compound-scaling formula), got {config.family!r}.")
    positive = {"epochs": config.epochs, "batch_size": config.batch_size, "measure_classes": config.measure_classes,
                "throughput_batch": config.throughput_batch, "min_reps": config.min_reps,
                "max_reps": config.max_reps, "calibration_samples": config.calibration_samples}
    for name, value in positive.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
    if config.max_reps < config.min_reps:
        raise ValueError(f"max_reps must be >= min_reps ({config.min_reps}), got {config.max_reps}.")
    if config.image_size != 0 and config.image_size < architecture.MIN_INPUT_SIZE:
        raise ValueError(f"image_size must be 0 (native) or >= {architecture.MIN_INPUT_SIZE}, got {config.image_size}.")
    if config.grid_points < 0 or config.tflite_threads < 0:
        raise ValueError(f"grid_points and tflite_threads must be >= 0, got {config.grid_points} and {config.tflite_threads}.")
    if not (config.budget_s >= 0 and config.max_batch_gmacs > 0 and config.learning_rate >= 0):
        raise ValueError(
            f"budget_s >= 0, max_batch_gmacs > 0 and learning_rate >= 0 are required, got "
            f"{config.budget_s}, {config.max_batch_gmacs}, {config.learning_rate}."
        )
    return config


def fingerprint(config: StudyConfig, hw: dict) -> dict:
    """What must match for results to be combined: settings that change numbers, and the hardware.

    The member lists are left out on purpose: adding a phi to a finished study
    with the same settings just adds its steps.
    """
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k not in MEMBER_SELECTION}
    if config.measure_only:
        for k in TRAINING_ONLY:
            settings.pop(k)
    if settings["data_dir"]:
        settings["data_dir"] = os.path.abspath(settings["data_dir"])
    return {"settings": settings, "hardware": hw}


def plan(config: StudyConfig) -> list[tuple[members_lib.Member, str]]:
    """The study's steps in order: (member, measurement)."""
    size = config.image_size
    steps = []
    if config.grid_search:
        points = members_lib.grid_points()
        if config.grid_points:
            points = points[: config.grid_points]
        for a, b, g in points:
            m = members_lib.family_member(1, "efficientnet", size, scaling="formula", alpha=a, beta=b, gamma=g, role="grid")
            steps += [(m, "train"), (m, "cost")]
        return steps
    phis = config.phis or tuple(sorted(architecture_presets(config.family)) if config.measure_only else (0, 1, 2, 3))
    family = [members_lib.family_member(p, config.family, size) for p in phis]
    family += [members_lib.baseline_member(b, size) for b in config.baselines]
    for m in family:
        if not config.measure_only:
            steps.append((m, "train"))
        steps += [(m, s) for s in FULL_MEASURES if config.tflite or not s.startswith("tflite")]
    if config.family == "efficientnet":
        for p in config.formula_phis:
            m = members_lib.family_member(p, "efficientnet", size, scaling="formula", role="formula")
            steps += [(m, s) for s in FORMULA_MEASURES]
    return steps


def architecture_presets(family: str) -> list[int]:
    from keras_effnet import architecture

    presets = architecture.PRESETS[architecture.check_family(family)]
    return [p for p in presets if family == "lite" or p <= 7]


def step_id(member, what: str) -> str:
    return f"{member.key}__r{member.resolution}__{what}"


class Runner:
    """Runs steps, keeping the last model built so a member's measurements share it."""

    def __init__(self, config: StudyConfig, splits=None):
        self.config = config
        self.splits = splits
        self._model_key = None
        self._model = None
        self._saved_model = None  # (member key, temporary directory): one export serves both TFLite conversions

    def close(self):
        if self._saved_model is not None:
            import shutil

            shutil.rmtree(self._saved_model[1], ignore_errors=True)
            self._saved_model = None

    def saved_model(self, member) -> str:
        import tempfile

        if self._saved_model is None or self._saved_model[0] != member.key:
            self.close()
            directory = tempfile.mkdtemp(prefix="study-savedmodel-")
            self._saved_model = (member.key, directory)
            from edge import export

            export.export_saved_model(self.model(member), os.path.join(directory, "model"))
        return os.path.join(self._saved_model[1], "model")

    def model(self, member):
        from keras_effnet import flavours

        keras = flavours.keras3()
        if self._model_key != member.key:
            self._model = None
            keras.backend.clear_session()
            trained = os.path.join(run_dir(self.config, member), "model.keras")
            if os.path.exists(trained):
                self._model = keras.models.load_model(trained, compile=False)
            else:
                self._model = members_lib.build_model(member, classes=self.config.measure_classes)
            self._model_key = member.key
        return self._model

    def run(self, member, what: str) -> list[dict]:
        c = self.config
        if what == "train":
            return train_rows(c, member, self.splits)
        model = self.model(member)
        size = member.resolution
        if what == "cost":
            cst = measure.cost(model)
            return [row("params", cst["params"], "count", "graph"),
                    row("trainable_params", cst["trainable_params"], "count", "graph"),
                    row("macs", cst["macs"], "count", "graph"),
                    row("activations", cst["activations"], "count", "graph")]
        backend = "keras-" + measure.device_name()
        if what == "keras_b1":
            r = measure.keras_latency(model, size, 1, c.timing())
            return [row("latency_ms", r["latency_ms"], "ms", backend, 1, r["reps"])]
        if what == "keras_batch":
            batch = throughput_batch(c, model)
            r = measure.keras_latency(model, size, batch, c.timing())
            return [row("throughput", r["images_per_sec"], "images/s", backend, batch, r["reps"])]
        if what in ("tflite_float32", "tflite_int8"):
            precision = what.split("_")[1]
            rep = self.representative(member) if precision == "int8" else None
            path = os.path.join(c.out, "tflite", f"{member.key}_r{size}_{precision}.tflite")
            store.atomic_write(path, measure.convert(self.saved_model(member), precision, rep))
            threads = c.tflite_threads or os.cpu_count() or 1
            try:
                r = measure.litert_latency(path, threads, c.timing())
                nbytes = os.path.getsize(path)
            finally:
                if not c.keep_tflite:
                    os.remove(path)
            backend = f"litert-{precision}-cpu"
            extra = {"calibration_samples": len(rep)} if rep is not None else {}
            return [row("latency_ms", r["latency_ms"], "ms", backend, 1, r["reps"], threads=threads, **extra),
                    row("tflite_bytes", nbytes, "bytes", backend)]
        raise ValueError(f"unknown measurement {what!r}")

    def representative(self, member):
        """Calibration images for int8, as many as `calibration_samples` but capped like the throughput batch.

        Calibration runs the float model in TFLite's reference kernels; B7 at
        600 px takes tens of seconds per image on a 2-core CPU, and the latency
        being measured does not depend on how well it is calibrated.
        """
        gmacs = measure.cost(self.model(member))["macs"] / 1e9
        n = max(2, min(self.config.calibration_samples, int(self.config.max_batch_gmacs // max(gmacs, 1e-9))))
        if self.splits is not None:
            from training import data

            return data.representative_images(self.splits.data_dir, n, member.resolution, seed=self.config.seed)
        return measure.random_images(n, member.resolution, self.config.seed)


def throughput_batch(config: StudyConfig, model) -> int:
    """The throughput batch, capped at `max_batch_gmacs` GMACs per batch so big models stay affordable (at least 2)."""
    gmacs = measure.cost(model)["macs"] / 1e9
    return max(2, min(config.throughput_batch, int(config.max_batch_gmacs // max(gmacs, 1e-9))))


def row(measurement, value, unit, backend, batch_size=None, reps=None, **extra) -> dict:
    return {"measurement": measurement, "value": value, "unit": unit, "backend": backend,
            "batch_size": batch_size, "reps": reps, **extra}


def run_dir(config: StudyConfig, member) -> str:
    return os.path.join(config.out, "runs", f"{member.key}_r{member.resolution}")


def train_rows(config: StudyConfig, member, splits) -> list[dict]:
    from training.study_lib import training_link

    metrics = training_link.train_member(config, member, splits, run_dir(config, member))
    return training_link.metrics_rows(metrics)


def prepare_data(config: StudyConfig):
    """The dataset's splits, or None when nothing needs it (measure-only without --data_dir)."""
    if config.measure_only and not config.data_dir:
        return None
    from training import data

    data_dir = config.data_dir
    if config.dataset == "synthetic":
        from training import synthetic

        data_dir = synthetic.generate(data_dir or os.path.join(config.out, "synthetic_data"), seed=config.seed)
    splits = data.load_splits(data_dir)
    if not splits.train_files or not splits.val_files:
        raise ValueError(
            f"data_dir: {data_dir!r} has {len(splits.train_files)} train and {len(splits.val_files)} val images; "
            "the study needs at least one of each (train/<class>/*.jpg, val/<class>/*.jpg)."
        )
    return splits


def run_study(config: StudyConfig, *, progress: bool = True) -> dict:
    """Run (or resume) the study in `config.out`; return the merged results (also written to disk)."""
    validate(config)
    hw = hardware.describe()
    os.makedirs(config.out, exist_ok=True)
    store.open_study(config.out, fingerprint(config, hw))
    steps = plan(config)
    needs_data = any(what == "train" for _, what in steps) or bool(config.data_dir)
    splits = prepare_data(config) if needs_data else None
    runner = Runner(config, splits)
    todo = [(m, w) for m, w in steps if store.load_step(config.out, step_id(m, w)) is None]
    bar = _progress(len(steps), len(steps) - len(todo), progress)
    try:
        for member, what in todo:
            sid = step_id(member, what)
            bar.set_postfix_str(sid)
            start = time.perf_counter()
            rows = runner.run(member, what)
            store.save_step(config.out, sid, {
                "step": sid, "member": member.as_dict(), "measurement": what, "rows": rows,
                "seconds": time.perf_counter() - start,
                "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            })
            bar.update(1)
    finally:
        runner.close()
        bar.close()
    return write_outputs(config, hw, steps)


def _progress(total, done, enabled):
    from tqdm import tqdm

    return tqdm(total=total, initial=done, desc="study", unit="step", disable=not enabled, file=sys.stderr)


def collect(config: StudyConfig, hw: dict, steps) -> list[dict]:
    rows = []
    for member, what in steps:
        record = store.load_step(config.out, step_id(member, what))
        m = member
        for r in record["rows"]:
            rows.append({
                "model": m.label, "key": m.key, "role": m.role, "family": m.kind, "phi": m.phi if m.role != "baseline" else None,
                "scaling": m.scaling if m.role != "baseline" else None,
                "alpha": m.alpha if m.role != "baseline" else None, "beta": m.beta if m.role != "baseline" else None,
                "gamma": m.gamma if m.role != "baseline" else None, "resolution": m.resolution,
                "cpu_model": hw["cpu_model"], "cpu_cores": hw["cpu_cores"], "gpu": hw["gpu"], **r,
            })
    return rows


def write_outputs(config: StudyConfig, hw: dict, steps) -> dict:
    rows = collect(config, hw, steps)
    table = report.wide_table(rows)
    results = {
        "hardware": hw, "config": dataclasses.asdict(config),
        "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "step_seconds": {step_id(m, w): store.load_step(config.out, step_id(m, w))["seconds"] for m, w in steps},
        "rows": rows, "models": table,
    }
    store.write_csv(os.path.join(config.out, "results.csv"), rows, CSV_COLUMNS)
    store.atomic_write_json(os.path.join(config.out, "results.json"), results)
    results["plots"] = plots.write_all(table, config.out)
    store.atomic_write(os.path.join(config.out, "report.md"), report.render(results))
    return results


def config_from_flags(flags_module) -> StudyConfig:
    """Parse absl FLAGS into a StudyConfig (the only place that reads flags)."""
    f = flags_module.FLAGS
    return StudyConfig(
        out=f.out, phis=_numbers("phis", f.phis), baselines=tuple(b.strip() for b in f.baselines.split(",") if b.strip()),
        formula_phis=_numbers("formula_phis", f.formula_phis), grid_points=f.grid_points, family=f.family,
        measure_only=f.measure_only, grid_search=f.grid_search, dataset=f.dataset, data_dir=f.data_dir,
        epochs=f.epochs, batch_size=f.batch_size, image_size=f.image_size, measure_classes=f.measure_classes,
        throughput_batch=f.throughput_batch, max_batch_gmacs=f.max_batch_gmacs, min_reps=f.min_reps,
        max_reps=f.max_reps, budget_s=f.budget_s, tflite=f.tflite, tflite_threads=f.tflite_threads, keep_tflite=f.keep_tflite,
        calibration_samples=f.calibration_samples, learning_rate=f.learning_rate, seed=f.seed,
    )


def _numbers(name: str, text: str) -> tuple:
    values = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            value = float(part)
        except ValueError:
            raise ValueError(f"{name} must be comma-separated numbers, got {text!r} (bad item {part!r}).") from None
        values.append(int(value) if value.is_integer() else value)
    return tuple(values)


def main(argv):
    from training import study_flags

    from absl import logging

    del argv
    logging.set_verbosity(logging.WARNING)
    try:
        config = config_from_flags(study_flags)
        results = run_study(config)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {config.out}/results.csv, results.json, report.md and {len(results['plots'])} plots")
    return 0


if __name__ == "__main__":
    from absl import app

    from training import study_flags

    app.run(main, flags_parser=study_flags.parse)
