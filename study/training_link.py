"""Training one study member, and the training figures the study reports.

Every member is trained by the project's trainer, `training.train.run`
(issue 3), with its small-data defaults. Reuse (issue 5): a member's run folder
`S/runs/<member>` holding a finished run with the same trainer config is not
trained again; a run folder with other settings is an error, never overwritten.

`time_to_final_accuracy_s` is the cumulative training time of the epochs up to
the first one whose validation top-1 reached the final value: what a user waits
for the accuracy they end with. `train_images_per_sec` is the trainer's
steady-state rate of each epoch (first step, with tracing, left out), averaged
over the epochs weighted by their time.
"""

from __future__ import annotations

import dataclasses
import json
import os

METRICS = "metrics.json"


def train_config(config, member, splits, model_dir: str):
    """The trainer's config for one member: the trainer's small-data defaults, the study's epochs and batch."""
    from training.config import TrainConfig

    effnet = member.role != "baseline"
    return TrainConfig(
        phi=member.phi if effnet else 0, family=member.kind if effnet else "efficientnet",
        image_size=member.resolution, dataset="folder", data_dir=os.path.abspath(splits.data_dir),
        epochs=config.epochs, batch_size=min(config.batch_size, len(splits.train_files)),
        learning_rate=config.learning_rate or None, seed=config.seed, model_dir=model_dir,
        tensorboard=False, verbose=0,
    ).validated()


def needs_custom_builder(member) -> bool:
    """True when `training.train.build_model` (phi + family only) would not build this member."""
    if member.role == "baseline":
        return True
    from keras_effnet import architecture

    return architecture.coefficients(member.phi, family=member.kind) != architecture.coefficients(
        member.phi, family=member.kind, scaling=member.scaling, alpha=member.alpha, beta=member.beta, gamma=member.gamma)


def member_model_fn(member):
    """A `model_fn` for `training.train.run` when the trainer cannot build `member` itself, else None.

    The trainer builds from phi and family only. ResNet-50, a grid point and a formula twin get a
    builder with the same contract (head, dropout, BN momentum and sync-BN from the config), so every
    member goes through the same loop, optimizer, schedule and data pipeline: the baseline is
    "trained the same way" (issue 5).
    """
    if not needs_custom_builder(member):
        return None

    def build_model(config, num_classes, *, image_size=None):
        from keras_effnet import flavours
        from training.study_lib import members as members_lib

        keras = flavours.keras3()
        m = dataclasses.replace(member, resolution=image_size or member.resolution)
        model = members_lib.build_model(m, classes=num_classes, dropout_rate=config.dropout_rate,
                                        drop_connect_rate=config.drop_connect_rate)
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = config.bn_momentum
                layer.synchronized = bool(config.sync_bn)
        return model

    return build_model


def train_member(config, member, splits, model_dir: str) -> dict:
    """Train `member` into `model_dir` with `training.train.run`, or reuse a finished run there.

    A finished run (metrics.json with every epoch and model.keras) is reused
    when its trainer config equals this study's for the member; any other run
    in the folder is an error and is left as it is.
    """
    from training import train

    tc = train_config(config, member, splits, model_dir)
    wanted = json.loads(json.dumps(dataclasses.asdict(tc)))
    metrics_path = os.path.join(model_dir, METRICS)
    if os.path.exists(metrics_path):
        with open(metrics_path) as f:
            metrics = json.load(f)
        old = metrics.get("config", {})
        if old != wanted:
            diffs = sorted(k for k in set(old) | set(wanted) if old.get(k) != wanted.get(k))
            raise ValueError(
                f"out: run folder {model_dir!r} holds a training run with other settings (differs in: "
                f"{', '.join(diffs)}); it is kept. Use a new --out, or the same settings to reuse it."
            )
        done = len(metrics.get("epochs", [])) >= tc.epochs and os.path.exists(os.path.join(model_dir, "model.keras"))
        if done:
            return metrics
    return train.run(tc, log=lambda *a, **k: None, model_fn=member_model_fn(member))


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
    images_per_sec = sum(e["images_per_sec"] * e["seconds"] for e in epochs) / total
    batch = metrics.get("global_batch_size")
    return [
        {"measurement": "val_top1", "value": final, "unit": "fraction", "backend": "train", "batch_size": batch, "reps": None},
        {"measurement": "train_images_per_sec", "value": images_per_sec, "unit": "images/s", "backend": "train", "batch_size": batch, "reps": len(epochs)},
        {"measurement": "train_seconds", "value": total, "unit": "s", "backend": "train", "batch_size": batch, "reps": len(epochs)},
        {"measurement": "time_to_final_accuracy_s", "value": to_final, "unit": "s", "backend": "train", "batch_size": batch, "reps": len(epochs)},
        {"measurement": "epochs", "value": len(epochs), "unit": "count", "backend": "train", "batch_size": batch, "reps": None},
    ]
