"""`python -m benchmarks.defaults_vs_fit`: the trainer's defaults against keras.applications B0 + `model.fit` + Adam.

The same image folder (the embedded synthetic set unless `--data_dir` is
given), the same image size, epochs and batch size, one device, trained twice:

* **defaults**: `training.train.run` with nothing set but the size, epochs and
  batch (AdamW, warm-up + cosine, BN momentum 0.9, zero-initialised head,
  adaptive regularisation, in-memory cache); top-1 of the saved model by
  `training.evaluate`;
* **fit**: what a Keras user writes first: `keras.applications.EfficientNetB0(weights=None)`,
  `keras.utils.image_dataset_from_directory`, `compile(Adam(1e-3))`, `fit`,
  `evaluate` on the val folder.

Wall time covers everything each side does (data loading, tracing, training,
evaluation). With `--docs=docs/measurements/benchmarks.md` the table replaces the rows
between this benchmark's markers there (written atomically); without it, the
table is printed.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time

from common import cli, markdown

BEGIN = "<!-- defaults_vs_fit:begin -->"
END = "<!-- defaults_vs_fit:end -->"


@dataclasses.dataclass(frozen=True)
class DefaultsVsFitConfig:
    sizes: tuple[int, ...] = cli.flag((32, 64, 128), "Image sizes, comma-separated.", group="run")
    epochs: int = cli.flag(8, "Epochs, both sides.", group="run")
    batch_size: int = cli.flag(32, "Batch size, both sides.", group="run")
    data_dir: str | None = cli.flag(
        None, "A folder of images (train/<class>/*, val/<class>/*); none: the synthetic set.", group="data"
    )
    per_class: int = cli.flag(200, "Synthetic set: training images per class (validation: 30% of that).", group="data")
    out: str | None = cli.flag(None, "Work folder (none: a temporary one).", group="output")
    docs: str | None = cli.flag(
        None, "Markdown file whose table between the benchmark's markers is replaced.", group="output"
    )
    seed: int = cli.flag(0, "Seed, both sides.", group="run")


def train_defaults(data_dir: str, model_dir: str, *, image_size: int, epochs: int, batch_size: int, seed: int) -> dict:
    from training import checkpoints, evaluate, loop
    from training.config import TrainConfig

    start = time.perf_counter()
    config = TrainConfig(
        dataset="folder",
        data_dir=data_dir,
        out=model_dir,
        image_size=image_size,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        strategy="one_device",
        tensorboard=False,
        verbose=0,
        overwrite=True,
    )
    loop.run(config, log=lambda *a, **k: None)
    top1 = evaluate.evaluate(os.path.join(model_dir, checkpoints.MODEL), data_dir)["top1"]
    return {"top1": top1, "seconds": time.perf_counter() - start}


def train_fit(data_dir: str, *, image_size: int, epochs: int, batch_size: int, seed: int) -> dict:
    import keras

    start = time.perf_counter()
    keras.utils.set_random_seed(seed)
    kw = dict(image_size=(image_size, image_size), batch_size=batch_size, label_mode="int", seed=seed)
    train_ds = keras.utils.image_dataset_from_directory(os.path.join(data_dir, "train"), shuffle=True, **kw)
    val_ds = keras.utils.image_dataset_from_directory(os.path.join(data_dir, "val"), shuffle=False, **kw)
    classes = len(train_ds.class_names)
    model = keras.applications.EfficientNetB0(weights=None, input_shape=(image_size, image_size, 3), classes=classes)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(train_ds, epochs=epochs, verbose=0)
    top1 = model.evaluate(val_ds, verbose=0, return_dict=True)["accuracy"]
    return {"top1": float(top1), "seconds": time.perf_counter() - start}


def table(rows, *, num_train: int, num_val: int, epochs: int, batch_size: int) -> str:
    lines = [
        f"{num_train:,} train / {num_val:,} val images, {epochs} epochs, batch {batch_size}, one device.",
        "",
    ]
    lines += markdown.table_lines(
        ["image size", "defaults top-1", "fit + Adam top-1", "defaults wall s", "fit wall s"],
        [
            [size, f"{d['top1']:.3f}", f"{f['top1']:.3f}", f"{d['seconds']:.0f}", f"{f['seconds']:.0f}"]
            for size, d, f in rows
        ],
    )
    return "\n".join(lines)


def bench(config: DefaultsVsFitConfig) -> int:
    from training import data, synthetic

    for name in ("epochs", "batch_size", "per_class"):
        cli.positive(name, getattr(config, name))
    for size in config.sizes:
        if size < 32:
            raise cli.UsageError("sizes", size, "sizes of at least 32")
    if config.data_dir:
        cli.require_dir("data_dir", config.data_dir)
    if config.docs:
        cli.require_file("docs", config.docs)
    work = config.out or tempfile.mkdtemp(prefix="defaults-vs-fit-")
    data_dir = config.data_dir or synthetic.generate(
        os.path.join(work, "data"),
        train_per_class=config.per_class,
        val_per_class=max(1, config.per_class * 3 // 10),
        image_size=64,
    )
    splits = data.load_splits(data_dir)
    rows = []
    for size in config.sizes:
        d = train_defaults(
            data_dir,
            os.path.join(work, f"defaults_{size}"),
            image_size=size,
            epochs=config.epochs,
            batch_size=config.batch_size,
            seed=config.seed,
        )
        f = train_fit(data_dir, image_size=size, epochs=config.epochs, batch_size=config.batch_size, seed=config.seed)
        rows.append((size, d, f))
        print(
            f"{size} px: defaults {d['top1']:.3f} in {d['seconds']:.0f} s; fit {f['top1']:.3f} in {f['seconds']:.0f} s",
            flush=True,
        )
    text = table(
        rows,
        num_train=len(splits.train_files),
        num_val=len(splits.val_files),
        epochs=config.epochs,
        batch_size=config.batch_size,
    )
    if config.docs:
        markdown.replace_section(config.docs, text, BEGIN, END)
    print(text)
    return 0


def main(argv=None) -> int:
    return cli.main(
        DefaultsVsFitConfig,
        bench,
        argv,
        prog="keras-effnet-defaults-vs-fit",
        description="Train one folder with the trainer's defaults and with keras.applications B0 + fit + Adam.",
    )


if __name__ == "__main__":
    cli.run_main(main)
