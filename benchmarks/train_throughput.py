"""Training throughput: this trainer vs keras.applications B0 + plain `model.fit`, on the same JPEG folder.

    python -m benchmarks.train_throughput --image_size=128 --batch_size=32 --steps=12 --rounds=3 --json=OUT.json

Both train EfficientNet-B0 from scratch on the same folder of JPEGs (the
synthetic set unless --data_dir is given), at the same size and global batch,
neither augmenting, on one device:

  baseline   keras.applications.EfficientNetB0(weights=None) + `model.fit` on
             `keras.utils.image_dataset_from_directory` (Adam), what a user writes first;
  trainer    `training.loop.run` (keras_effnet B0, AdamW, --augment=none, steps_per_loop auto).

The two are measured in interleaved rounds (baseline, trainer, trainer,
baseline, ...) in one process, so a change in the machine's load hits both;
each figure is images per second over the timed steps, after `--warmup`
untimed steps (tracing, pipeline start). The result is the ratio of the
medians and the spread of the per-round ratios. Also measured: the input
pipeline alone (`training.data.make_dataset`, decode + resize + batch, no model).

`--profile` then runs one more timed measurement of each under the TensorFlow
profiler and sums the host time of every TensorFlow op by type (self time:
an op's children on the same thread are subtracted), per training step, so
the two can be compared kernel by kernel: where the time goes, and whether the
difference is in the kernels both run or in what only one of them does.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import os
import platform
import shutil
import statistics
import tempfile
import time

from common import cli, markdown


@dataclasses.dataclass(frozen=True)
class ThroughputConfig:
    data_dir: str | None = cli.flag(
        None, "train/<class>/* and val/<class>/* (default: generate the synthetic set).", group="data"
    )
    per_class: int = cli.flag(60, "Synthetic images per class.", group="data")
    image_size: int = cli.flag(128, "Training resolution of both.", group="training")
    batch_size: int = cli.flag(32, "Global batch size of both.", group="training")
    steps: int = cli.flag(12, "Timed steps per measurement (at least 2).", group="timing")
    warmup: int = cli.flag(3, "Untimed steps first (tracing, pipeline start).", group="timing")
    rounds: int = cli.flag(3, "Interleaved rounds of baseline and trainer.", group="timing")
    profile: bool = cli.flag(
        False,
        "After the rounds, profile one measurement of each and print the host time "
        "per step of each TensorFlow op type, side by side.",
        group="timing",
    )
    json: str | None = cli.flag(None, "Write the results here too.", group="output")

    def __post_init__(self):
        for name in ("per_class", "image_size", "batch_size", "steps", "warmup", "rounds"):
            cli.positive(name, getattr(self, name))
        if self.steps < 2:
            raise cli.UsageError("steps", self.steps, "an integer >= 2")
        if self.json:
            cli.require_writable_dir("json", os.path.dirname(os.path.abspath(self.json)))
        if self.data_dir is not None:
            cli.require_dir("data_dir", self.data_dir, what="a folder with train/<class>/* and val/<class>/*")


def pipeline_images_per_sec(data_dir, image_size, batch_size, steps, warmup, augment="none"):
    from training import data

    splits = data.load_splits(data_dir)
    ds = data.make_dataset(
        splits.train_files,
        splits.train_labels,
        image_size=image_size,
        batch_size=batch_size,
        training=True,
        augment=augment,
        repeat=True,
        pil_files=splits.pil_files,
    )
    it = iter(ds)
    for _ in range(warmup):
        next(it)
    start = time.perf_counter()
    for _ in range(steps):
        x, _ = next(it)
    x.numpy()
    return steps * batch_size / (time.perf_counter() - start)


def baseline_images_per_sec(data_dir, image_size, batch_size, steps, warmup, profile_dir=None):
    from keras_effnet import keras_versions

    keras = keras_versions.keras3()
    keras.config.set_dtype_policy("float32")
    ds = keras.utils.image_dataset_from_directory(
        os.path.join(data_dir, "train"),
        image_size=(image_size, image_size),
        batch_size=batch_size,
        seed=0,
        verbose=False,
    )
    classes = len(ds.class_names)
    ds = ds.repeat().prefetch(2)
    model = keras.applications.EfficientNetB0(weights=None, classes=classes, input_shape=(image_size, image_size, 3))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    times = []

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            times.append(time.perf_counter())
            if profile_dir and len(times) == warmup:
                _start_profile(profile_dir)

    model.fit(ds, epochs=1, steps_per_epoch=warmup + steps, verbose=0, callbacks=[Clock()])
    if profile_dir:
        _stop_profile()
    return steps * batch_size / (times[-1] - times[warmup - 1])


def trainer_images_per_sec(data_dir, image_size, batch_size, steps, warmup, model_dir, profile_dir=None):
    from training import loop
    from training.config import TrainConfig
    from training.trainer import Trainer

    # Under the profiler every graph call runs `warmup` steps, so the profile starts on a call boundary.
    config = TrainConfig(
        data_dir=data_dir,
        out=model_dir,
        image_size=image_size,
        batch_size=batch_size,
        epochs=1,
        steps_per_epoch=warmup + steps,
        augment="none",
        strategy="one_device",
        tensorboard=False,
        verbose=0,
        overwrite=True,
        steps_per_loop=warmup if profile_dir else None,
    )
    marks = []  # (steps done, time) after each graph call, synchronised
    profiling = []  # non-empty while the profiler runs
    original = Trainer.train_loop

    def timed(self, iterator, rates):
        out = original(self, iterator, rates)
        float(out[0])
        marks.append(((marks[-1][0] if marks else 0) + len(rates), time.perf_counter()))
        if profile_dir and marks[-1][0] == warmup:
            _start_profile(profile_dir)
            profiling.append(True)
        if profiling and marks[-1][0] >= warmup + steps:
            _stop_profile()  # before the end-of-epoch evaluation and save, which fit's measurement does not run
            profiling.clear()
        return out

    Trainer.train_loop = timed
    try:
        loop.run(config, log=lambda *a, **k: None)
    finally:
        Trainer.train_loop = original
        if profiling:
            _stop_profile()
    start = next((n, t) for n, t in marks if n >= warmup)
    end = marks[-1]
    return (end[0] - start[0]) * batch_size / (end[1] - start[1])


def _start_profile(logdir):
    import tensorflow as tf

    tf.profiler.experimental.start(logdir)


def _stop_profile():
    import tensorflow as tf

    tf.profiler.experimental.stop()


def op_self_times(logdir) -> dict[str, float]:
    """{TensorFlow op type: self time in seconds} summed over the host threads of the newest trace in `logdir`.

    Reads the profiler's XSpace file. Host events on one thread nest (a function-call op contains the ops it
    runs), so each event's self time is its duration less that of the events directly inside it; names are
    "op_name:OpType", grouped by the type.
    """
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    paths = sorted(glob.glob(os.path.join(logdir, "plugins", "profile", "*", "*.xplane.pb")), key=os.path.getmtime)
    if not paths:
        raise FileNotFoundError(f"no profile under {logdir}")
    space = xplane_pb2.XSpace()
    with open(paths[-1], "rb") as f:
        space.ParseFromString(f.read())
    totals = collections.Counter()
    for plane in space.planes:
        if not plane.name.startswith("/host:"):
            continue
        names = {k: m.name for k, m in plane.event_metadata.items()}
        for line in plane.lines:
            events = sorted(
                ((e.offset_ps, e.duration_ps, names.get(e.metadata_id, "")) for e in line.events),
                key=lambda e: (e[0], -e[1]),
            )
            stack = []  # [end, name, self] of the open events
            for begin, duration, name in events:
                while stack and stack[-1][0] <= begin:
                    _, n, own = stack.pop()
                    _count(totals, n, own)
                if stack:
                    stack[-1][2] -= duration
                stack.append([begin + duration, name, duration])
            for _, n, own in stack:
                _count(totals, n, own)
    return dict(totals)


def _count(totals, name, picoseconds):
    # TensorFlow op events are "op_name:OpType"; runtime events ("ExecutorState::Process", "$...") are not ops.
    if ":" in name and "::" not in name and not name.startswith("$"):
        op_type = name.rsplit(":", 1)[1].split("#", 1)[0]
        if op_type and op_type[0].isupper():
            totals[op_type] += picoseconds / 1e12


def profile_table(baseline: dict, trainer: dict, steps: int, top: int = 15) -> list[str]:
    """Markdown rows: the op types taking the most host time, in ms per step, baseline against trainer."""
    keys = sorted(set(baseline) | set(trainer), key=lambda k: -(baseline.get(k, 0) + trainer.get(k, 0)))
    rows = [
        [k, f"{1000 * baseline.get(k, 0) / steps:.1f}", f"{1000 * trainer.get(k, 0) / steps:.1f}"] for k in keys[:top]
    ]
    rest_b = sum(v for k, v in baseline.items() if k not in keys[:top])
    rest_t = sum(v for k, v in trainer.items() if k not in keys[:top])
    rows.append(["all other ops", f"{1000 * rest_b / steps:.1f}", f"{1000 * rest_t / steps:.1f}"])
    every = (1000 * sum(baseline.values()) / steps, 1000 * sum(trainer.values()) / steps)
    rows.append(["**every op**", f"**{every[0]:.1f}**", f"**{every[1]:.1f}**"])
    return markdown.table_lines(["op type", "baseline ms/step", "trainer ms/step"], rows)


def bench(config: ThroughputConfig) -> int:
    import tensorflow as tf

    from training import data as data_lib
    from training import synthetic

    work = tempfile.mkdtemp(prefix="train_throughput-")
    try:
        data_dir = config.data_dir or synthetic.generate(
            os.path.join(work, "data"), train_per_class=config.per_class, val_per_class=2, image_size=config.image_size
        )
        common = (data_dir, config.image_size, config.batch_size, config.steps, config.warmup)
        batches = len(data_lib.scan_folder(os.path.join(data_dir, "train")).files) // config.batch_size
        if batches < config.warmup + config.steps:
            raise cli.UsageError(
                f"--warmup={config.warmup} and --steps={config.steps}: more steps than one epoch over "
                f"the {batches} batches of the training folder (the trainer's epoch); lower them or "
                "add images (--per_class)"
            )
        results = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "gpus": [g.name for g in tf.config.list_physical_devices("GPU")],
            "tensorflow": tf.__version__,
            "image_size": config.image_size,
            "batch_size": config.batch_size,
            "steps": config.steps,
            "warmup": config.warmup,
            "load_before": os.getloadavg(),
            "baseline": [],
            "trainer": [],
        }
        results["pipeline"] = pipeline_images_per_sec(*common)
        print(f"pipeline alone (decode + resize + batch): {results['pipeline']:8.1f} images/s", flush=True)
        for r in range(config.rounds):
            order = ("baseline", "trainer") if r % 2 == 0 else ("trainer", "baseline")
            for which in order:
                if which == "baseline":
                    value = baseline_images_per_sec(*common)
                else:
                    value = trainer_images_per_sec(*common, os.path.join(work, "trainer"))
                results[which].append(value)
                print(f"round {r + 1} {which:8s}: {value:8.1f} images/s (load {os.getloadavg()[0]:.2f})", flush=True)
        ratios = [t / b for t, b in zip(results["trainer"], results["baseline"])]
        results["ratio_of_medians"] = statistics.median(results["trainer"]) / statistics.median(results["baseline"])
        results["round_ratios"] = ratios
        results["load_after"] = os.getloadavg()
        print(
            f"trainer / baseline: {results['ratio_of_medians']:.2f}x (ratio of medians); per round "
            f"{', '.join(f'{x:.2f}' for x in ratios)}",
            flush=True,
        )
        if config.profile:
            profiled = {}
            for which in ("baseline", "trainer"):
                logdir = os.path.join(work, "profile", which)
                if which == "baseline":
                    rate = baseline_images_per_sec(*common, profile_dir=logdir)
                else:
                    rate = trainer_images_per_sec(*common, os.path.join(work, "trainer"), profile_dir=logdir)
                profiled[which] = op_self_times(logdir)
                results[f"profiled_{which}_images_per_sec"] = rate
                print(f"profiled {which}: {rate:.1f} images/s", flush=True)
            results["profile_seconds_per_op_type"] = profiled
            print("\n".join(profile_table(profiled["baseline"], profiled["trainer"], config.steps)), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if config.json:
        from common.files import write_json

        write_json(config.json, results)
    return 0


def main(argv=None) -> int:
    return cli.main(
        ThroughputConfig,
        bench,
        argv,
        prog="keras-effnet-bench-throughput",
        description="Training throughput: this trainer against keras.applications B0 + model.fit.",
    )


if __name__ == "__main__":
    cli.run_main(main)
