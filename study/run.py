"""Running a study: train (unless measure-only), cost, convert, time in interleaved rounds, write the report.

The study is a list of steps: per member `train`, `cost` and one `convert_<precision>` per LiteRT backend,
then the timing rounds `round_001`, `round_002`, ... over every (member, backend) cell. Each finished step is
one JSON file under `OUT/steps/`, written atomically, so a study interrupted (Ctrl-C) and run again with the
same command continues where it stopped. `OUT/study.json` pins the settings and hardware the numbers depend
on; a rerun with different ones is refused with the differences named. `results.csv`, `results.json`,
`report.md` and the plots are rebuilt from every finished step at the end (`study.results`); the step and
cell names and the per-member plan are `study.plan`.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import shutil
import sys
import tempfile
import time

from common import cli
from common import lock as folder_lock
from study import convert, hardware, measure, member_training, results, store
from study.config import StudyConfig
from study.plan import (
    LITERT,
    calibration_count,
    cell_id,
    member_backends,
    plan_members,
    round_id,
    run_dir,
    step_id,
    tflite_path,
    throughput_batch,
    trained_model,
)


def fingerprint(config: StudyConfig, hw: dict) -> dict:
    """What must match for results to be combined: every setting that changes a number, and the hardware."""
    unrelated = ("out", "keep_tflite", "compare_with", "convert_workers")
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k not in unrelated}
    settings["members"] = list(config.member_names())
    if config.measure_only:
        for k in ("epochs", "batch_size", "learning_rate"):
            settings.pop(k)
    if settings["data_dir"]:
        settings["data_dir"] = os.path.abspath(settings["data_dir"])
    return {"settings": settings, "hardware": hw}


def check_inputs(config: StudyConfig) -> tuple[str | None, object]:
    """Check the output folder and the dataset before anything is written.

    Returns the data folder to use and, for a folder of images, its splits (scanned here, once); None, None
    when a measure-only study reads no images.
    """
    cli.require_writable_dir("out", config.out)
    if config.compare_with and not os.path.isfile(os.path.join(config.compare_with, "results.json")):
        raise cli.UsageError("compare_with", config.compare_with, "a finished study folder (with results.json)")
    data_dir, splits = None, None
    if not config.measure_only or config.data_dir:
        kind = config.dataset_kind
        if kind == "synthetic":
            data_dir = config.data_dir or os.path.join(config.out, "synthetic_data")
        elif kind == "imagenette":
            data_dir = config.data_dir
        else:
            cli.require_dir("data_dir", config.data_dir, what="a dataset folder with train/<class>/ and val/<class>/")
            splits = check_dataset(config.data_dir)
            data_dir = config.data_dir
    check_writable(config.out)
    return data_dir, splits


def check_writable(out: str):
    """Create `out` and a file in it (then remove the file): the one way to know, whoever runs the study."""
    try:
        os.makedirs(out, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=out)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise cli.UsageError("out", out, f"a folder this user can write ({e.strerror})") from None


def check_dataset(data_dir: str):
    from training import data

    try:
        splits = data.load_splits(data_dir)
    except ValueError as e:
        raise cli.UsageError("data_dir", data_dir, "a dataset with images: " + str(e)) from None
    if not splits.train_files or not splits.val_files:
        raise cli.UsageError(
            "data_dir",
            data_dir,
            f"images in train/ and val/ (found {len(splits.train_files)} and {len(splits.val_files)})",
        )
    return splits


def prepare_data(config: StudyConfig, data_dir: str | None, splits=None):
    """The dataset's splits (generating or fetching it first), or None when nothing needs it.

    `splits`: the folder's splits when `check_inputs` has already scanned it, so it is not scanned twice.
    """
    if splits is not None:
        return splits
    if data_dir is None and config.dataset_kind != "imagenette":
        return None
    from training import datasets

    return check_dataset(
        datasets.dataset_folder(config.dataset_kind, data_dir, synthetic_options={"seed": config.seed})
    )


class Models:
    """The Keras model of each member, built (or loaded when trained) once and kept while it is timed."""

    def __init__(self, config: StudyConfig):
        self.config = config
        self._models: dict[str, object] = {}

    def get(self, member):
        key = cell_id(member, "")
        if key not in self._models:
            self._models[key] = convert.build_or_load(
                member, trained_model(self.config, member), self.config.measure_classes, self.config.seed
            )
        return self._models[key]

    def drop(self, member):
        self._models.pop(cell_id(member, ""), None)


class Study:
    """One study folder: its steps, run in order, each kept on disk when finished."""

    def __init__(self, config: StudyConfig, splits, progress: bool):
        self.config = config
        self.splits = splits
        self.models = Models(config)
        self.members = plan_members(config)
        self.progress = progress
        self.conversion_peak_gb = 0.0  # this process and its conversion workers together
        self.conversion_wall_s = 0.0

    def done(self, sid: str):
        return store.load_step(self.config.out, sid)

    def save(self, sid: str, record: dict, start: float):
        record = {
            "step": sid,
            **record,
            "seconds": time.perf_counter() - start,
            "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        store.save_step(self.config.out, sid, record)
        return record

    def say(self, text: str):
        if self.progress:
            print(text, file=sys.stderr, flush=True)

    def run(self):
        c = self.config
        if not c.measure_only:
            for m in self.members:
                sid = step_id(m, "train")
                if not self.done(sid):
                    self.say(f"train {m.key}")
                    start = time.perf_counter()
                    metrics = member_training.train_member(c, m, self.splits, run_dir(c, m))
                    self.save(sid, {"member": m.as_dict(), "rows": member_training.metrics_rows(metrics, c)}, start)
        for m in self.members:
            sid = step_id(m, "cost")
            if not self.done(sid):
                start = time.perf_counter()
                model = self.models.get(m)
                cst = measure.cost(model)
                self.save(
                    sid,
                    {"member": m.as_dict(), "cost": cst, "regularisation": member_training.regularisation(model)},
                    start,
                )
            if not member_backends(c, m):
                self.models.drop(m)
        if any(not self.done(round_id(r)) for r in range(1, c.rounds + 1)):
            self.convert_all()
            self.time_rounds()
        if not c.keep_tflite:
            shutil.rmtree(os.path.join(c.out, "tflite"), ignore_errors=True)

    def convert_all(self):
        """Every member's missing .tflite files, in worker processes (`study.convert`); one step per file."""
        c = self.config
        jobs = []
        for m in self.members:
            wanted = [LITERT[b] for b in member_backends(c, m) if b in LITERT]
            todo = tuple(
                p
                for p in wanted
                if not (self.done(step_id(m, f"convert_{p}")) and os.path.exists(tflite_path(c, m, p)))
            )
            if not todo:
                continue
            cost = self.done(step_id(m, "cost"))["cost"]
            jobs.append(
                convert.Job(
                    member=m,
                    precisions=todo,
                    paths={p: tflite_path(c, m, p) for p in todo},
                    trained_model=trained_model(c, m),
                    classes=c.measure_classes,
                    seed=c.seed,
                    calibration=calibration_count(c, cost["macs"]),
                    data_dir=self.splits.data_dir if self.splits is not None else None,
                    params=cost["params"],
                )
            )
        if not jobs:
            return
        os.makedirs(os.path.join(c.out, "tflite"), exist_ok=True)
        self.say(f"convert {len(jobs)} members in {c.convert_worker_count} worker processes")

        def record(job, result):
            for precision in job.precisions:
                r = result[precision]
                self.say(f"converted {job.member.key} {precision} ({r['seconds']:.0f} s)")
                self.save(
                    step_id(job.member, f"convert_{precision}"),
                    {
                        "member": job.member.as_dict(),
                        "bytes": r["bytes"],
                        "calibration_samples": r["calibration_samples"],
                        "worker_peak_rss_gb": result["peak_rss_gb"],
                    },
                    time.perf_counter() - r["seconds"],
                )

        # Only while workers run does the machine hold more than this process; the timing rounds are not
        # disturbed by the sampling thread.
        start = time.perf_counter()
        with measure.MemoryWatch() as memory:
            convert.run_jobs(jobs, c.convert_worker_count, record)
        self.conversion_peak_gb = memory.peak_gb
        self.conversion_wall_s = time.perf_counter() - start

    def cells(self):
        """Every (member, backend) cell as a no-argument function, in the study's order."""
        c = self.config
        threads = c.thread_count
        cells, meta = {}, {}
        for m in self.members:
            for backend in member_backends(c, m):
                cid = cell_id(m, backend)
                macs = self.done(step_id(m, "cost"))["cost"]["macs"]
                if backend == "keras_b1":
                    fn, batch = measure.keras_call(self.models.get(m), m.resolution, 1, c.seed), 1
                elif backend == "keras_batch":
                    batch = throughput_batch(c, macs)
                    fn = measure.keras_call(self.models.get(m), m.resolution, batch, c.seed)
                else:
                    fn, batch = measure.litert_call(tflite_path(c, m, LITERT[backend]), threads, c.seed), 1
                cells[cid] = fn
                meta[cid] = {"batch_size": batch}
            if not any(b.startswith("keras") for b in member_backends(c, m)):
                self.models.drop(m)
        return cells, meta

    def time_rounds(self):
        c = self.config
        policy = c.rounds_policy()
        cells, meta = self.cells()
        self.say(f"warm up {len(cells)} cells")
        calls = {cid: measure.warm_up(fn, policy) for cid, fn in cells.items()}
        for r in range(1, c.rounds + 1):
            if self.done(round_id(r)):
                continue
            self.say(f"round {r}/{c.rounds}")
            start = time.perf_counter()
            before = measure.load_average()
            samples = measure.one_round(cells, calls)
            self.save(
                round_id(r),
                {
                    "samples": samples,
                    "calls": calls,
                    "meta": meta,
                    "load_before": before,
                    "load_after": measure.load_average(),
                },
                start,
            )


def run_study(config: StudyConfig, *, progress: bool = True) -> dict:
    """Run (or resume) the study in `config.out`; return the merged results (also written to disk)."""
    wall = time.perf_counter()
    threads = measure.fix_threads(config.thread_count)  # before anything starts TensorFlow; writes nothing
    cli.require_writable_dir("out", config.out)
    with folder_lock.exclusive(config.out, command="keras-effnet-study"):  # one study per folder at a time
        data_dir, checked = check_inputs(config)
        hw = {**hardware.describe(), "threads": threads}
        store.open_study(config.out, fingerprint(config, hw))
        splits = prepare_data(config, data_dir, checked)
        study = Study(config, splits, progress)
        study.run()
        return results.write_outputs(
            config, hw, study.members, time.perf_counter() - wall, study.conversion_peak_gb, study.conversion_wall_s
        )
