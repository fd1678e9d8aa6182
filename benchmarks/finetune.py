"""`python -m benchmarks.finetune`: the trainer's fine-tuning defaults against the two recipes users write first.

No ImageNet download: the pretrained weights are made here. B0 is trained
(the trainer's defaults) on the first half of the embedded synthetic dataset's
classes (circle, square, triangle, ring, cross); the other half (hstripes,
vstripes, checker, dots, diagonal) is the "user's photos", at `sizes` training
images per class with one fixed validation set. From the same weights, at
the same image size, batch and number of epochs (the same budget), with top-1
of the final model on that validation set:

* **defaults**: `training.loop.run(init_from=<pretrained .keras>)`: the
  fine-tuning recipe of training/finetune.py as it stands;
* **(a) all layers**: the same with `finetune="off"`: every layer trains from
  the first step, BatchNorm in training mode at momentum 0.9, the from-scratch
  learning rate (the trainer's behaviour before the recipe);
* **(b) keras-io**: the recipe of keras-io "Image classification via
  fine-tuning with EfficientNet": keras.applications.EfficientNetB0
  (include_top=False) holding the same weights (layer names match), frozen;
  GlobalAveragePooling + BatchNormalization + Dropout(0.2) + Dense head at
  Adam 1e-2; then the top 20 layers unfrozen except BatchNormalization, Adam
  1e-5; `fit` on the same tf.data pipeline; the same head/backbone epoch split
  as the defaults;
* **scratch** (context): the trainer's defaults without `init_from`.

`--variant=key=value,...` adds rows with other fine-tuning fields (for
choosing defaults: `finetune_lr_scale=0.3`, `unfreeze=3`, `bn_trainable=true`).
With `--docs=docs/finetune.md` the table replaces the rows between the
benchmark's markers there; without it, it is printed.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import re
import subprocess
import tempfile
import time

from common import cli, markdown
from common.files import write_json

BEGIN = "<!-- finetune:begin -->"
END = "<!-- finetune:end -->"
PRETRAIN_CLASSES = 5
METHODS = ("defaults", "all_layers", "keras_io", "scratch")


@dataclasses.dataclass(frozen=True)
class FinetuneBenchConfig:
    sizes: tuple[int, ...] = cli.flag((10, 50, 200), "Training images per class, comma-separated.", group="run")
    epochs: tuple[int, ...] = cli.flag((30, 12, 6), "Epochs for each size (the budget every method gets).", group="run")
    methods: tuple[str, ...] = cli.flag(METHODS, "Methods, comma-separated: " + ", ".join(METHODS) + ".", group="run")
    variants: tuple[str, ...] = cli.flag(
        (),
        "Extra rows of the trainer's recipe, each key=value[;key=value], comma-separated (e.g. finetune_lr_scale=0.3).",
        group="run",
    )
    image_size: int = cli.flag(32, "Image size.", group="run")
    batch_size: int = cli.flag(16, "Batch size.", group="run")
    val_per_class: int = cli.flag(60, "Validation images per class.", group="data")
    pretrain_per_class: int = cli.flag(300, "Pretraining: training images per class of the first half.", group="data")
    pretrain_epochs: int = cli.flag(12, "Pretraining epochs.", group="data")
    seed: int = cli.flag(0, "Seed.", group="run")
    out: str | None = cli.flag(
        None,
        "Work folder, reused: the data and the pretrained model are made once (none: a temporary one).",
        group="output",
    )
    docs: str | None = cli.flag(
        None, "Markdown file whose table between the benchmark's markers is replaced.", group="output"
    )


def _quiet(*a, **k):
    pass


def make_data(work: str, config: FinetuneBenchConfig) -> tuple[str, dict]:
    """(pretraining folder, {per_class: fine-tuning folder}), symbolic links into one generated dataset."""
    from training import synthetic

    per_class = max(config.pretrain_per_class, max(config.sizes))
    full = synthetic.generate(
        os.path.join(work, "full"),
        num_classes=len(synthetic.CLASSES),
        train_per_class=per_class,
        val_per_class=config.val_per_class,
        image_size=64,
        seed=0,
    )
    pre = os.path.join(work, "pretrain")
    for split in ("train", "val"):
        for name in synthetic.CLASSES[:PRETRAIN_CLASSES]:
            _link_files(
                os.path.join(full, split, name),
                os.path.join(pre, split, name),
                config.pretrain_per_class if split == "train" else None,
            )
    folders = {}
    for n in config.sizes:
        root = os.path.join(work, f"finetune_{n}")
        for name in synthetic.CLASSES[PRETRAIN_CLASSES:]:
            _link_files(os.path.join(full, "train", name), os.path.join(root, "train", name), n)
            _link_files(os.path.join(full, "val", name), os.path.join(root, "val", name), None)
        folders[n] = root
    return pre, folders


def _link_files(src: str, dst: str, count: int | None) -> None:
    os.makedirs(dst, exist_ok=True)
    for name in sorted(os.listdir(src))[:count]:
        target = os.path.join(dst, name)
        if not os.path.exists(target):
            os.symlink(os.path.join(src, name), target)


def pretrain(pre: str, work: str, config: FinetuneBenchConfig) -> tuple[str, float]:
    """(path of the pretrained .keras, its validation top-1 on the first half's classes)."""
    from training import checkpoints, loop
    from training.config import TrainConfig

    out = os.path.join(work, "pretrained_b0")
    cfg = TrainConfig(
        dataset="folder",
        data_dir=pre,
        out=out,
        image_size=config.image_size,
        epochs=config.pretrain_epochs,
        batch_size=32,
        seed=config.seed,
        strategy="one_device",
        tensorboard=False,
        verbose=0,
    )
    result = loop.run(cfg, log=_quiet)
    return os.path.join(out, checkpoints.MODEL), result["final"]["val_accuracy"]


def run_trainer(data_dir: str, out: str, *, epochs: int, config: FinetuneBenchConfig, **fields) -> dict:
    from training import loop
    from training.config import TrainConfig

    start = time.perf_counter()
    cfg = TrainConfig(
        dataset="folder",
        data_dir=data_dir,
        out=out,
        image_size=config.image_size,
        epochs=epochs,
        batch_size=config.batch_size,
        seed=config.seed,
        strategy="one_device",
        tensorboard=False,
        verbose=0,
        overwrite=True,
        **fields,
    )
    result = loop.run(cfg, log=_quiet)
    accuracy = sum(int(r[i]) for i, r in enumerate(result["evaluation"]["confusion_matrix"]))
    return {"top1": accuracy / result["num_val"], "seconds": time.perf_counter() - start}


def run_keras_io(data_dir: str, pretrained: str, *, epochs: int, head_epochs: int, config: FinetuneBenchConfig) -> dict:
    """keras-io's EfficientNet fine-tuning recipe, on keras.applications B0 with the pretrained weights copied by name."""
    import keras
    import numpy as np

    from training import data as data_lib

    start = time.perf_counter()
    keras.utils.set_random_seed(config.seed)
    splits = data_lib.load_splits(data_dir)
    classes = splits.num_classes
    size = config.image_size
    base = keras.applications.EfficientNetB0(include_top=False, weights=None, input_shape=(size, size, 3))
    source = keras.saving.load_model(pretrained, compile=False)
    theirs = {layer.name: layer for layer in source.layers}
    for layer in base.layers:
        # keras.applications leaves its Rescaling and Normalization layers unnamed: in a process that built models
        # before, Keras numbers them ("normalization_3"); the source's is "normalization".
        name = layer.name if layer.name in theirs else re.sub(r"_\d+$", "", layer.name)
        if layer.weights and name in theirs:
            layer.set_weights(theirs[name].get_weights())
            if isinstance(layer, keras.layers.Normalization):
                layer.finalize_state()  # Normalization computes its mean and variance from the weights here
    features = keras.Model(source.input, source.get_layer("top_activation").output)
    probe = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype("float32")
    gap = float(np.abs(features(probe, training=False).numpy() - base(probe, training=False).numpy()).max())
    if gap > 1e-3:
        raise RuntimeError(f"keras.applications B0 with the pretrained weights computes other features (max gap {gap})")
    base.trainable = False
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(base.output)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Dropout(0.2, name="top_dropout")(x)
    outputs = keras.layers.Dense(classes, activation="softmax", name="pred")(x)
    model = keras.Model(base.input, outputs)

    def dataset(files, labels, training, epoch=0):
        ds = data_lib.make_dataset(
            files,
            labels,
            image_size=size,
            batch_size=config.batch_size,
            training=training,
            augment="basic" if training else "none",
            seed=config.seed,
            cache=True,
            start_epoch=epoch,
            drop_remainder=training,
            pil_files=splits.pil_files,
        )
        return ds.map(lambda im, y: (im, keras.ops.one_hot(y, classes)))

    train_ds = dataset(splits.train_files, splits.train_labels, True)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="categorical_crossentropy", metrics=["accuracy"])
    if head_epochs:
        model.fit(train_ds, epochs=head_epochs, verbose=0)
    for layer in model.layers[-20:]:
        if not isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = True
    model.compile(optimizer=keras.optimizers.Adam(1e-5), loss="categorical_crossentropy", metrics=["accuracy"])
    if epochs > head_epochs:
        model.fit(train_ds, epochs=epochs - head_epochs, verbose=0)
    val = dataset(splits.val_files, splits.val_labels, False)
    probs = np.concatenate([model(x, training=False).numpy() for x, _ in val])
    top1 = float(np.mean(np.argmax(probs, -1) == np.asarray(splits.val_labels)))
    return {"top1": top1, "seconds": time.perf_counter() - start}


def parse_variant(text: str) -> dict:
    out = {}
    for item in text.split(";"):
        key, _, value = item.partition("=")
        key = key.strip()
        if not key or not value:
            raise cli.UsageError("variants", text, "key=value[;key=value] pairs")
        value = value.strip()
        if value.lower() in ("true", "false"):
            out[key] = value.lower() == "true"
        else:
            try:
                out[key] = float(value) if "." in value else int(value)
            except ValueError:
                out[key] = value
        if key == "unfreeze":
            out[key] = str(out[key])
    return out


def machine() -> dict:
    def sh(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    model = next(
        (line.split(":", 1)[1].strip() for line in sh(["lscpu"]).splitlines() if line.startswith("Model name")),
        platform.processor(),
    )
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "uptime": sh(["uptime"]).strip(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def table(rows, names) -> str:
    lines = []
    for n, epochs, results in rows:
        best = max(results[k]["top1"] for k in names)
        cells = [
            (f"**{results[k]['top1']:.3f}**" if results[k]["top1"] == best else f"{results[k]['top1']:.3f}")
            + f" ({results[k]['seconds']:.0f} s)"
            for k in names
        ]
        lines.append([n, epochs, *cells])
    return markdown.table(["images per class", "epochs", *names], lines)


def bench(config: FinetuneBenchConfig) -> int:
    from training import finetune

    if len(config.epochs) != len(config.sizes):
        raise cli.UsageError("epochs", ",".join(map(str, config.epochs)), f"one number per size ({len(config.sizes)})")
    for m in config.methods:
        if m not in METHODS:
            raise cli.UsageError("methods", m, "one of " + ", ".join(METHODS))
    variants = {v: parse_variant(v) for v in config.variants}
    if config.docs:
        cli.require_file("docs", config.docs)
    work = config.out or tempfile.mkdtemp(prefix="finetune-bench-")
    os.makedirs(work, exist_ok=True)
    pre, folders = make_data(work, config)
    pretrained, pre_top1 = pretrain(pre, work, config)
    print(f"pretrained B0 on {PRETRAIN_CLASSES} classes: val top-1 {pre_top1:.3f}", flush=True)
    rows = []
    for n, epochs in zip(config.sizes, config.epochs):
        results = {}
        head_epochs = max(1, round(finetune.HEAD_FRACTION * epochs))
        for method in config.methods:
            out = os.path.join(work, f"run_{n}_{method}")
            if method == "defaults":
                results[method] = run_trainer(folders[n], out, epochs=epochs, config=config, init_from=pretrained)
            elif method == "all_layers":
                results[method] = run_trainer(
                    folders[n], out, epochs=epochs, config=config, init_from=pretrained, finetune="off"
                )
            elif method == "scratch":
                results[method] = run_trainer(folders[n], out, epochs=epochs, config=config)
            else:
                results[method] = run_keras_io(
                    folders[n], pretrained, epochs=epochs, head_epochs=head_epochs, config=config
                )
            print(
                f"{n}/class, {epochs} epochs, {method}: {results[method]['top1']:.3f} ({results[method]['seconds']:.0f} s)",
                flush=True,
            )
        for name, fields in variants.items():
            out = os.path.join(work, f"run_{n}_variant")
            results[name] = run_trainer(folders[n], out, epochs=epochs, config=config, init_from=pretrained, **fields)
            print(
                f"{n}/class, {epochs} epochs, {name}: {results[name]['top1']:.3f} ({results[name]['seconds']:.0f} s)",
                flush=True,
            )
        rows.append((n, epochs, results))
    names = list(config.methods) + list(variants)
    info = machine()
    text = (
        f"{info['date']}; {info['cpu']}, {info['cpus']} CPUs; load at the end: `{info['uptime']}`. "
        f"B0 at {config.image_size} px, batch {config.batch_size}, pretrained to {pre_top1:.3f} top-1 on the other "
        f"{PRETRAIN_CLASSES} classes; validation: {config.val_per_class} images per class, "
        f"{len(folders) and 5 * config.val_per_class} in all.\n\n" + table(rows, names)
    )
    write_json(
        os.path.join(work, "results.json"),
        {"machine": info, "rows": [{"per_class": n, "epochs": e, "results": r} for n, e, r in rows]},
    )
    if config.docs:
        markdown.replace_section(config.docs, text, BEGIN, END)
    print(text)
    return 0


def main(argv=None) -> int:
    return cli.main(
        FinetuneBenchConfig,
        bench,
        argv,
        prog="keras-effnet-bench-finetune",
        description="Fine-tuning defaults vs all layers from the first step vs the keras-io recipe.",
    )


if __name__ == "__main__":
    cli.run_main(main)
