"""Training throughput: this trainer vs keras.applications B0 + plain `model.fit`, on the same JPEG folder.

    python benchmarks/train_throughput.py --image_size=128 --batch_size=32 --steps=12 --rounds=3 --json=OUT.json

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
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time


def pipeline_images_per_sec(data_dir, image_size, batch_size, steps, warmup, augment="none"):
    from training import data

    splits = data.load_splits(data_dir)
    ds = data.make_dataset(splits.train_files, splits.train_labels, image_size=image_size, batch_size=batch_size,
                           training=True, augment=augment, repeat=True)
    it = iter(ds)
    for _ in range(warmup):
        next(it)
    start = time.perf_counter()
    for _ in range(steps):
        x, _ = next(it)
    x.numpy()
    return steps * batch_size / (time.perf_counter() - start)


def baseline_images_per_sec(data_dir, image_size, batch_size, steps, warmup):
    from keras_effnet import flavours

    keras = flavours.keras3()
    keras.config.set_dtype_policy("float32")
    ds = keras.utils.image_dataset_from_directory(
        os.path.join(data_dir, "train"), image_size=(image_size, image_size), batch_size=batch_size, seed=0, verbose=False)
    classes = len(ds.class_names)
    ds = ds.repeat().prefetch(2)
    model = keras.applications.EfficientNetB0(weights=None, classes=classes, input_shape=(image_size, image_size, 3))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    times = []

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            times.append(time.perf_counter())

    model.fit(ds, epochs=1, steps_per_epoch=warmup + steps, verbose=0, callbacks=[Clock()])
    return steps * batch_size / (times[-1] - times[warmup - 1])


def trainer_images_per_sec(data_dir, image_size, batch_size, steps, warmup, model_dir):
    from training import loop
    from training.config import TrainConfig

    config = TrainConfig(data_dir=data_dir, out=model_dir, image_size=image_size, batch_size=batch_size, epochs=1,
                         steps_per_epoch=warmup + steps, augment="none", strategy="one_device", tensorboard=False,
                         verbose=0, overwrite=True)
    marks = []  # (steps done, time) after each graph call, synchronised
    original = loop.Trainer.train_loop

    def timed(self, iterator, rates):
        out = original(self, iterator, rates)
        float(out[0])
        marks.append(((marks[-1][0] if marks else 0) + len(rates), time.perf_counter()))
        return out

    loop.Trainer.train_loop = timed
    try:
        loop.run(config, log=lambda *a, **k: None)
    finally:
        loop.Trainer.train_loop = original
    start = next((n, t) for n, t in marks if n >= warmup)
    end = marks[-1]
    return (end[0] - start[0]) * batch_size / (end[1] - start[1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", help="train/<class>/* and val/<class>/* (default: generate the synthetic set)")
    parser.add_argument("--image_size", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=12, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (tracing, pipeline start)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of baseline and trainer")
    parser.add_argument("--per_class", type=int, default=60, help="synthetic images per class")
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args(argv)
    if args.steps < 2 or args.warmup < 1 or args.rounds < 1:
        parser.error(f"--steps must be >= 2, --warmup >= 1 and --rounds >= 1, got {args.steps}, {args.warmup}, {args.rounds}")

    import tensorflow as tf

    from training import synthetic

    work = tempfile.mkdtemp(prefix="train_throughput-")
    data_dir = args.data_dir or synthetic.generate(os.path.join(work, "data"), train_per_class=args.per_class,
                                                   val_per_class=2, image_size=args.image_size)
    common = (data_dir, args.image_size, args.batch_size, args.steps, args.warmup)
    results = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": platform.machine(), "cpus": os.cpu_count(),
        "gpus": [g.name for g in tf.config.list_physical_devices("GPU")], "tensorflow": tf.__version__,
        "image_size": args.image_size, "batch_size": args.batch_size, "steps": args.steps, "warmup": args.warmup,
        "load_before": os.getloadavg(), "baseline": [], "trainer": [],
    }
    results["pipeline"] = pipeline_images_per_sec(*common)
    print(f"pipeline alone (decode + resize + batch): {results['pipeline']:8.1f} images/s", flush=True)
    for r in range(args.rounds):
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
    print(f"trainer / baseline: {results['ratio_of_medians']:.2f}x (ratio of medians); per round "
          f"{', '.join(f'{x:.2f}' for x in ratios)}", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    if args.json:
        from training.files import atomic_write

        atomic_write(args.json, json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
