"""The distributed train and eval steps of one model (`Trainer`), and how they are run.

Everything a `Trainer` holds is created in `strategy.scope()`. Distribution
arithmetic, where it happens:
  * the dataset yields *global* batches of `batch_size`, split into
    `batch_size / num_replicas` per replica (training.pipelines);
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
With `steps_per_loop=None` the loop length adapts (`LoopLength`) so a call
takes about `LOOP_SECONDS`: one step per call for B0 on a CPU, hundreds on a GPU.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_effnet import keras_versions
from training import optimizer as optimizer_lib
from training.config import ConfigError, TrainConfig

LOOP_SECONDS = 0.25
MAX_STEPS_PER_LOOP = 1000


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
        self.keras = keras_versions.keras3()
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
        loss_sum = tf.constant(0.0, tf.float32)
        correct_sum = tf.constant(0.0, tf.float32)
        for i in tf.range(tf.shape(learning_rates)[0]):
            loss, correct = self._train_step(next(iterator), learning_rates[i])
            loss_sum += loss
            correct_sum += correct
        return loss_sum, correct_sum

    def train_step(self, dist_batch, learning_rate: float):
        """One step on one distributed global batch; returns (loss, correct) tensors."""
        return self._train(dist_batch, tf.constant(learning_rate, tf.float32))

    def train_loop(self, iterator, learning_rates):
        """len(learning_rates) steps on a distributed iterator in one graph call; returns (sum of losses, correct)."""
        rates = tf.constant(np.asarray(learning_rates, np.float32))
        if self._loop_concrete is None:
            # One trace for every loop length.
            self._loop_concrete = self._loop.get_concrete_function(iterator, tf.TensorSpec([None], tf.float32))
        return self._loop(iterator, rates)

    def _sync_moving_statistics(self):
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
        if self.num_replicas > 1:
            if not hasattr(self, "_sync"):
                self._sync = tf.function(self._sync_moving_statistics)
            self._sync()

    def _replica_eval(self, images, labels):
        probs = tf.cast(self.model(images, training=False), tf.float32)
        num_classes = tf.shape(probs)[-1]
        per_example = -tf.math.log(tf.clip_by_value(tf.gather(probs, labels, batch_dims=1), 1e-7, 1.0))
        top1 = tf.cast(tf.equal(tf.argmax(probs, -1, output_type=tf.int32), labels), tf.float32)
        k = tf.minimum(5, num_classes)
        top5 = tf.cast(tf.reduce_any(tf.equal(tf.math.top_k(probs, k).indices, labels[:, None]), -1), tf.float32)
        count = tf.cast(tf.shape(labels)[0], tf.float32)
        return tf.stack([tf.reduce_sum(per_example), tf.reduce_sum(top1), tf.reduce_sum(top5), count])

    def _eval_step(self, dist_batch):
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
