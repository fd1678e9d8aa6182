"""The training loop: `run(config)` trains one model under tf.distribute.

`run` is kept linear (big_vision's `main`): choose the strategy, hold the
`--out` folder, `prepare_data`, `setup` (training.run_state: checks, model,
optimizer, EMA, trainers, restore), `train_epoch` (training.epoch) until the
last epoch, `finish` (the saved model, its confusion matrix, metrics.json).
The distributed steps are `training.trainer`, the input pipelines
`training.pipelines`, the records `training.metrics_writer`, the model
contract `training.contract`, checkpoint and resume `training.checkpoints`.

Keras `fit` (with `steps_per_execution`, `jit_compile`, `BackupAndRestore`,
optimizer EMA and the TensorBoard callback) was the alternative. The loop stays
for what it does that `fit` does not here: the per-replica BatchNorm moving
statistics, which Keras 3 keeps apart without sync BN, are averaged before
every evaluation and checkpoint; a mid-epoch checkpoint records the partial
epoch's sums beside the variables; and every worker checks that it sees the
chief's checkpoint. Its speed against `fit` is in docs/measurements/benchmarks.md.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

import numpy as np

from common import lock as folder_lock
from keras_effnet import keras_versions
from training import checkpoints as ckpt_lib
from training import confusion, datasets, folder_split, pipelines
from training import data as data_lib
from training import model as model_lib
from training import shards as shards_lib
from training import strategy as strategy_lib
from training.config import TrainConfig
from training.epoch import train_epoch
from training.metrics_writer import import_wandb
from training.run_state import RunState, setup


def prepare_data(config: TrainConfig, *, log=print) -> data_lib.Splits:
    """Generate, download or scan the dataset of `config`; report skipped files (or TFRecord records)."""
    if config.dataset == "folder" and shards_lib.is_shard_dir(config.data_dir):
        splits = shards_lib.load_shards(config.data_dir, label_offset=config.label_offset)
        for s in splits.skipped:
            log(f"skipped: {s}")
        return splits
    per_class = config.synthetic_per_class
    data_dir = datasets.dataset_folder(
        config.dataset,
        config.data_dir or (os.path.join(config.out, "synthetic_data") if config.dataset == "synthetic" else None),
        fastai_size=config.fastai_size,
        synthetic_options={
            "train_per_class": per_class,
            "val_per_class": max(1, per_class * 3 // 10),
            "image_size": max(64, config.image_size or 64),
            "seed": 0,
        },
    )
    if config.dataset == "folder" and folder_split.is_one_folder(data_dir):
        splits, _ = folder_split.for_run(
            data_dir, config.out, val_split=config.val_split, seed=config.seed, overwrite=config.overwrite
        )
    else:
        splits = data_lib.load_splits(data_dir)
    if config.label_noise:
        splits = datasets.apply_label_noise(splits, config.label_noise)
    if splits.skipped:
        log(f"skipped {len(splits.skipped)} file(s) that are not decodable images:")
        for s in splits.skipped[:20]:
            log(f"  {s}")
        if len(splits.skipped) > 20:
            log(f"  ... and {len(splits.skipped) - 20} more (all listed in metrics.json)")
    return splits


def run(config: TrainConfig, *, log=print, model_fn=None) -> dict:
    """Train as `config` says; return the metrics dict that is also written to model_dir/metrics.json.

    `model_fn(config, num_classes, *, image_size)` replaces `model.build_model` for models that
    cannot be built from phi and family (the study's ResNet-50 baseline and grid points). Whatever it
    returns gets the same training contract (`contract.apply_contract`): BN momentum, sync BN, zero head.
    """
    config = config.validated()
    if config.wandb:
        import_wandb()
    strategy = strategy_lib.get_strategy(
        config.strategy,
        num_gpus=config.num_gpus,
        cpu_replicas=config.cpu_replicas,
        cluster=config.cluster,
        port_base=config.cluster_port,
    )
    chief = strategy_lib.is_chief(strategy)
    say = log if chief else (lambda *a, **k: None)
    # Every worker saves (variables may need collective reads); only the chief writes model_dir.
    write_dir = config.out if chief else tempfile.mkdtemp(prefix="worker-")
    policy = keras_versions.keras3().config.dtype_policy()
    # One writer per folder: the chief holds --out for the whole run; the other workers of its run share it.
    owner = (
        folder_lock.exclusive(config.out, command="keras-effnet-train", run=strategy_lib.run_key(strategy))
        if chief
        else contextlib.nullcontext()
    )
    try:
        with owner:
            keras_versions.keras3().utils.set_random_seed(config.seed)
            splits = prepare_data(config, log=say)
            state = setup(
                config,
                strategy,
                splits,
                chief=chief,
                write_dir=write_dir,
                say=say,
                model_fn=model_fn or model_lib.build_model,
            )
            while state.epoch < config.epochs:
                train_epoch(state)
            return finish(state)
    finally:
        keras_versions.keras3().config.set_dtype_policy(policy)  # the run's mixed precision ends with it
        if not chief:
            shutil.rmtree(write_dir, ignore_errors=True)


def finish(state: RunState) -> dict:
    """The run's end: the saved model (the EMA weights when kept), its confusion matrix, the final metrics.json."""
    config, trainer = state.config, state.trainer
    if trainer.ema:
        trainer.swap_ema()  # the saved model holds the EMA weights
    if state.plan is not None:
        state.model.trainable = True  # every layer's weights, in the order export_model copies them
    final = model_lib.export_model(
        state.model,
        state.model_config,
        state.num_classes,
        config.image_size,
        model_fn=state.model_fn,
        pretrained=state.plan is not None,
    )
    history = state.history
    result = {**state.info, "epochs": history, "final": history[-1] if history else {}}
    if state.chief and not state.sharded:  # shards: keras-effnet-evaluate reads their validation split
        result["evaluation"] = evaluate_split(final, state.splits, config.image_size, state.global_batch)
    with ckpt_lib.deferred_interrupt():
        ckpt_lib.save_model(final, os.path.join(state.write_dir, ckpt_lib.MODEL))
        if state.chief and "evaluation" in result:
            confusion.write(state.write_dir, result["evaluation"])
        state.metrics.write(result)
    state.metrics.close()
    return result


def evaluate_split(model, splits, image_size: int, batch_size: int) -> dict:
    """The confusion matrix, per-class precision, recall and F1 and the most confused pairs of `model` on the val split."""
    ds = pipelines.val_dataset(splits, image_size=image_size, batch_size=batch_size)
    predictions = np.concatenate([np.argmax(model(x, training=False).numpy(), -1) for x, _ in ds])
    return confusion.summary(np.asarray(splits.val_labels), predictions, splits.class_names)
