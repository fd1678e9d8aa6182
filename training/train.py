"""`python -m training.train`: the tf.distribute trainer (issue 3).

A custom loop, kept as a flat list of small functions (flax/big_vision
style): `prepare_data`, `build_model`, `make_optimizer`, `Trainer`
(distributed train and eval steps), `run`. Model, optimizer, EMA and metrics
are created inside `strategy.scope()`.

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

Resumption: after each epoch, `metrics.json` is written (atomically) and then
a checkpoint (model, optimizer, EMA, epoch). A rerun restores the latest
checkpoint and keeps the metrics of the epochs it holds, so a kill at any
moment, SIGKILL included, ends with every epoch recorded exactly once.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
import tempfile
import time

import numpy as np

from training import data as data_lib
from training import datasets, schedule, strategy as strategy_lib, synthetic
from training.config import TrainConfig
from training.files import atomic_write as atomic_write_text

METRICS = "metrics.json"
LABELS = "labels.txt"
MODEL = "model.keras"
CHECKPOINTS = "checkpoints"


class NonFiniteLossError(RuntimeError):
    """Raised when the training loss is NaN or infinite; the last good checkpoint is kept."""


# ----------------------------------------------------------------------------- files


def atomic_save_model(model, path: str) -> None:
    """`model.save` to a temporary .keras file beside `path`, then rename."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".keras", dir=directory)
    os.close(fd)
    try:
        model.save(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def read_metrics(model_dir: str) -> dict:
    path = os.path.join(model_dir, METRICS)
    if not os.path.exists(path):
        return {"epochs": []}
    with open(path) as f:
        return json.load(f)


# ----------------------------------------------------------------------------- data


def prepare_data(config: TrainConfig, *, log=print) -> data_lib.Splits:
    """Generate, download or scan the dataset of `config`; report skipped files."""
    if config.dataset == "synthetic":
        root = config.data_dir or os.path.join(config.model_dir, "synthetic_data")
        per_class = config.synthetic_per_class
        data_dir = synthetic.generate(root, train_per_class=per_class, val_per_class=max(1, per_class * 3 // 10),
                                      image_size=max(64, config.image_size or 64), seed=0)
    elif config.dataset in ("imagenette", "imagewoof"):
        data_dir = datasets.download_fastai(config.dataset, config.fastai_size, config.data_dir)
    else:
        data_dir = config.data_dir
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


# ----------------------------------------------------------------------------- model


def set_precision(config: TrainConfig) -> str:
    """Set the Keras dtype policy; "auto" is bf16 on GPUs of compute capability >= 8, else float32."""
    import tensorflow as tf

    from keras_effnet import flavours

    keras = flavours.keras3()
    mode = config.mixed_precision
    if mode == "auto":
        mode = "off"
        for gpu in tf.config.list_physical_devices("GPU"):
            cc = tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0))
            if cc and cc[0] >= 8:
                mode = "bf16"
    policy = {"off": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}[mode]
    keras.config.set_dtype_policy(policy)
    return policy


def build_model(config: TrainConfig, num_classes: int, *, image_size=None):
    """keras_effnet.build with the run's head and regularisation, BN momentum set to `config.bn_momentum`.

    `zero_init_head` starts the classifier at zero (uniform predictions), as
    big_vision does: the paper's dense initialiser, VarianceScaling(1/3,
    fan_out), scales with 1/classes, so with 10 classes B0 starts with
    confident random predictions (mean max-probability 0.66, cross-entropy
    ~7 instead of ln 10 = 2.3, measured at 32 px) and a short run spends its
    first hundreds of steps unlearning them.

    `build()` keeps the paper's BN momentum 0.99; short runs on small data need
    0.9 (REFERENCE section 5: 0.99 stayed at chance for 12 epochs), so it is
    set on the built layers: they stay stock BatchNormalization layers and the
    saved model a plain keras_effnet model.
    """
    import keras_effnet
    from keras_effnet import flavours

    keras = flavours.keras3()
    shape = (None, None, 3) if image_size is None else (image_size, image_size, 3)
    model = keras_effnet.build(
        config.phi, family=config.family, classes=num_classes, input_shape=shape,
        dropout_rate=config.dropout_rate, drop_connect_rate=config.drop_connect_rate,
    )
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = config.bn_momentum
            layer.synchronized = bool(config.sync_bn)
    if config.zero_init_head and "predictions" in {layer.name for layer in model.layers}:
        head = model.get_layer("predictions")
        head.set_weights([np.zeros(tuple(w.shape), "float32") for w in head.weights])
    return model


def init_weights_from(model, source: str, *, phi=0, family="efficientnet", log=print) -> int:
    """Copy weights by layer name from `source` ("imagenet", a .keras model, a weights file) where shapes match.

    The classifier of a source trained on other classes does not fit and is
    left as initialised (fine-tuning). Returns the number of layers copied.
    """
    import keras_effnet
    from keras_effnet import flavours

    keras = flavours.keras3()
    if source == "imagenet":
        src = keras_effnet.build(phi, family=family, include_top=False, weights="imagenet", input_shape=(None, None, 3))
    elif source.endswith(".keras"):
        src = keras.saving.load_model(source, compile=False, safe_mode=True)
    else:
        src = keras_effnet.build(phi, family=family, include_top=False, input_shape=(None, None, 3))
        src.load_weights(source, skip_mismatch=True)
    by_name = {layer.name: layer for layer in src.layers}
    copied = 0
    for layer in model.layers:
        other = by_name.get(layer.name)
        if other is None or not layer.weights:
            continue
        theirs = other.get_weights()
        if len(theirs) == len(layer.weights) and all(tuple(w.shape) == t.shape for w, t in zip(layer.weights, theirs)):
            layer.set_weights(theirs)
            if hasattr(layer, "finalize_state") and isinstance(layer, keras.layers.Normalization):
                layer.finalize_state()
            copied += 1
    if copied == 0:
        raise ValueError(f"init_from: no layer of {source!r} matches the model by name and shape.")
    log(f"init_from {source}: copied weights of {copied} layers")
    return copied


def export_model(trained, config: TrainConfig, num_classes: int, image_size: int, *, model_fn=None):
    """A fresh float32 model at a fixed `image_size`, holding `trained`'s weights.

    What gets saved: no distribution strategy, no mixed-precision policy, no
    sync-BN flag and a fixed input size even after progressive resizing, so it
    loads with `safe_mode=True` and converts to TFLite as built.
    """
    from keras_effnet import flavours

    keras = flavours.keras3()
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        model = (model_fn or build_model)(config.replace(sync_bn=False), num_classes, image_size=image_size)
    finally:
        keras.config.set_dtype_policy(previous)
    model.set_weights([w.numpy() if hasattr(w, "numpy") else w for w in (v.value for v in trained.weights)])
    for layer in model.layers:
        if isinstance(layer, keras.layers.Normalization):
            layer.finalize_state()
    return model


def make_optimizer(config: TrainConfig, model, learning_rate: float):
    """AdamW (decoupled decay, not on BN/biases), RMSProp with the paper's settings, or SGD with Nesterov momentum."""
    from keras_effnet import flavours

    keras = flavours.keras3()
    if config.optimizer == "adamw":
        opt = keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=config.weight_decay)
        opt.exclude_from_weight_decay(var_list=[v for v in model.trainable_variables if len(v.shape) <= 1])
    elif config.optimizer == "rmsprop":
        # Tan & Le 2019, section 5.2: decay 0.9, momentum 0.9, epsilon 1e-3.
        opt = keras.optimizers.RMSprop(learning_rate=learning_rate, rho=0.9, momentum=0.9, epsilon=1e-3)
    else:
        opt = keras.optimizers.SGD(learning_rate=learning_rate, momentum=0.9, nesterov=True)
    if keras.config.dtype_policy().name == "mixed_float16":
        opt = keras.optimizers.LossScaleOptimizer(opt)
    return opt


def l2_variables(model):
    """Kernels that take L2 weight decay: everything but BatchNorm parameters and biases (paper: not on BN)."""
    return [v for v in model.trainable_variables if len(v.shape) > 1]


# ----------------------------------------------------------------------------- loop


class Trainer:
    """The distributed train and eval steps of one model; everything created in `strategy.scope()`."""

    def __init__(self, config: TrainConfig, strategy, model, optimizer, *, global_batch_size: int, jit_compile: bool):
        import tensorflow as tf

        from keras_effnet import flavours

        self.keras = flavours.keras3()
        self.config = config
        self.strategy = strategy
        self.model = model
        self.optimizer = optimizer
        self.global_batch_size = global_batch_size
        self.num_replicas = strategy.num_replicas_in_sync
        self.l2 = l2_variables(model) if config.optimizer != "adamw" and config.weight_decay else []
        with strategy.scope():
            self.ema = [tf.Variable(v.value, trainable=False, name="ema") for v in model.trainable_variables] if config.ema_decay else []
            self.ema_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="ema_step")
        self._train = tf.function(self._train_step, jit_compile=jit_compile)
        # The loop's step takes the iterator itself: get_next runs inside the graph, as in Keras `fit`.
        self._train_from = tf.function(lambda iterator, lr: self._train_step(next(iterator), lr), jit_compile=jit_compile)
        self._eval = tf.function(self._eval_step, jit_compile=jit_compile)

    def _replica_train(self, images, labels):
        import tensorflow as tf

        keras = self.keras
        num_classes = self.model.output_shape[-1]
        with tf.GradientTape() as tape:
            probs = tf.cast(self.model(images, training=True), tf.float32)
            onehot = tf.one_hot(labels, num_classes)
            per_example = keras.losses.categorical_crossentropy(onehot, probs, label_smoothing=self.config.label_smoothing)
            # Per replica: sum over its share / the *global* batch; the gradient all-reduce is a SUM.
            loss = tf.reduce_sum(per_example) / self.global_batch_size
            if self.l2:
                # The same penalty is computed on every replica: divide so the SUM counts it once.
                loss += self.config.weight_decay * tf.add_n([tf.nn.l2_loss(tf.cast(v, tf.float32)) for v in self.l2]) / self.num_replicas
            scaled = self.optimizer.scale_loss(loss) if hasattr(self.optimizer, "scale_loss") else loss
        variables = self.model.trainable_variables
        grads = tape.gradient(scaled, variables)
        self.optimizer.apply_gradients(zip(grads, variables))
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(probs, -1, output_type=tf.int32), labels), tf.float32))
        return loss, correct

    def _train_step(self, dist_batch, learning_rate):
        import tensorflow as tf

        self.optimizer.learning_rate.assign(learning_rate)
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

    def train_step(self, dist_batch, learning_rate: float):
        import tensorflow as tf

        return self._train(dist_batch, tf.constant(learning_rate, tf.float32))

    def train_step_from(self, iterator, learning_rate: float):
        """`train_step` on the next global batch of a distributed iterator, fetched inside the graph."""
        import tensorflow as tf

        return self._train_from(iterator, tf.constant(learning_rate, tf.float32))

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
        use replica 0's. Called after every epoch, before evaluation and the
        checkpoint.
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
        import numpy as np

        total = np.zeros(4)
        for batch in dist_dataset:
            total += self._eval(batch).numpy()
        loss, top1, top5, count = total
        count = max(count, 1.0)
        return {"val_loss": float(loss / count), "val_accuracy": float(top1 / count), "val_top5": float(top5 / count),
                "val_images": int(total[3])}

    def swap_ema(self):
        """Exchange the model's trainable weights and the EMA ones (call twice to undo)."""
        for e, v in zip(self.ema, self.model.trainable_variables):
            current = v.value.read_value() if hasattr(v.value, "read_value") else v.numpy()
            v.assign(e.read_value())
            e.assign(current)


def _jit(config: TrainConfig) -> bool:
    import tensorflow as tf

    if config.jit_compile == "auto":
        # On these CPUs XLA trained B0 ~10x slower (REFERENCE section 4): a GPU-only choice.
        return bool(tf.config.list_physical_devices("GPU"))
    return config.jit_compile == "on"


def _check_finite(value: float, *, epoch: int, step: int, global_step: int, model_dir: str, last_epoch: int):
    if not math.isfinite(value):
        kept = f"the last good checkpoint (epoch {last_epoch}) is kept in {os.path.join(model_dir, CHECKPOINTS)}" if last_epoch else "no epoch had completed, so there is no checkpoint"
        raise NonFiniteLossError(
            f"non-finite training loss ({value}) at global step {global_step} (epoch {epoch}, step {step}); "
            f"training stopped; {kept}. Lower --learning_rate or check the data."
        )


def run(config: TrainConfig, *, log=print, model_fn=None) -> dict:
    """Train as `config` says; return the metrics dict that is also written to model_dir/metrics.json.

    `model_fn(config, num_classes, *, image_size)` replaces `build_model` (same contract: head,
    dropout, BN momentum and sync-BN from `config`), so models `build_model` cannot make from phi
    and family (the study's ResNet-50 baseline and grid points) go through the same loop.
    """
    import numpy as np
    import tensorflow as tf

    from keras_effnet import flavours

    keras = flavours.keras3()
    config = config.validated()
    if config.wandb:
        _import_wandb()
    strategy = strategy_lib.get_strategy(config.strategy, num_gpus=config.num_gpus, cpu_replicas=config.cpu_replicas)
    chief = strategy_lib.is_chief(strategy)
    say = log if chief else (lambda *a, **k: None)
    # Every worker saves (variables may need collective reads); only the chief writes model_dir.
    write_dir = config.model_dir if chief else tempfile.mkdtemp(prefix="worker-")
    os.makedirs(write_dir, exist_ok=True)
    try:
        return _run(config, strategy, chief, write_dir, say, keras, tf, np, model_fn or build_model)
    finally:
        if not chief:
            shutil.rmtree(write_dir, ignore_errors=True)


def _run(config, strategy, chief, write_dir, say, keras, tf, np, model_fn):
    keras.utils.set_random_seed(config.seed)
    splits = prepare_data(config, log=say)
    num_classes = splits.num_classes
    global_batch = config.batch_size
    replicas = strategy.num_replicas_in_sync
    if global_batch % replicas:
        raise ValueError(f"batch_size {global_batch} (global) must be a multiple of the {replicas} replicas in sync.")
    full_steps = len(splits.train_files) // global_batch
    if full_steps < 1:
        raise ValueError(f"batch_size {global_batch} is larger than the {len(splits.train_files)} training images.")
    steps_per_epoch = min(full_steps, config.steps_per_epoch or full_steps)
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = int(round(config.warmup_epochs * steps_per_epoch))
    base_lr = schedule.scaled_learning_rate(config.learning_rate, global_batch)
    sizes = (schedule.progressive_sizes(config.image_size, config.epochs) if config.progressive_resize
             else [config.image_size] * config.epochs)
    policy = set_precision(config)
    jit = _jit(config)

    with strategy.scope():
        model = model_fn(config, num_classes, image_size=None if config.progressive_resize else config.image_size)
        if config.init_from:
            init_weights_from(model, config.init_from, phi=config.phi, family=config.family, log=say)
        optimizer = make_optimizer(config, model, base_lr)
        optimizer.build(model.trainable_variables)
        trainer = Trainer(config, strategy, model, optimizer, global_batch_size=global_batch, jit_compile=jit)
        epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, ema=trainer.ema, ema_step=trainer.ema_step, epoch=epoch_var)
    manager = tf.train.CheckpointManager(checkpoint, os.path.join(write_dir, CHECKPOINTS), max_to_keep=2)
    latest = tf.train.latest_checkpoint(os.path.join(config.model_dir, CHECKPOINTS))
    start_epoch = 0
    if latest:
        checkpoint.restore(latest).assert_existing_objects_matched()
        start_epoch = int(epoch_var.numpy())
        say(f"resumed from {latest} after epoch {start_epoch}")
    history = [e for e in read_metrics(config.model_dir)["epochs"] if e["epoch"] <= start_epoch]
    info = {
        "config": dataclasses.asdict(config), "class_names": list(splits.class_names),
        "num_train": len(splits.train_files), "num_val": len(splits.val_files),
        "skipped": [str(s) for s in splits.skipped], "num_replicas": replicas, "strategy": strategy_lib.strategy_name(strategy),
        "devices": list(getattr(strategy.extended, "worker_devices", ())), "dtype_policy": policy, "jit_compile": jit,
        "global_batch_size": global_batch, "per_replica_batch_size": global_batch // replicas,
        "steps_per_epoch": steps_per_epoch, "base_learning_rate": base_lr,
    }
    if chief:
        atomic_write_text(os.path.join(write_dir, LABELS), "\n".join(splits.class_names) + "\n")
    say(f"{info['strategy']} with {replicas} replica(s); global batch {global_batch} = {global_batch // replicas} per replica; "
        f"{len(splits.train_files)} train / {len(splits.val_files)} val images, {num_classes} classes; "
        f"{steps_per_epoch} steps/epoch; lr {base_lr:.4g}; {policy}; jit_compile={jit}")

    writers = None
    if chief and config.tensorboard:
        logs = os.path.join(write_dir, "logs")
        writers = (tf.summary.create_file_writer(os.path.join(logs, "train")),
                   tf.summary.create_file_writer(os.path.join(logs, "val")))
    wandb_run = _start_wandb(config, info) if chief and config.wandb else None

    val_cache = {}

    def val_dataset(size):
        if size not in val_cache:
            ds = data_lib.make_dataset(splits.val_files, splits.val_labels, image_size=size, batch_size=global_batch,
                                       training=False, augment="none", cache=config.cache, drop_remainder=False)
            val_cache[size] = strategy.experimental_distribute_dataset(ds)
        return val_cache[size]

    iterator, iterator_size = None, None
    global_step = start_epoch * steps_per_epoch
    for epoch in range(start_epoch + 1, config.epochs + 1):
        size = sizes[epoch - 1]
        if iterator is None or size != iterator_size:
            ds = data_lib.make_dataset(
                splits.train_files, splits.train_labels, image_size=size, batch_size=global_batch, training=True,
                augment=config.augment, seed=config.seed, cache=config.cache, drop_remainder=True, repeat=True,
                start_epoch=epoch - 1,
            )
            iterator, iterator_size = iter(strategy.experimental_distribute_dataset(ds)), size
        bar = keras.utils.Progbar(steps_per_epoch, stateful_metrics=["loss", "accuracy", "lr"], verbose=config.verbose if chief else 0)
        loss_sum = correct_sum = 0.0
        start = time.perf_counter()
        first_step_end = None
        for step in range(1, steps_per_epoch + 1):
            lr = schedule.learning_rate(global_step, base=base_lr, total_steps=total_steps, warmup_steps=warmup_steps,
                                        kind=config.schedule, steps_per_epoch=steps_per_epoch)
            loss, correct = trainer.train_step_from(iterator, lr)
            loss = float(loss)
            global_step += 1
            _check_finite(loss, epoch=epoch, step=step, global_step=global_step, model_dir=config.model_dir,
                          last_epoch=epoch - 1)
            if step == 1:
                first_step_end = time.perf_counter()
            loss_sum += loss
            correct_sum += float(correct)
            bar.update(step, [("loss", loss_sum / step), ("accuracy", correct_sum / (step * global_batch)), ("lr", lr)])
        end = time.perf_counter()
        seconds = end - start
        # Steady state: the first step of an epoch may include tracing and pipeline warm-up.
        steady = (steps_per_epoch - 1) * global_batch / (end - first_step_end) if steps_per_epoch > 1 else global_batch / seconds
        trainer.sync_moving_statistics()
        if trainer.ema:
            trainer.swap_ema()
        val = trainer.evaluate(val_dataset(size))
        if trainer.ema:
            trainer.swap_ema()
        record = {
            "epoch": epoch, "loss": loss_sum / steps_per_epoch, "accuracy": correct_sum / (steps_per_epoch * global_batch),
            "val_loss": val["val_loss"], "val_accuracy": val["val_accuracy"], "val_top5": val["val_top5"],
            "images_per_sec": steady, "seconds": seconds,
            "image_size": size, "learning_rate": lr, "steps": steps_per_epoch,
        }
        history.append(record)
        say(f"epoch {epoch}/{config.epochs}: loss {record['loss']:.4f} acc {record['accuracy']:.4f} "
            f"val_loss {record['val_loss']:.4f} val_acc {record['val_accuracy']:.4f} val_top5 {record['val_top5']:.4f} "
            f"| {record['images_per_sec']:.1f} images/s ({seconds:.1f} s, {size}px)")
        if chief:
            atomic_write_text(os.path.join(write_dir, METRICS), json.dumps({**info, "epochs": history}, indent=1) + "\n")
        epoch_var.assign(epoch)
        manager.save(checkpoint_number=epoch)
        if writers:
            for writer, values in zip(writers, ({"loss": record["loss"], "accuracy": record["accuracy"],
                                                  "images_per_sec": record["images_per_sec"], "learning_rate": lr},
                                                 {"loss": record["val_loss"], "accuracy": record["val_accuracy"],
                                                  "top5": record["val_top5"]})):
                with writer.as_default(step=epoch):
                    for k, v in values.items():
                        tf.summary.scalar(k, v)
                writer.flush()
        if wandb_run is not None:
            wandb_run.log(record, step=epoch)

    if trainer.ema:
        trainer.swap_ema()  # the saved model holds the EMA weights
    final = export_model(model, config, num_classes, config.image_size, model_fn=model_fn)
    atomic_save_model(final, os.path.join(write_dir, MODEL))
    result = {**info, "epochs": history, "final": history[-1] if history else {}}
    if chief:
        atomic_write_text(os.path.join(write_dir, METRICS), json.dumps(result, indent=1) + "\n")
    if wandb_run is not None:
        wandb_run.finish()
    return result


def _import_wandb():
    try:
        import wandb
    except ImportError:
        raise ValueError("--wandb needs the optional wandb extra, which is not installed: pip install '.[wandb]'") from None
    return wandb


def _start_wandb(config: TrainConfig, info: dict):
    """Weights & Biases (optional extra), offline unless WANDB_MODE says otherwise."""
    wandb = _import_wandb()
    mode = os.environ.get("WANDB_MODE", "offline")
    return wandb.init(project=config.wandb_project, dir=config.model_dir, mode=mode, config=info)


def main(argv):
    from training import flags as flags_lib

    from absl import logging

    del argv
    logging.set_verbosity(logging.WARNING)
    config = flags_lib.config_from_flags()
    try:
        result = run(config)
    except NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    final = result["final"]
    if final:
        print(f"done: val_accuracy {final['val_accuracy']:.4f} after {final['epoch']} epoch(s); model in "
              f"{os.path.join(config.model_dir, MODEL)}")
    return 0


if __name__ == "__main__":
    from absl import app

    from training import flags as flags_lib

    flags_lib.define_train_flags()
    app.run(lambda argv: sys.exit(main(argv)))
