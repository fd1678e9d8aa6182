"""`setup`: everything a run holds between its epochs (`RunState`), built, restored and announced.

In order: the inputs are checked (batch size, shards, the pretrained source,
class weights) before anything is written; then the chief claims `--out`
(run.json, the one-folder split record) and every worker checks it sees the
chief's run; then, inside `strategy.scope()`, the model gets the training
contract (training.contract) and the pretrained weights, and the optimizer,
EMA and one `Trainer` per fine-tuning stage are created; the newest
checkpoint is restored; metrics.json records the run information and the
epochs already done.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import tensorflow as tf

from common import lock as folder_lock
from common.files import atomic_write
from training import checkpoints as ckpt_lib
from training import cluster as cluster_lib
from training import config as config_lib
from training import contract, finetune, folder_split, imbalance, precision, regularization, schedule
from training import optimizer as optimizer_lib
from training import shards as shards_lib
from training import strategy as strategy_lib
from training.config import ConfigError, TrainConfig
from training.metrics_writer import MetricsWriter
from training.trainer import LoopLength, Trainer, resolve_jit


@dataclasses.dataclass
class RunState:
    """A run between two epochs: what `setup` built and what the epochs done so far changed."""

    config: TrainConfig
    strategy: Any
    chief: bool
    write_dir: str  # config.out on the chief; a temporary folder on the other workers
    say: Callable  # the chief's log; silent on the other workers
    model_fn: Callable
    splits: Any  # data.Splits or shards.ShardSplits
    global_batch: int
    steps_per_epoch: int
    warmup_steps: int
    base_lr: float
    sizes: list  # the image size of every epoch
    stage_reg: dict  # image size -> regularization.Regularization
    model_config: TrainConfig  # the config the model was built with (the largest size's dropout rates)
    plan: finetune.Plan | None
    model: Any
    optimizer: Any
    trainers: dict  # fine-tuning stage -> Trainer (finetune.BACKBONE only without a plan)
    saver: ckpt_lib.RunCheckpoint
    progress: ckpt_lib.Progress  # as restored: the first epoch trained resumes from it
    metrics: MetricsWriter
    history: list = dataclasses.field(default_factory=list)  # the records of the epochs done
    info: dict = dataclasses.field(default_factory=dict)  # the run information in metrics.json
    epoch: int = 0  # epochs done
    global_step: int = 0
    last_checkpoint: int = 0  # the global step of the newest checkpoint
    lr: float = 0.0  # the last learning rate used
    stage: str | None = None  # the fine-tuning stage of the current epoch
    loop_length: LoopLength = dataclasses.field(default_factory=lambda: LoopLength(None))
    val_cache: dict = dataclasses.field(default_factory=dict)  # image size -> distributed validation set

    @property
    def trainer(self) -> Trainer:
        """The current stage's trainer."""
        return self.trainers[finetune.BACKBONE if self.stage is None else self.stage]

    @property
    def num_classes(self) -> int:
        return self.splits.num_classes

    @property
    def sharded(self) -> bool:
        return isinstance(self.splits, shards_lib.ShardSplits)


def setup(config: TrainConfig, strategy, splits, *, chief: bool, write_dir: str, say, model_fn) -> RunState:
    """Check the inputs, claim `--out`, build the model and its trainers, restore the newest checkpoint."""
    num_classes = splits.num_classes
    global_batch = config.batch_size
    full_steps = steps_in_epoch(config, strategy, splits)
    plan = finetune.plan(config)
    source = finetune.load_source(config) if config.init_from else None
    if source is not None:  # refused before anything is written: a source of another family or variant
        probe = model_fn(
            config.replace(dropout_rate=0.0, drop_connect_rate=0.0), num_classes, image_size=config.image_size
        )
        finetune.check_fits(probe, source, config)
    weights = class_weights(config, splits)
    claim_out(config, strategy, splits, chief=chief, say=say)
    steps_per_epoch = min(full_steps, config.steps_per_epoch or full_steps)
    sizes = (
        schedule.progressive_sizes(config.image_size, config.epochs)
        if config.progressive_resize
        else [config.image_size] * config.epochs
    )
    policy = precision.set_precision(config)
    jit = resolve_jit(config, strategy.num_replicas_in_sync)
    # Adaptive regularisation (training/regularization.py): one setting per image size; the model is built with
    # the last stage's (largest) dropout rates and earlier stages lower them.
    stage_reg = {s: regularization.for_config(config, s, len(splits.train_files)) for s in sorted(set(sizes))}
    model_config = config.replace(
        dropout_rate=stage_reg[sizes[-1]].dropout_rate, drop_connect_rate=stage_reg[sizes[-1]].drop_connect_rate
    )
    base_lr = schedule.scaled_learning_rate(config.learning_rate, global_batch)
    with strategy.scope():
        model, applied, copied = _model(config, model_config, model_fn, num_classes, source, plan, say)
        optimizer, trainers, trainable = _trainers(config, strategy, model, plan, base_lr, jit=jit, weights=weights)
        checkpoint = tf.train.Checkpoint(
            model=model,
            optimizer=optimizer,
            ema=trainers[finetune.BACKBONE].ema,
            ema_step=trainers[finetune.BACKBONE].ema_step,
        )
    saver = ckpt_lib.RunCheckpoint(checkpoint, read_dir=config.out, write_dir=write_dir)
    progress = restore(saver, say)
    state = RunState(
        config=config,
        strategy=strategy,
        chief=chief,
        write_dir=write_dir,
        say=say,
        model_fn=model_fn,
        splits=splits,
        global_batch=global_batch,
        steps_per_epoch=steps_per_epoch,
        warmup_steps=int(round(config.warmup_epochs * steps_per_epoch)),
        base_lr=base_lr,
        sizes=sizes,
        stage_reg=stage_reg,
        model_config=model_config,
        plan=plan,
        model=model,
        optimizer=optimizer,
        trainers=trainers,
        saver=saver,
        progress=progress,
        metrics=MetricsWriter(write_dir, chief=chief),
        history=[e for e in progress.history if e["epoch"] <= progress.epoch],
        epoch=progress.epoch,
        global_step=progress.global_step,
        last_checkpoint=progress.global_step,
        lr=base_lr,
        loop_length=LoopLength(config.steps_per_loop),
    )
    state.info = run_info(
        state, policy=policy, jit=jit, applied=applied, weights=weights, copied=copied, trainable=trainable
    )
    announce(state)
    state.metrics.open_logs(config, state.info)
    return state


def restore(saver: ckpt_lib.RunCheckpoint, say) -> ckpt_lib.Progress:
    """The progress of the newest checkpoint, restored into the variables (said when there is one)."""
    progress = saver.restore() or ckpt_lib.Progress()
    if progress.global_step:
        where = f"after epoch {progress.epoch}" + (
            f", step {progress.step} of epoch {progress.epoch + 1}" if progress.step else ""
        )
        say(f"resumed from {saver.read_dir} at global step {progress.global_step} ({where})")
    return progress


def steps_in_epoch(config: TrainConfig, strategy, splits) -> int:
    """The steps of one full pass over the training split; refuses a batch the replicas or the split cannot take."""
    global_batch = config.batch_size
    replicas = strategy.num_replicas_in_sync
    if global_batch % replicas:
        raise ConfigError("batch_size", global_batch, f"a multiple of the {replicas} replicas in sync")
    sharded = isinstance(splits, shards_lib.ShardSplits)
    if config.record_ids and not sharded:
        raise ConfigError("record_ids", config.record_ids, "no value unless --data_dir holds TFRecord shards")
    if sharded:  # each worker reads its own part: the smallest part decides
        full_steps = shards_lib.steps_per_epoch(splits.train_files, global_batch, strategy_lib.num_workers(strategy))
    else:
        full_steps = len(splits.train_files) // global_batch
    if full_steps < 1:
        raise ConfigError("batch_size", global_batch, f"at most the {len(splits.train_files)} training images")
    return full_steps


def class_weights(config: TrainConfig, splits):
    """The per-class loss weights of `config.class_weight` (training.imbalance), or None."""
    sharded = isinstance(splits, shards_lib.ShardSplits)
    if sharded and config.class_weight != "none":
        raise ConfigError(
            "class_weight",
            config.class_weight,
            "'none' with TFRecord shards (balanced weights count a folder's labels)",
        )
    return None if sharded else imbalance.class_weights(config.class_weight, splits.train_labels, splits.num_classes)


def claim_out(config: TrainConfig, strategy, splits, *, chief: bool, say) -> None:
    """The inputs are checked: the chief writes run.json (and the split record); every worker checks it sees them."""
    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    sharded = isinstance(splits, shards_lib.ShardSplits)
    if not (multi_worker and not chief and config.overwrite):
        run_id = ckpt_lib.check_model_dir(config, chief=chief, log=say)
    else:
        run_id = 0
    if chief:
        os.makedirs(config.out, exist_ok=True)
        ckpt_lib.write_run(config.out, config, run_id)
        if config.dataset == "folder" and not sharded and folder_split.is_one_folder(config.data_dir):
            folder_split.write(config.out, folder_split.as_record(splits, val_split=config.val_split, seed=config.seed))
    if multi_worker:
        strategy.gather(strategy.run(lambda: tf.zeros([1])), axis=0)  # a barrier: the chief has written run.json
        ckpt_lib.check_workers_agree(
            strategy, config.out, ckpt_lib.read_run_id(config.out), ckpt_lib.latest_number(config.out)
        )
        if not chief:
            folder_lock.check_shared(config.out, run=strategy_lib.run_key(strategy))


def _model(config, model_config, model_fn, num_classes, source, plan, say):
    """The model with the training contract and the pretrained weights: (model, contract applied, copied layers)."""
    model = model_fn(model_config, num_classes, image_size=None if config.progressive_resize else config.image_size)
    applied = contract.apply_contract(model, config, pretrained=plan is not None)
    copied = finetune.copy_weights(model, source) if source is not None else []
    if copied:
        say(f"init_from {config.init_from}: copied weights of {len(copied)} layers")
    return model, applied, copied


def _trainers(config, strategy, model, plan, base_lr, *, jit: bool, weights):
    """(optimizer, stage -> Trainer, stage -> trainable parameters): one Trainer per fine-tuning stage.

    The optimizer is built over the backbone stage's variables, so its slots cover every weight that
    will train; each stage traces its own steps over its own trainable variables.
    """
    trainable = {}
    if plan is not None:
        trainable[finetune.BACKBONE] = finetune.set_stage(model, finetune.BACKBONE, plan)
    optimizer = optimizer_lib.make_optimizer(config, model, base_lr)
    optimizer.build(model.trainable_variables)

    def trainer():
        return Trainer(
            config,
            strategy,
            model,
            optimizer,
            global_batch_size=config.batch_size,
            jit_compile=jit,
            class_weights=weights,
        )

    trainers = {finetune.BACKBONE: trainer()}
    if plan is not None:
        trainable[finetune.HEAD] = finetune.set_stage(model, finetune.HEAD, plan)
        trainers[finetune.HEAD] = trainer()
    return optimizer, trainers, trainable


def run_info(state: RunState, *, policy: str, jit: bool, applied: dict, weights, copied: list, trainable: dict) -> dict:
    """The run information at the top of metrics.json (and the W&B config)."""
    config, splits, strategy, plan = state.config, state.splits, state.strategy, state.plan
    replicas = strategy.num_replicas_in_sync
    return {
        "config": config_lib.json_config(config),
        "class_names": list(splits.class_names),
        "num_train": len(splits.train_files),
        "num_val": len(splits.val_files),
        "skipped": [str(s) for s in splits.skipped],
        "num_replicas": replicas,
        "strategy": strategy_lib.strategy_name(strategy),
        "devices": list(getattr(strategy.extended, "worker_devices", ())),
        "dtype_policy": policy,
        "jit_compile": jit,
        "global_batch_size": state.global_batch,
        "per_replica_batch_size": state.global_batch // replicas,
        "steps_per_epoch": state.steps_per_epoch,
        "base_learning_rate": state.base_lr,
        "optimizer": type(state.optimizer).__name__,
        "contract": applied,
        "regularization": {str(s): r.as_dict() for s, r in state.stage_reg.items()},
        "class_weight": {
            "mode": config.class_weight,
            "weights": None if weights is None else dict(zip(splits.class_names, map(float, weights))),
        },
        "finetune": None
        if plan is None
        else {
            **plan.as_dict(),
            "source": config.init_from,
            "copied_layers": len(copied),
            "learning_rate": {s: plan.learning_rate(s, state.base_lr) for s in (finetune.HEAD, finetune.BACKBONE)},
            "trainable_parameters": trainable,
        },
    }


def announce(state: RunState) -> None:
    """labels.txt and metrics.json (the run information and the epochs done) written; the run described in the log."""
    splits, strategy, say = state.splits, state.strategy, state.say
    info, global_batch = state.info, state.global_batch
    replicas = strategy.num_replicas_in_sync
    if state.chief:
        atomic_write(os.path.join(state.write_dir, ckpt_lib.LABELS), "\n".join(splits.class_names) + "\n")
    state.metrics.write({**info, "epochs": state.history})
    say(
        f"{info['strategy']} with {replicas} replica(s); global batch {global_batch} = {global_batch // replicas} per replica; "
        f"{len(splits.train_files)} train / {len(splits.val_files)} val images, {splits.num_classes} classes; "
        f"{state.steps_per_epoch} steps/epoch; lr {state.base_lr:.4g}; {info['dtype_policy']}; jit_compile={info['jit_compile']}"
    )
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        say(cluster_lib.describe(strategy.cluster_resolver))
    if state.sharded:
        workers = strategy_lib.num_workers(strategy)
        for name, part in (("train", splits.train_files), ("val", splits.val_files)):
            say(f"{name}: {shards_lib.split_plan(part, workers).describe(len(part.paths))}")
