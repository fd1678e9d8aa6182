"""The training loop: `run(config)` trains one model under tf.distribute.

A flat list of small functions (flax/big_vision style): `prepare_data`,
`Trainer` (the distributed train and eval steps), `run`. Model, optimizer,
EMA and metrics are created inside `strategy.scope()`; the model contract is
`training.contract`, checkpoint and resume `training.checkpoints`.

Distribution arithmetic, where it happens:
  * the dataset yields *global* batches of `batch_size`; `experimental_distribute_dataset`
    splits each one into `batch_size / num_replicas` per replica (`drop_remainder`
    keeps the shares equal, tensorflow/tensorflow#52986);
  * each replica's loss is the *sum* of its per-example losses divided by the
    *global* batch, and the optimizer SUM-all-reduces the gradients, so the
    update equals one replica's on the whole global batch;
  * with `sync_bn`, BatchNorm uses the mean and variance of the global batch
    (all-reduced across replicas), so 2 replicas at global batch B train like
    1 replica at batch B (tested).

No host round trip per step: one graph call runs `steps_per_loop` steps (a
`tf.while_loop` over the distributed iterator, as Keras `fit` does with
`steps_per_execution`), summing loss and correct predictions on the device.
The host reads them once per call for the NaN check and the progress bar.
With `steps_per_loop=None` the loop length adapts so a call takes about
`LOOP_SECONDS`: one step per call for B0 on a CPU, hundreds on a GPU.

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
import math
import os
import shutil
import tempfile
import time

import numpy as np

from common import lock as folder_lock
from common.files import atomic_write
from training import checkpoints as ckpt_lib
from training import cluster as cluster_lib
from training import config as config_lib
from training import (
    confusion,
    contract,
    datasets,
    finetune,
    folder_split,
    imbalance,
    precision,
    regularization,
    schedule,
    synthetic,
)
from training import data as data_lib
from training import model as model_lib
from training import optimizer as optimizer_lib
from training import shards as shards_lib
from training import strategy as strategy_lib
from training.config import ConfigError, TrainConfig

LOOP_SECONDS = 0.25
MAX_STEPS_PER_LOOP = 1000


class NonFiniteLossError(RuntimeError):
    """Raised when the training loss is NaN or infinite; the last good checkpoint is kept."""


def prepare_data(config: TrainConfig, *, log=print) -> data_lib.Splits:
    """Generate, download or scan the dataset of `config`; report skipped files (or TFRecord records)."""
    if config.dataset == "folder" and shards_lib.is_shard_dir(config.data_dir):
        splits = shards_lib.load_shards(config.data_dir, label_offset=config.label_offset)
        for s in splits.skipped:
            log(f"skipped: {s}")
        return splits
    if config.dataset == "synthetic":
        root = config.data_dir or os.path.join(config.out, "synthetic_data")
        per_class = config.synthetic_per_class
        data_dir = synthetic.generate(
            root,
            train_per_class=per_class,
            val_per_class=max(1, per_class * 3 // 10),
            image_size=max(64, config.image_size or 64),
            seed=0,
        )
    elif config.dataset in ("imagenette", "imagewoof"):
        data_dir = datasets.download_fastai(config.dataset, config.fastai_size, config.data_dir)
    else:
        data_dir = config.data_dir
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


class Trainer:
    """The distributed train and eval steps of one model; everything created in `strategy.scope()`."""

    def __init__(
        self,
        config: TrainConfig,
        strategy,
        model,
        optimizer,
        *,
        global_batch_size: int,
        jit_compile: bool,
        class_weights=None,
    ):
        import tensorflow as tf

        from keras_effnet import flavours

        self.keras = flavours.keras3()
        self.config = config
        self.strategy = strategy
        self.model = model
        self.optimizer = optimizer
        self.global_batch_size = global_batch_size
        self.num_replicas = strategy.num_replicas_in_sync
        # Per-class loss weights (training.imbalance), or None.
        self.class_weights = None if class_weights is None else tf.constant(class_weights, tf.float32)
        self.l2 = optimizer_lib.l2_variables(model) if config.optimizer != "adamw" and config.weight_decay else []
        with strategy.scope():
            self.ema = (
                [tf.Variable(v.value, trainable=False, name="ema") for v in model.trainable_variables]
                if config.ema_decay
                else []
            )
            self.ema_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="ema_step")
        # XLA compiles each replica's forward and backward pass; the iterator, the while loop and the
        # optimizer update stay outside (IteratorGetNext has no XLA kernel, and an XLA cluster may not read
        # the mirrored optimizer variables of another replica's device).
        self._replica_grads = (
            tf.function(self._replica_gradients, jit_compile=True) if jit_compile else self._replica_gradients
        )
        self._train = tf.function(self._train_step)
        self._loop = tf.function(self._train_loop)
        self._loop_concrete = None
        self._eval = tf.function(self._eval_step)  # evaluation is not compiled: a small share of the time

    def _replica_gradients(self, images, labels):
        import tensorflow as tf

        keras = self.keras
        num_classes = self.model.output_shape[-1]
        with tf.GradientTape() as tape:
            probs = tf.cast(self.model(images, training=True), tf.float32)
            onehot = tf.one_hot(labels, num_classes)
            per_example = keras.losses.categorical_crossentropy(
                onehot, probs, label_smoothing=self.config.label_smoothing
            )
            if self.class_weights is not None:
                per_example = per_example * tf.gather(self.class_weights, labels)
            # Per replica: sum over its share / the *global* batch; the gradient all-reduce is a SUM.
            loss = tf.reduce_sum(per_example) / self.global_batch_size
            if self.l2:
                # The same penalty is computed on every replica: divide so the SUM counts it once.
                loss += (
                    self.config.weight_decay
                    * tf.add_n([tf.nn.l2_loss(tf.cast(v, tf.float32)) for v in self.l2])
                    / self.num_replicas
                )
            # mixed_float16: the LossScaleOptimizer scales the loss up and the gradients back down.
            scaled = self.optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, self.model.trainable_variables)
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(probs, -1, output_type=tf.int32), labels), tf.float32))
        return loss, correct, grads

    def _replica_train(self, images, labels):
        loss, correct, grads = self._replica_grads(images, labels)
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
        return loss, correct

    def _train_step(self, dist_batch, learning_rate):
        import tensorflow as tf

        self.optimizer.learning_rate.assign(learning_rate)  # cross-replica context: every replica's copy
        loss, correct = self.strategy.run(self._replica_train, args=dist_batch)
        loss = self.strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None)
        correct = self.strategy.reduce(tf.distribute.ReduceOp.SUM, correct, axis=None)
        if self.ema:
            self.ema_step.assign_add(1)
            step = tf.cast(self.ema_step, tf.float32)
            # Warm-up of the decay as tensorflow/tpu's EfficientNet: short runs need it.
            decay = tf.minimum(self.config.ema_decay, (1.0 + step) / (10.0 + step))
            for e, v in zip(self.ema, self.model.trainable_variables):
                e.assign(decay * e + (1.0 - decay) * tf.cast(v.value, e.dtype))
        return loss, correct

    def _train_loop(self, iterator, learning_rates):
        import tensorflow as tf

        loss_sum = tf.constant(0.0, tf.float32)
        correct_sum = tf.constant(0.0, tf.float32)
        for i in tf.range(tf.shape(learning_rates)[0]):
            loss, correct = self._train_step(next(iterator), learning_rates[i])
            loss_sum += loss
            correct_sum += correct
        return loss_sum, correct_sum

    def train_step(self, dist_batch, learning_rate: float):
        """One step on one distributed global batch; returns (loss, correct) tensors."""
        import tensorflow as tf

        return self._train(dist_batch, tf.constant(learning_rate, tf.float32))

    def train_loop(self, iterator, learning_rates):
        """len(learning_rates) steps on a distributed iterator in one graph call; returns (sum of losses, correct)."""
        import tensorflow as tf

        rates = tf.constant(np.asarray(learning_rates, np.float32))
        if self._loop_concrete is None:
            # One trace for every loop length.
            self._loop_concrete = self._loop.get_concrete_function(iterator, tf.TensorSpec([None], tf.float32))
        return self._loop(iterator, rates)

    def _sync_moving_statistics(self):
        import tensorflow as tf

        variables = [v for v in self.model.non_trainable_variables if v.dtype in ("float32", "float16", "bfloat16")]
        local = self.strategy.run(lambda: [tf.identity(v.value) for v in variables])
        for v, value in zip(variables, local):
            v.value.assign(self.strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None))

    def sync_moving_statistics(self):
        """Average BatchNorm moving statistics over replicas (and workers).

        Keras 3 creates them as MirroredVariables with aggregation NONE and each
        replica updates its own copy from its share of the batch, so without
        --sync_bn the copies drift apart (measured after 2 steps on 2 CPU
        replicas: 0.009 apart for values of 0.05) and evaluation or saving would
        use replica 0's. Called before evaluation and every checkpoint.
        """
        import tensorflow as tf

        if self.num_replicas > 1:
            if not hasattr(self, "_sync"):
                self._sync = tf.function(self._sync_moving_statistics)
            self._sync()

    def _replica_eval(self, images, labels):
        import tensorflow as tf

        probs = tf.cast(self.model(images, training=False), tf.float32)
        num_classes = tf.shape(probs)[-1]
        per_example = -tf.math.log(tf.clip_by_value(tf.gather(probs, labels, batch_dims=1), 1e-7, 1.0))
        top1 = tf.cast(tf.equal(tf.argmax(probs, -1, output_type=tf.int32), labels), tf.float32)
        k = tf.minimum(5, num_classes)
        top5 = tf.cast(tf.reduce_any(tf.equal(tf.math.top_k(probs, k).indices, labels[:, None]), -1), tf.float32)
        count = tf.cast(tf.shape(labels)[0], tf.float32)
        return tf.stack([tf.reduce_sum(per_example), tf.reduce_sum(top1), tf.reduce_sum(top5), count])

    def _eval_step(self, dist_batch):
        import tensorflow as tf

        sums = self.strategy.run(self._replica_eval, args=dist_batch)
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, sums, axis=None)

    def evaluate(self, dist_dataset) -> dict:
        total = np.zeros(4)
        for batch in dist_dataset:
            total += self._eval(batch).numpy()
        loss, top1, top5, count = total
        count = max(count, 1.0)
        return {
            "val_loss": float(loss / count),
            "val_accuracy": float(top1 / count),
            "val_top5": float(top5 / count),
            "val_images": int(total[3]),
        }

    def swap_ema(self):
        """Exchange the model's trainable weights and the EMA ones (call twice to undo)."""
        for e, v in zip(self.ema, self.model.trainable_variables):
            current = v.value.read_value() if hasattr(v.value, "read_value") else v.numpy()
            v.assign(e.read_value())
            e.assign(current)


def resolve_jit(config: TrainConfig, replicas: int = 1) -> bool:
    """XLA or not. "auto": on GPUs only (on 2-core CPUs XLA trained B0 ~10x slower), and not with sync BN on
    several replicas: its cross-replica all-reduce (a merge_call) cannot run inside a compiled function."""
    import tensorflow as tf

    sync_across = config.sync_bn and replicas > 1
    if config.jit_compile == "auto":
        return bool(tf.config.list_physical_devices("GPU")) and not sync_across
    if config.jit_compile == "on" and sync_across:
        raise ConfigError(
            "jit_compile",
            "on",
            f"off or auto with --sync_bn on {replicas} replicas (the cross-replica "
            "BatchNorm all-reduce cannot run inside an XLA-compiled step)",
        )
    return config.jit_compile == "on"


def check_finite(
    value: float, *, epoch: int, first_step: int, last_step: int, global_step: int, model_dir: str, last_checkpoint: int
):
    if not math.isfinite(value):
        kept = (
            f"the last good checkpoint (global step {last_checkpoint}) is kept in {os.path.join(model_dir, ckpt_lib.CHECKPOINTS)}"
            if last_checkpoint
            else "no checkpoint had been written yet"
        )
        steps = f"step {last_step}" if first_step == last_step else f"steps {first_step}-{last_step}"
        raise NonFiniteLossError(
            f"non-finite training loss ({value}) at global step {global_step} (epoch {epoch}, {steps}); "
            f"training stopped; {kept}. Lower --learning_rate or check the data."
        )


class LoopLength:
    """Steps per graph call: fixed, or adapted so that a call takes about LOOP_SECONDS."""

    def __init__(self, fixed: int | None):
        self.fixed = fixed
        self.per_step = None

    def next(self) -> int:
        if self.fixed:
            return self.fixed
        if self.per_step is None:
            return 1
        return int(min(MAX_STEPS_PER_LOOP, max(1, LOOP_SECONDS // self.per_step)))

    def observe(self, steps: int, seconds: float) -> None:
        t = seconds / steps
        self.per_step = t if self.per_step is None else 0.5 * self.per_step + 0.5 * t


def run(config: TrainConfig, *, log=print, model_fn=None) -> dict:
    """Train as `config` says; return the metrics dict that is also written to model_dir/metrics.json.

    `model_fn(config, num_classes, *, image_size)` replaces `model.build_model` for models that
    cannot be built from phi and family (the study's ResNet-50 baseline and grid points). Whatever it
    returns gets the same training contract (`contract.apply_contract`): BN momentum, sync BN, zero head.
    """
    config = config.validated()
    if config.wandb:
        _import_wandb()
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
    from keras_effnet import flavours

    policy = flavours.keras3().config.dtype_policy()
    # One writer per folder: the chief holds --out for the whole run; the other workers of its run share it.
    owner = (
        folder_lock.exclusive(config.out, command="keras-effnet-train", run=strategy_lib.run_key(strategy))
        if chief
        else contextlib.nullcontext()
    )
    try:
        with owner:
            return _run(config, strategy, chief, write_dir, say, model_fn or model_lib.build_model)
    finally:
        flavours.keras3().config.set_dtype_policy(policy)  # the run's mixed precision ends with it
        if not chief:
            shutil.rmtree(write_dir, ignore_errors=True)


def _run(config, strategy, chief, write_dir, say, model_fn):
    import tensorflow as tf

    from keras_effnet import flavours

    keras = flavours.keras3()
    keras.utils.set_random_seed(config.seed)
    splits = prepare_data(config, log=say)
    num_classes = splits.num_classes
    global_batch = config.batch_size
    replicas = strategy.num_replicas_in_sync
    if global_batch % replicas:
        raise ConfigError("batch_size", global_batch, f"a multiple of the {replicas} replicas in sync")
    sharded = isinstance(splits, shards_lib.ShardSplits)
    if config.record_ids and not sharded:
        raise ConfigError("record_ids", config.record_ids, "no value unless --data_dir holds TFRecord shards")
    workers = strategy_lib.num_workers(strategy)
    if sharded:  # each worker reads its own part: the smallest part decides
        full_steps = shards_lib.steps_per_epoch(splits.train_files, global_batch, workers)
    else:
        full_steps = len(splits.train_files) // global_batch
    if full_steps < 1:
        raise ConfigError("batch_size", global_batch, f"at most the {len(splits.train_files)} training images")
    plan = finetune.plan(config)
    source = finetune.load_source(config) if config.init_from else None
    if source is not None:  # refused before anything is written: a source of another family or variant
        probe = model_fn(
            config.replace(dropout_rate=0.0, drop_connect_rate=0.0), num_classes, image_size=config.image_size
        )
        finetune.check_fits(probe, source, config)
    if sharded and config.class_weight != "none":
        raise ConfigError(
            "class_weight",
            config.class_weight,
            "'none' with TFRecord shards (balanced weights count a folder's labels)",
        )
    weights = None if sharded else imbalance.class_weights(config.class_weight, splits.train_labels, num_classes)
    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    if not (multi_worker and not chief and config.overwrite):
        run_id = ckpt_lib.check_model_dir(config, chief=chief, log=say)
    else:
        run_id = 0
    # Inputs checked: from here on, files are written.
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
    steps_per_epoch = min(full_steps, config.steps_per_epoch or full_steps)
    warmup_steps = int(round(config.warmup_epochs * steps_per_epoch))
    base_lr = schedule.scaled_learning_rate(config.learning_rate, global_batch)
    sizes = (
        schedule.progressive_sizes(config.image_size, config.epochs)
        if config.progressive_resize
        else [config.image_size] * config.epochs
    )
    policy = precision.set_precision(config)
    jit = resolve_jit(config, replicas)
    # Adaptive regularisation (training/regularization.py): one setting per image size; the model is built with
    # the last stage's (largest) dropout rates and earlier stages lower them.
    stage_reg = {s: regularization.for_config(config, s, len(splits.train_files)) for s in sorted(set(sizes))}
    model_config = config.replace(
        dropout_rate=stage_reg[sizes[-1]].dropout_rate, drop_connect_rate=stage_reg[sizes[-1]].drop_connect_rate
    )

    with strategy.scope():
        model = model_fn(model_config, num_classes, image_size=None if config.progressive_resize else config.image_size)
        applied = contract.apply_contract(model, config, pretrained=plan is not None)
        copied = finetune.copy_weights(model, source) if source is not None else []
        if copied:
            say(f"init_from {config.init_from}: copied weights of {len(copied)} layers")
        trainable = {}
        if plan is not None:  # the optimizer's slots cover every weight that will train
            trainable[finetune.BACKBONE] = finetune.set_stage(model, finetune.BACKBONE, plan)
        optimizer = optimizer_lib.make_optimizer(config, model, base_lr)
        optimizer.build(model.trainable_variables)
        trainer = Trainer(
            config, strategy, model, optimizer, global_batch_size=global_batch, jit_compile=jit, class_weights=weights
        )
        trainers = {finetune.BACKBONE: trainer}
        if plan is not None:
            trainable[finetune.HEAD] = finetune.set_stage(model, finetune.HEAD, plan)
            trainers[finetune.HEAD] = Trainer(
                config,
                strategy,
                model,
                optimizer,
                global_batch_size=global_batch,
                jit_compile=jit,
                class_weights=weights,
            )
        checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, ema=trainer.ema, ema_step=trainer.ema_step)
    saver = ckpt_lib.RunCheckpoint(checkpoint, read_dir=config.out, write_dir=write_dir)
    progress = saver.restore() or ckpt_lib.Progress()
    if progress.global_step:
        where = f"after epoch {progress.epoch}" + (
            f", step {progress.step} of epoch {progress.epoch + 1}" if progress.step else ""
        )
        say(f"resumed from {saver.read_dir} at global step {progress.global_step} ({where})")
    history = [e for e in progress.history if e["epoch"] <= progress.epoch]
    info = {
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
        "global_batch_size": global_batch,
        "per_replica_batch_size": global_batch // replicas,
        "steps_per_epoch": steps_per_epoch,
        "base_learning_rate": base_lr,
        "optimizer": type(optimizer).__name__,
        "contract": applied,
        "regularization": {str(s): r.as_dict() for s, r in stage_reg.items()},
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
            "learning_rate": {s: plan.learning_rate(s, base_lr) for s in (finetune.HEAD, finetune.BACKBONE)},
            "trainable_parameters": trainable,
        },
    }
    if chief:
        atomic_write(os.path.join(write_dir, ckpt_lib.LABELS), "\n".join(splits.class_names) + "\n")
        ckpt_lib.write_json(os.path.join(write_dir, ckpt_lib.METRICS), {**info, "epochs": history})
    say(
        f"{info['strategy']} with {replicas} replica(s); global batch {global_batch} = {global_batch // replicas} per replica; "
        f"{len(splits.train_files)} train / {len(splits.val_files)} val images, {num_classes} classes; "
        f"{steps_per_epoch} steps/epoch; lr {base_lr:.4g}; {policy}; jit_compile={jit}"
    )
    if multi_worker:
        say(cluster_lib.describe(strategy.cluster_resolver))
    if sharded:
        for name, part in (("train", splits.train_files), ("val", splits.val_files)):
            say(f"{name}: {shards_lib.split_plan(part, workers).describe(len(part.paths))}")

    writers = None
    if chief and config.tensorboard:
        logs = os.path.join(write_dir, ckpt_lib.LOGS)
        writers = (
            tf.summary.create_file_writer(os.path.join(logs, "train")),
            tf.summary.create_file_writer(os.path.join(logs, "val")),
        )
    wandb_run = _start_wandb(config, info) if chief and config.wandb else None

    val_cache = {}

    def val_dataset(size):
        if size not in val_cache and sharded:
            val_cache[size] = shards_lib.distribute(
                strategy,
                splits.val_files,
                global_batch=global_batch,
                image_size=size,
                training=False,
                label_offset=splits.label_offset,
            )
        if size not in val_cache:
            ds = data_lib.make_dataset(
                splits.val_files,
                splits.val_labels,
                image_size=size,
                batch_size=global_batch,
                training=False,
                augment="none",
                cache=config.cache,
                drop_remainder=False,
            )
            val_cache[size] = strategy.experimental_distribute_dataset(ds)
        return val_cache[size]

    def save(progress, metrics=None):
        with ckpt_lib.deferred_interrupt():
            trainer.sync_moving_statistics()
            saver.save(progress)
            if metrics is not None and chief:
                ckpt_lib.write_json(os.path.join(write_dir, ckpt_lib.METRICS), metrics)

    loop_length = LoopLength(config.steps_per_loop)
    global_step = progress.global_step
    last_checkpoint = global_step
    lr = base_lr
    stage = None
    for epoch in range(progress.epoch + 1, config.epochs + 1):
        size = sizes[epoch - 1]
        if plan is not None and plan.stage(epoch) != stage:
            stage = plan.stage(epoch)
            finetune.set_stage(model, stage, plan)
            trainer = trainers[stage]
        stage_start, stage_steps = finetune.stage_steps(plan, epoch, config.epochs, steps_per_epoch)
        stage_lr = base_lr if plan is None else plan.learning_rate(stage, base_lr)
        done = progress.step if epoch == progress.epoch + 1 else 0
        partial = progress.partial if done else {}
        # One pipeline per epoch: its order depends on (seed, epoch) only, so a resumed epoch skips
        # the steps already done and continues the same order.
        reg = stage_reg[size]
        if config.progressive_resize:
            regularization.apply_rates(
                model,
                dropout_rate=reg.dropout_rate,
                drop_connect_rate=reg.drop_connect_rate,
                built_drop_connect_rate=model_config.drop_connect_rate,
            )
        if sharded:
            iterator = iter(
                shards_lib.distribute(
                    strategy,
                    splits.train_files,
                    global_batch=global_batch,
                    skip_steps=done,
                    record_ids=config.record_ids,
                    image_size=size,
                    training=True,
                    label_offset=splits.label_offset,
                    augment=config.augment,
                    seed=config.seed,
                    repeat=True,
                    start_epoch=epoch - 1,
                    crop_area=(reg.crop_scale_min, 1.0),
                    randaugment_magnitude=reg.randaugment_magnitude,
                )
            )
        else:
            ds = data_lib.make_dataset(
                splits.train_files,
                splits.train_labels,
                image_size=size,
                batch_size=global_batch,
                training=True,
                augment=config.augment,
                seed=config.seed,
                cache=config.cache,
                drop_remainder=True,
                repeat=True,
                start_epoch=epoch - 1,
                crop_area=(reg.crop_scale_min, 1.0),
                randaugment_magnitude=reg.randaugment_magnitude,
            )
            if done:
                ds = ds.skip(done)
            iterator = iter(strategy.experimental_distribute_dataset(ds))
        bar = keras.utils.Progbar(
            steps_per_epoch, stateful_metrics=["loss", "accuracy", "lr"], verbose=config.verbose if chief else 0
        )
        loss_sum = partial.get("loss_sum", 0.0)
        correct_sum = partial.get("correct_sum", 0.0)
        earlier_seconds = partial.get("seconds", 0.0)
        start = time.perf_counter()
        steady_from = steady_steps = None
        step = done
        while step < steps_per_epoch:
            n = min(loop_length.next(), steps_per_epoch - step)
            if config.checkpoint_every_steps:
                n = min(n, config.checkpoint_every_steps - (global_step % config.checkpoint_every_steps))
            rates = [
                schedule.learning_rate(
                    global_step + i - stage_start,
                    base=stage_lr,
                    total_steps=stage_steps,
                    warmup_steps=min(warmup_steps, stage_steps),
                    kind=config.schedule,
                    steps_per_epoch=steps_per_epoch,
                )
                for i in range(n)
            ]
            lr = rates[-1]
            t0 = time.perf_counter()
            loop_loss, loop_correct = trainer.train_loop(iterator, rates)
            loop_loss = float(loop_loss)  # the one host read per loop
            t1 = time.perf_counter()
            check_finite(
                loop_loss,
                epoch=epoch,
                first_step=step + 1,
                last_step=step + n,
                global_step=global_step + n,
                model_dir=config.out,
                last_checkpoint=last_checkpoint,
            )
            if steady_from is None:
                steady_from, steady_steps = t1, 0  # the first call may include tracing and pipeline warm-up
            else:
                steady_steps += n
                loop_length.observe(n, t1 - t0)
            step += n
            global_step += n
            loss_sum += loop_loss
            correct_sum += float(loop_correct)
            bar.update(step, [("loss", loss_sum / step), ("accuracy", correct_sum / (step * global_batch)), ("lr", lr)])
            if (
                config.checkpoint_every_steps
                and global_step % config.checkpoint_every_steps == 0
                and step < steps_per_epoch
            ):
                save(
                    ckpt_lib.Progress(
                        epoch=epoch - 1,
                        step=step,
                        global_step=global_step,
                        history=history,
                        partial={
                            "loss_sum": loss_sum,
                            "correct_sum": correct_sum,
                            "seconds": earlier_seconds + time.perf_counter() - start,
                        },
                    )
                )
                last_checkpoint = global_step
        end = time.perf_counter()
        seconds = earlier_seconds + end - start
        if steady_steps:
            steady = steady_steps * global_batch / (end - steady_from)
        else:
            steady = (steps_per_epoch - done) * global_batch / max(end - start, 1e-9)
        trainer.sync_moving_statistics()
        if trainer.ema:
            trainer.swap_ema()
        val = trainer.evaluate(val_dataset(size))
        if trainer.ema:
            trainer.swap_ema()
        record = {
            "epoch": epoch,
            "loss": loss_sum / steps_per_epoch,
            "accuracy": correct_sum / (steps_per_epoch * global_batch),
            "val_loss": val["val_loss"],
            "val_accuracy": val["val_accuracy"],
            "val_top5": val["val_top5"],
            "images_per_sec": steady,
            "seconds": seconds,
            "image_size": size,
            "learning_rate": lr,
            "steps": steps_per_epoch,
        }
        if plan is not None:
            record["stage"] = stage
        history.append(record)
        say(
            f"epoch {epoch}/{config.epochs}: loss {record['loss']:.4f} acc {record['accuracy']:.4f} "
            f"val_loss {record['val_loss']:.4f} val_acc {record['val_accuracy']:.4f} val_top5 {record['val_top5']:.4f} "
            f"| {record['images_per_sec']:.1f} images/s ({seconds:.1f} s, {size}px)"
        )
        # The checkpoint first: whatever metrics.json says is done is in a checkpoint.
        save(
            ckpt_lib.Progress(epoch=epoch, step=0, global_step=global_step, history=history),
            {**info, "epochs": history},
        )
        last_checkpoint = global_step
        if writers:
            for writer, values in zip(
                writers,
                (
                    {
                        "loss": record["loss"],
                        "accuracy": record["accuracy"],
                        "images_per_sec": record["images_per_sec"],
                        "learning_rate": lr,
                    },
                    {"loss": record["val_loss"], "accuracy": record["val_accuracy"], "top5": record["val_top5"]},
                ),
            ):
                with writer.as_default(step=epoch):
                    for k, v in values.items():
                        tf.summary.scalar(k, v)
                writer.flush()
        if wandb_run is not None:
            wandb_run.log(record, step=epoch)

    if trainer.ema:
        trainer.swap_ema()  # the saved model holds the EMA weights
    if plan is not None:
        model.trainable = True  # every layer's weights, in the order export_model copies them
    final = model_lib.export_model(
        model, model_config, num_classes, config.image_size, model_fn=model_fn, pretrained=plan is not None
    )
    result = {**info, "epochs": history, "final": history[-1] if history else {}}
    if chief and not sharded:  # shards: keras-effnet-evaluate reads their validation split
        result["evaluation"] = evaluate_split(final, splits, config.image_size, global_batch)
    with ckpt_lib.deferred_interrupt():
        ckpt_lib.save_model(final, os.path.join(write_dir, ckpt_lib.MODEL))
        if chief:
            if "evaluation" in result:
                confusion.write(write_dir, result["evaluation"])
            ckpt_lib.write_json(os.path.join(write_dir, ckpt_lib.METRICS), result)
    if wandb_run is not None:
        wandb_run.finish()
    return result


def evaluate_split(model, splits, image_size: int, batch_size: int) -> dict:
    """The confusion matrix, per-class precision, recall and F1 and the most confused pairs of `model` on the val split."""
    ds = data_lib.make_dataset(
        splits.val_files,
        splits.val_labels,
        image_size=image_size,
        batch_size=batch_size,
        training=False,
        augment="none",
        drop_remainder=False,
    )
    predictions = np.concatenate([np.argmax(model(x, training=False).numpy(), -1) for x, _ in ds])
    return confusion.summary(np.asarray(splits.val_labels), predictions, splits.class_names)


def _import_wandb():
    try:
        import wandb
    except ImportError:
        raise ConfigError(
            "--wandb needs the optional wandb extra, which is not installed: pip install '.[wandb]'"
        ) from None
    return wandb


def _start_wandb(config: TrainConfig, info: dict):
    """Weights & Biases (optional extra), offline unless WANDB_MODE says otherwise."""
    wandb = _import_wandb()
    mode = os.environ.get("WANDB_MODE", "offline")
    return wandb.init(project=config.wandb_project, dir=config.out, mode=mode, config=info)
