"""Training one study member, and the training figures the study reports.

Reuse (issue 5): a member's run folder `S/runs/<member>` holding `metrics.json`
with the same settings is a finished run and is not trained again. A run
folder with other settings is an error, never overwritten.

`time_to_final_accuracy_s` is the cumulative training time of the epochs up to
the first one whose validation top-1 reached the final value: what a user waits
for the accuracy they end with. `train_images_per_sec` leaves out the first
epoch when there are more (it includes tracing and the first pass's file reads).
"""

from __future__ import annotations

import json
import math
import os
import time

from training.study_lib import store

METRICS = "metrics.json"
RUN_SPEC = "study_run.json"


def run_spec(config, member, splits) -> dict:
    return {
        "member": member.as_dict(), "epochs": config.epochs, "batch_size": config.batch_size,
        "learning_rate": config.learning_rate, "seed": config.seed,
        "data_dir": os.path.abspath(splits.data_dir), "classes": list(splits.class_names),
        "train_images": len(splits.train_files), "val_images": len(splits.val_files),
    }


def train_member(config, member, splits, model_dir: str) -> dict:
    """Train `member` into `model_dir` (or reuse a finished run there); return its metrics dict."""
    spec = json.loads(json.dumps(run_spec(config, member, splits)))
    spec_path = os.path.join(model_dir, RUN_SPEC)
    metrics_path = os.path.join(model_dir, METRICS)
    if os.path.exists(spec_path):
        with open(spec_path) as f:
            old = json.load(f)
        if old != spec:
            diffs = sorted(k for k in set(old) | set(spec) if old.get(k) != spec.get(k))
            raise ValueError(
                f"out: run folder {model_dir!r} holds a run with other settings (differs in {', '.join(diffs)}); "
                "it is kept. Use a new --out."
            )
        if os.path.exists(metrics_path) and os.path.exists(os.path.join(model_dir, "model.keras")):
            with open(metrics_path) as f:
                return json.load(f)
    store.atomic_write_json(spec_path, spec)
    metrics = fit(config, member, splits, model_dir)
    store.atomic_write_json(metrics_path, metrics)
    return metrics


def fit(config, member, splits, model_dir: str) -> dict:
    """Train with Keras `fit` on the project's data pipeline; every member the same recipe.

    The recipe is the trainer's small-data default (training/config.py,
    REFERENCE section 5): AdamW 3e-3 for 64 images scaled linearly with the batch,
    one warm-up epoch then cosine, weight decay 0.05, label smoothing 0.1, and
    BatchNorm momentum 0.9 on every BatchNormalization layer (0.99 lags behind
    the weights over a few hundred steps). ResNet-50 gets the same.
    """
    from keras_effnet import flavours
    from training import data
    from training.study_lib import members as members_lib

    keras = flavours.keras3()
    keras.backend.clear_session()
    keras.utils.set_random_seed(config.seed)
    classes = len(splits.class_names)
    size = member.resolution
    batch = min(config.batch_size, len(splits.train_files))
    train_ds = data.make_dataset(splits.train_files, splits.train_labels, image_size=size, batch_size=batch,
                                 training=True, augment="basic", seed=config.seed)
    val_ds = data.make_dataset(splits.val_files, splits.val_labels, image_size=size, batch_size=batch,
                               training=False, augment="none", cache=True)
    model = members_lib.build_model(member, classes=classes)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            layer.momentum = 0.9
    steps = max(1, len(splits.train_files) // batch)
    lr = (config.learning_rate or 0.003 * batch / 64)
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=max(1, steps * (config.epochs - 1)) if config.epochs > 1 else 1,
        warmup_target=lr, warmup_steps=steps,
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=0.05),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.1),
        metrics=["accuracy"],
    )
    one_hot = lambda x, y: (x, _one_hot(y, classes))
    timer = _EpochTimer(keras)
    history = model.fit(train_ds.map(one_hot), validation_data=val_ds.map(one_hot), epochs=config.epochs,
                        callbacks=[timer], verbose=0)
    losses = history.history["loss"]
    bad = [i + 1 for i, v in enumerate(losses) if not math.isfinite(v)]
    if bad:
        raise FloatingPointError(f"training {member.label}: loss is not finite at epoch(s) {bad}.")
    model.save(os.path.join(model_dir, "model.keras.tmp.keras"))
    os.replace(os.path.join(model_dir, "model.keras.tmp.keras"), os.path.join(model_dir, "model.keras"))
    images = steps * batch
    epochs = [
        {"epoch": i + 1, "seconds": s, "images_per_sec": images / s,
         "loss": float(history.history["loss"][i]), "val_accuracy": float(history.history["val_accuracy"][i])}
        for i, s in enumerate(timer.seconds)
    ]
    return {"trainer": "training.study_lib.training_link.fit", "epochs": epochs,
            "val_accuracy": epochs[-1]["val_accuracy"], "batch_size": batch, "image_size": size}


def _one_hot(labels, classes):
    import tensorflow as tf

    return tf.one_hot(labels, classes)


class _EpochTimer:
    """Wall time of each epoch's training pass (validation excluded), as a Keras callback."""

    def __new__(cls, keras):
        class Timer(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.seconds = []
                self._start = None

            def on_epoch_begin(self, epoch, logs=None):
                self._start = time.perf_counter()

            def on_test_begin(self, logs=None):
                if self._start is not None:
                    self.seconds.append(time.perf_counter() - self._start)
                    self._start = None

        return Timer()


def metrics_rows(metrics: dict) -> list[dict]:
    """Rows of the study table from a metrics dict with per-epoch seconds, images_per_sec, val_accuracy."""
    epochs = metrics["epochs"]
    if not epochs:
        raise ValueError("metrics: the run has no finished epoch.")
    final = epochs[-1]["val_accuracy"]
    elapsed, to_final = 0.0, None
    for e in epochs:
        elapsed += e["seconds"]
        if to_final is None and e["val_accuracy"] >= final:
            to_final = elapsed
    total = sum(e["seconds"] for e in epochs)
    steady = epochs[1:] or epochs
    images_per_sec = sum(e["images_per_sec"] * e["seconds"] for e in steady) / sum(e["seconds"] for e in steady)
    batch = metrics.get("batch_size")
    return [
        {"measurement": "val_top1", "value": final, "unit": "fraction", "backend": "train", "batch_size": batch, "reps": None},
        {"measurement": "train_images_per_sec", "value": images_per_sec, "unit": "images/s", "backend": "train", "batch_size": batch, "reps": len(epochs)},
        {"measurement": "train_seconds", "value": total, "unit": "s", "backend": "train", "batch_size": batch, "reps": len(epochs)},
        {"measurement": "time_to_final_accuracy_s", "value": to_final, "unit": "s", "backend": "train", "batch_size": batch, "reps": len(epochs)},
        {"measurement": "epochs", "value": len(epochs), "unit": "count", "backend": "train", "batch_size": batch, "reps": None},
    ]
