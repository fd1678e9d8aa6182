"""`python -m training.demo --out=DIR`: the `make demo` training job.

Generates the embedded synthetic dataset (no download), trains B0 at a small
resolution with the trainer's defaults (adaptive regularisation: at 32 px no
crop, flip only, no stochastic depth) under MirroredStrategy over every GPU
(BatchNorm synchronised across them) or, on a CPU-only machine, the CPU as one
device. Splitting two cores into two logical replicas of 16 images each, as an
earlier demo did, cost accuracy (BatchNorm statistics of 16 images: val top-1
swung by 3 points between epochs and ended at 0.883 after 14 epochs, against
0.945 on one device) and time (12 s per epoch against 8-11 s, and 29 s with
synchronised BatchNorm); the multi-replica paths are tested on their own.
It evaluates the saved model with
training.evaluate and prints a summary. Sized to finish in a few minutes on a
2-core CPU; the measured accuracy and time are in docs/measurements/benchmarks.md.
"""

from __future__ import annotations

import dataclasses
import os
import time

from common import cli

# 2,000 distinct images seen 12 times (measured: docs/measurements/benchmarks.md).
EPOCHS = 12
IMAGE_SIZE = 32
PER_CLASS = 200
BATCH_SIZE = 32


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    out: str = cli.flag(
        "demo_out",
        "Output folder: data/ (the synthetic set), train/ (model.keras, labels.txt, "
        "metrics.json) and demo_summary.json.",
        group="output",
    )
    epochs: int = cli.flag(EPOCHS, "Epochs.", group="training")
    image_size: int = cli.flag(IMAGE_SIZE, "Training resolution (at least 32).", group="training")
    per_class: int = cli.flag(
        PER_CLASS, "Synthetic training images per class (validation: 30% of that).", group="training"
    )
    batch_size: int = cli.flag(BATCH_SIZE, "Global batch size.", group="training")
    verbose: int = cli.flag(2, "Progress: 0 none, 1 bar, 2 one line per epoch.", group="output", choices=(0, 1, 2))

    def __post_init__(self):
        for name, low in (("epochs", 1), ("image_size", 32), ("per_class", 1), ("batch_size", 2)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise cli.UsageError(name, value, f"an integer >= {low}")


def demo_config(
    out: str,
    *,
    epochs: int = EPOCHS,
    image_size: int = IMAGE_SIZE,
    per_class: int = PER_CLASS,
    batch_size: int = BATCH_SIZE,
    verbose: int = 2,
):
    """The demo's TrainConfig: B0 on the trainer's defaults, MirroredStrategy on all GPUs (sync BN) or the CPU."""
    import tensorflow as tf

    from training.config import TrainConfig

    gpus = tf.config.list_physical_devices("GPU")
    return TrainConfig(
        phi=0,
        dataset="synthetic",
        data_dir=os.path.join(out, "data"),
        synthetic_per_class=per_class,
        out=os.path.join(out, "train"),
        image_size=image_size,
        epochs=epochs,
        batch_size=batch_size,
        strategy="mirrored",
        cpu_replicas=1,
        sync_bn=len(gpus) > 1,
        verbose=verbose,
    )


def run_demo(out: str, **kw) -> dict:
    """Train and evaluate; return the summary that `main` prints and writes to OUT/demo_summary.json."""
    from training import checkpoints, loop, synthetic
    from training import evaluate as evaluate_lib

    start = time.perf_counter()
    config = demo_config(out, **kw)
    result = loop.run(config)
    trained = time.perf_counter()
    model_path = os.path.join(config.out, checkpoints.MODEL)
    ev = evaluate_lib.evaluate(model_path, config.data_dir)
    return {
        "model": model_path,
        "strategy": result["strategy"],
        "replicas": result["num_replicas"],
        "image_size": config.image_size,
        "epochs": config.epochs,
        "train_images": result["num_train"],
        "val_images": ev["num_images"],
        "val_top1": ev["top1"],
        "val_top5": ev["top5"],
        "chance": 1 / len(result["class_names"]),
        "classes": len(synthetic.CLASSES),
        "images_per_sec": result["final"]["images_per_sec"],
        "regularization": result.get("regularization"),
        "train_seconds": trained - start,
        "total_seconds": time.perf_counter() - start,
    }


def demo(config: DemoConfig) -> int:
    from absl import logging

    from common.files import write_json

    cli.require_writable_dir("out", config.out)
    logging.set_verbosity(logging.WARNING)
    s = run_demo(
        config.out,
        epochs=config.epochs,
        image_size=config.image_size,
        per_class=config.per_class,
        batch_size=config.batch_size,
        verbose=config.verbose,
    )
    print()
    print(
        f"demo: EfficientNet-B0 at {s['image_size']} px, {s['strategy']} with {s['replicas']} replica{'s' if s['replicas'] != 1 else ''}, {s['epochs']} epochs "
        f"on {s['train_images']} synthetic images ({s['classes']} classes)"
    )
    print(
        f"demo: validation top-1 {s['val_top1']:.3f} (chance {s['chance']:.3f}), top-5 {s['val_top5']:.3f} "
        f"on {s['val_images']} images; {s['images_per_sec']:.0f} images/s; {s['total_seconds']:.0f} s in all"
    )
    print(f"demo: model {s['model']}")
    write_json(os.path.join(config.out, "demo_summary.json"), s)
    return 0


def main(argv=None) -> int:
    return cli.main(
        DemoConfig,
        demo,
        argv,
        prog="keras-effnet-demo",
        resumable=True,
        description="Train B0 on the embedded synthetic dataset with the trainer's defaults and evaluate it.",
    )


if __name__ == "__main__":
    cli.run_main(main)
