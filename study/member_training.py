"""Training one study member with the project's trainer, and the training figures the study reports.

Fair by construction: every member, the ResNet-50 baseline included, is trained by `training.train.run`
with the same config and a `model_fn` that returns the bare architecture (EfficientNet members also pass
their phi, so the trainer scales the regularisation to the variant as it would for them alone). The trainer applies its one
model contract (BN momentum, sync BN, zero-initialised classifier) to whatever `model_fn` returns, so no
member is treated apart; the optimizer, schedule, augmentation and loss are the same object for all.

A member's run folder `OUT/runs/<member>` holding a finished run with the same trainer config is reused;
one with other settings is an error and is left as it is.

Accuracy against time: `time_to_target_s` is the training time of the epochs up to the first one whose
validation top-1 reached the target; the plateau criterion says whether the run converged: the best
validation top-1 of the last `plateau_epochs` epochs improved on the best before them by less than
`plateau_delta`.
"""

from __future__ import annotations

import dataclasses
import json
import os

from common import cli

METRICS = "metrics.json"
RECIPE_FIELDS = (
    "epochs",
    "batch_size",
    "optimizer",
    "learning_rate",
    "schedule",
    "warmup_epochs",
    "weight_decay",
    "label_smoothing",
    "augment",
    "ema_decay",
    "bn_momentum",
    "zero_init_head",
    "drop_connect_rate",
    "mixed_precision",
    "seed",
)


def train_config(config, member, data_dir: str, num_train: int, model_dir: str):
    """The trainer's config for one member: the trainer's defaults, the study's epochs, batch and seed."""
    from training.config import TrainConfig

    own_variant = member.role in ("family", "formula", "grid") or member.key.startswith("v2-b")
    variant = {"phi": member.phi, "family": member.kind} if own_variant else {}
    return TrainConfig(
        **variant,
        image_size=member.resolution,
        dataset="folder",
        data_dir=os.path.abspath(data_dir),
        epochs=config.epochs,
        batch_size=min(config.batch_size, num_train),
        learning_rate=config.learning_rate or None,
        seed=config.seed,
        out=model_dir,
        tensorboard=False,
        verbose=0,
    ).validated()


def member_model_fn(member):
    """`model_fn` for `training.train.run`: the member's bare architecture; the trainer applies the contract."""

    def build(config, num_classes, *, image_size=None):
        from study import members as members_lib

        return members_lib.build_model(
            member,
            classes=num_classes,
            image_size=image_size,
            dropout_rate=config.dropout_rate,
            drop_connect_rate=config.drop_connect_rate,
        )

    return build


def recipe(config) -> dict:
    """The training recipe every member shares, as the trainer resolved it."""
    from training.config import TrainConfig

    tc = dataclasses.asdict(
        TrainConfig(
            epochs=config.epochs,
            batch_size=config.batch_size,
            learning_rate=config.learning_rate or None,
            seed=config.seed,
        ).validated()
    )
    return {k: tc.get(k) for k in RECIPE_FIELDS}


def regularisation(model) -> dict:
    """What the built model itself regularises with: head dropout and the largest stochastic-depth rate."""
    from training import regularization

    head, depth = regularization.dropout_layers(model)
    return {
        "head_dropout": float(head.rate) if head is not None else 0.0,
        "stochastic_depth_max": max((float(layer.rate) for layer in depth), default=0.0),
    }


def train_member(config, member, splits, model_dir: str) -> dict:
    """Train `member` into `model_dir` with `training.train.run`, or reuse a finished run there."""
    from training import loop

    tc = train_config(config, member, splits.data_dir, len(splits.train_files), model_dir)
    wanted = json.loads(json.dumps(dataclasses.asdict(tc)))
    metrics_path = os.path.join(model_dir, METRICS)
    if os.path.exists(metrics_path):
        with open(metrics_path) as f:
            metrics = json.load(f)
        old = metrics.get("config", {})
        if old != wanted:
            diffs = sorted(k for k in set(old) | set(wanted) if old.get(k) != wanted.get(k))
            raise cli.UsageError(
                f"--out={config.out}: run folder {model_dir} holds a training run with other "
                f"settings (differs in: {', '.join(diffs)}); it is kept: use a new --out, or the "
                "same settings to reuse it"
            )
        done = len(metrics.get("epochs", [])) >= tc.epochs and os.path.exists(os.path.join(model_dir, "model.keras"))
        if done:
            return metrics
    return loop.run(tc, log=lambda *a, **k: None, model_fn=member_model_fn(member))


def accuracy_curve(epochs: list[dict]) -> list[tuple[float, float]]:
    """(cumulative training seconds, validation top-1) after each epoch."""
    elapsed, curve = 0.0, []
    for e in epochs:
        elapsed += e["seconds"]
        curve.append((elapsed, e["val_accuracy"]))
    return curve


def time_to(curve, target: float):
    return next((t for t, acc in curve if acc >= target), None)


def plateaued(accuracies: list[float], epochs: int, delta: float) -> bool:
    """True when the best of the last `epochs` values beats the best before them by less than `delta`."""
    if len(accuracies) <= epochs:
        return False
    return max(accuracies[-epochs:]) - max(accuracies[:-epochs]) < delta


def metrics_rows(metrics: dict, config) -> list[dict]:
    """Rows of the study table from the trainer's metrics (per-epoch seconds, images_per_sec, val_accuracy)."""
    epochs = metrics["epochs"]
    if not epochs:
        raise ValueError("metrics: the run has no finished epoch.")
    curve = accuracy_curve(epochs)
    final = epochs[-1]["val_accuracy"]
    total = curve[-1][0]
    images_per_sec = sum(e["images_per_sec"] * e["seconds"] for e in epochs) / total
    converged = plateaued([e["val_accuracy"] for e in epochs], config.plateau_epochs, config.plateau_delta)
    batch = metrics.get("global_batch_size")

    def row(measurement, value, unit):
        return {
            "measurement": measurement,
            "value": value,
            "unit": unit,
            "backend": "train",
            "batch_size": batch,
            "rounds": len(epochs),
        }

    stages = metrics.get("regularization") or {}
    last = stages[max(stages, key=int)] if stages else {}
    contract = metrics.get("contract") or {}
    return [
        row("train_dropout", last.get("dropout_rate"), "rate"),
        row("train_drop_connect", last.get("drop_connect_rate"), "rate"),
        row("train_crop_scale_min", last.get("crop_scale_min"), "fraction"),
        row("train_randaugment", last.get("randaugment_magnitude"), "of 30"),
        row("contract_bn_momentum", contract.get("bn_momentum"), "momentum"),
        row("contract_zero_head", contract.get("zero_init_head"), "bool"),
        row("val_top1", final, "fraction"),
        row("best_val_top1", max(a for _, a in curve), "fraction"),
        row("train_images_per_sec", images_per_sec, "images/s"),
        row("train_seconds", total, "s"),
        row("time_to_final_accuracy_s", time_to(curve, final), "s"),
        row("time_to_target_s", time_to(curve, config.target_accuracy), "s"),
        row("plateaued", converged, "bool"),
        row("epochs", len(epochs), "count"),
        row("accuracy_curve", json.dumps([[round(t, 2), round(a, 4)] for t, a in curve]), "[[s, top1]]"),
    ]
