"""Training throughput: this trainer vs what a user writes first, on the same JPEG folder (issue 3).

    python benchmarks/train_throughput.py --image_size=64 --batch_size=32 --steps=20 --json=OUT.json

Measures, in one process on one machine and one folder (the synthetic set
unless --data_dir is given), in images per second of steady-state training
(the first `--warmup` steps, which include tracing, are not counted):

  pipeline   training.data.make_dataset alone (decode, random-resized-crop, flip, batch), no model;
  baseline   keras.applications.EfficientNetB0(weights=None) + plain `model.fit` on
             `keras.utils.image_dataset_from_directory` (no augmentation, Adam);
  trainer    training.train.run (keras_effnet B0, the default basic augmentation, AdamW),
             once with the default strategy (one device) and once with MirroredStrategy
             over --cpu_replicas logical CPUs (skipped when there are GPUs: it then uses them all).

The issue's target is trainer >= 1.2x baseline on CPU. Figures are only
meaningful with the hardware and date beside them (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def pipeline_images_per_sec(data_dir, image_size, batch_size, steps, warmup):
    from training import data

    splits = data.load_splits(data_dir)
    ds = data.make_dataset(splits.train_files, splits.train_labels, image_size=image_size, batch_size=batch_size,
                           training=True, augment="basic", repeat=True)
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
    ds = ds.repeat()
    model = keras.applications.EfficientNetB0(weights=None, classes=classes, input_shape=(image_size, image_size, 3))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    times = []

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            times.append(time.perf_counter())

    model.fit(ds, epochs=1, steps_per_epoch=warmup + steps, verbose=0, callbacks=[Clock()])
    return steps * batch_size / (times[-1] - times[warmup - 1])


def trainer_images_per_sec(data_dir, image_size, batch_size, steps, warmup, model_dir, strategy, cpu_replicas):
    from training import train
    from training.config import TrainConfig

    config = TrainConfig(dataset="folder", data_dir=data_dir, model_dir=model_dir, image_size=image_size,
                         batch_size=batch_size, epochs=1, steps_per_epoch=warmup + steps, strategy=strategy,
                         cpu_replicas=cpu_replicas, tensorboard=False, verbose=0)
    times = []
    original = train.Trainer.train_step_from

    def timed(self, batch, lr):
        out = original(self, batch, lr)
        float(out[0])
        times.append(time.perf_counter())
        return out

    train.Trainer.train_step_from = timed
    try:
        train.run(config, log=lambda *a, **k: None)
    finally:
        train.Trainer.train_step_from = original
    return steps * batch_size / (times[warmup + steps - 1] - times[warmup - 1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", help="train/<class>/* and val/<class>/* (default: generate the synthetic set)")
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (tracing, pipeline start)")
    parser.add_argument("--per_class", type=int, default=100, help="synthetic images per class")
    parser.add_argument("--cpu_replicas", type=int, default=2)
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args(argv)
    if args.steps < 2 or args.warmup < 1:
        parser.error(f"--steps must be >= 2 and --warmup >= 1, got {args.steps} and {args.warmup}")

    from training import strategy as strategy_lib, synthetic

    work = tempfile.mkdtemp(prefix="train_throughput-")
    data_dir = args.data_dir or synthetic.generate(os.path.join(work, "data"), train_per_class=args.per_class,
                                                   val_per_class=10, image_size=max(64, args.image_size))
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus and args.cpu_replicas > 1:
        strategy_lib.configure_cpu_replicas(args.cpu_replicas)
    common = (data_dir, args.image_size, args.batch_size, args.steps, args.warmup)
    results = {
        "date": time.strftime("%Y-%m-%d"), "machine": platform.machine(), "cpus": os.cpu_count(),
        "gpus": [g.name for g in gpus], "tensorflow": tf.__version__, "image_size": args.image_size,
        "batch_size": args.batch_size, "steps": args.steps, "warmup": args.warmup, "data_dir": data_dir,
    }
    results["pipeline"] = pipeline_images_per_sec(*common)
    print(f"pipeline alone:                       {results['pipeline']:8.1f} images/s", flush=True)
    results["baseline"] = baseline_images_per_sec(*common)
    print(f"baseline (applications B0 + fit):     {results['baseline']:8.1f} images/s", flush=True)
    results["trainer"] = trainer_images_per_sec(*common, os.path.join(work, "t1"), "auto", 1)
    print(f"trainer (default strategy):           {results['trainer']:8.1f} images/s "
          f"({results['trainer'] / results['baseline']:.2f}x baseline)", flush=True)
    if not gpus and args.cpu_replicas > 1:
        results["trainer_mirrored"] = trainer_images_per_sec(*common, os.path.join(work, "t2"), "mirrored", args.cpu_replicas)
        print(f"trainer (mirrored, {args.cpu_replicas} logical CPUs):    {results['trainer_mirrored']:8.1f} images/s "
              f"({results['trainer_mirrored'] / results['baseline']:.2f}x baseline)", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(results, f, indent=1)
        os.replace(tmp, args.json)
    return results


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
