"""`train_epoch`: one epoch of a run, its step loop, its evaluation and its checkpoints.

The host reads the device's sums once per graph call (`Trainer.train_loop`)
for the NaN check and the progress bar; `EpochTotals` keeps the epoch's
running sums. A mid-epoch checkpoint (`--checkpoint_every_steps`) records
them beside the variables, so a resumed epoch ends with the same loss,
accuracy and time as an uninterrupted one. After the last step the replicas'
BatchNorm statistics are averaged, the EMA weights (if any) are evaluated,
and the epoch's checkpoint is written before metrics.json lists the epoch.
"""

from __future__ import annotations

import math
import os
import time

from keras_effnet import keras_versions
from training import checkpoints as ckpt_lib
from training import finetune, pipelines, regularization, schedule
from training.run_state import RunState


class NonFiniteLossError(RuntimeError):
    """Raised when the training loss is NaN or infinite; the last good checkpoint is kept."""


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


class EpochTotals:
    """The running sums of one epoch, restored from a mid-epoch checkpoint's `partial` when resumed."""

    def __init__(self, done: int, partial: dict):
        self.done = done  # steps done before this process started the epoch
        self.step = done
        self.loss_sum = partial.get("loss_sum", 0.0)
        self.correct_sum = partial.get("correct_sum", 0.0)
        self.earlier_seconds = partial.get("seconds", 0.0)
        self.start = time.perf_counter()
        self.steady_from = None  # the end of the first call, which may include tracing and pipeline warm-up
        self.steady_steps = None

    def timed(self, steps: int, end: float) -> bool:
        """Count a call of `steps` steps that ended at `end`; False for the first call (not steady yet)."""
        if self.steady_from is None:
            self.steady_from, self.steady_steps = end, 0
            return False
        self.steady_steps += steps
        return True

    def add(self, steps: int, loss_sum: float, correct_sum: float) -> None:
        self.step += steps
        self.loss_sum += loss_sum
        self.correct_sum += correct_sum

    def partial(self) -> dict:
        """What a mid-epoch checkpoint records of the epoch so far."""
        return {
            "loss_sum": self.loss_sum,
            "correct_sum": self.correct_sum,
            "seconds": self.earlier_seconds + time.perf_counter() - self.start,
        }

    def finish(self, steps_per_epoch: int, global_batch: int) -> tuple[float, float]:
        """(seconds of the whole epoch, steady images per second)."""
        end = time.perf_counter()
        seconds = self.earlier_seconds + end - self.start
        if self.steady_steps:
            steady = self.steady_steps * global_batch / (end - self.steady_from)
        else:
            steady = (steps_per_epoch - self.done) * global_batch / max(end - self.start, 1e-9)
        return seconds, steady


def train_epoch(state: RunState) -> dict:
    """Train epoch `state.epoch + 1` (the rest of it when resumed), evaluate, checkpoint, record; return its record."""
    config = state.config
    epoch = state.epoch + 1
    size = state.sizes[epoch - 1]
    if state.plan is not None and state.plan.stage(epoch) != state.stage:
        state.stage = state.plan.stage(epoch)
        finetune.set_stage(state.model, state.stage, state.plan)
    done = state.progress.step if epoch == state.progress.epoch + 1 else 0
    reg = state.stage_reg[size]
    if config.progressive_resize:
        regularization.apply_rates(
            state.model,
            dropout_rate=reg.dropout_rate,
            drop_connect_rate=reg.drop_connect_rate,
            built_drop_connect_rate=state.model_config.drop_connect_rate,
        )
    iterator = pipelines.train_iterator(
        config,
        state.strategy,
        state.splits,
        epoch=epoch,
        size=size,
        global_batch=state.global_batch,
        skip=done,
        reg=reg,
    )
    totals = run_steps(state, epoch, iterator, done)
    seconds, steady = totals.finish(state.steps_per_epoch, state.global_batch)
    val = validate(state, size)
    record = {
        "epoch": epoch,
        "loss": totals.loss_sum / state.steps_per_epoch,
        "accuracy": totals.correct_sum / (state.steps_per_epoch * state.global_batch),
        "val_loss": val["val_loss"],
        "val_accuracy": val["val_accuracy"],
        "val_top5": val["val_top5"],
        "images_per_sec": steady,
        "seconds": seconds,
        "image_size": size,
        "learning_rate": state.lr,
        "steps": state.steps_per_epoch,
    }
    if state.plan is not None:
        record["stage"] = state.stage
    state.history.append(record)
    state.say(
        f"epoch {epoch}/{config.epochs}: loss {record['loss']:.4f} acc {record['accuracy']:.4f} "
        f"val_loss {record['val_loss']:.4f} val_acc {record['val_accuracy']:.4f} val_top5 {record['val_top5']:.4f} "
        f"| {record['images_per_sec']:.1f} images/s ({seconds:.1f} s, {size}px)"
    )
    # The checkpoint first: whatever metrics.json says is done is in a checkpoint.
    save(
        state,
        ckpt_lib.Progress(epoch=epoch, step=0, global_step=state.global_step, history=state.history),
        {**state.info, "epochs": state.history},
    )
    state.last_checkpoint = state.global_step
    state.metrics.log_epoch(record)
    state.epoch = epoch
    return record


def run_steps(state: RunState, epoch: int, iterator, done: int) -> EpochTotals:
    """The step loop of `epoch` from step `done`: graph calls of `state.loop_length` steps, mid-epoch
    checkpoints between them; returns the epoch's totals."""
    config, spe, trainer = state.config, state.steps_per_epoch, state.trainer
    every = config.checkpoint_every_steps
    stage_start, stage_steps = finetune.stage_steps(state.plan, epoch, config.epochs, spe)
    stage_lr = state.base_lr if state.plan is None else state.plan.learning_rate(state.stage, state.base_lr)
    bar = keras_versions.keras3().utils.Progbar(
        spe, stateful_metrics=["loss", "accuracy", "lr"], verbose=config.verbose if state.chief else 0
    )
    totals = EpochTotals(done, state.progress.partial if done else {})
    while totals.step < spe:
        n = min(state.loop_length.next(), spe - totals.step)
        if every:
            n = min(n, every - (state.global_step % every))
        rates = [
            schedule.learning_rate(
                state.global_step + i - stage_start,
                base=stage_lr,
                total_steps=stage_steps,
                warmup_steps=min(state.warmup_steps, stage_steps),
                kind=config.schedule,
                steps_per_epoch=spe,
            )
            for i in range(n)
        ]
        state.lr = rates[-1]
        t0 = time.perf_counter()
        loop_loss, loop_correct = trainer.train_loop(iterator, rates)
        loop_loss = float(loop_loss)  # the one host read per loop
        t1 = time.perf_counter()
        check_finite(
            loop_loss,
            epoch=epoch,
            first_step=totals.step + 1,
            last_step=totals.step + n,
            global_step=state.global_step + n,
            model_dir=config.out,
            last_checkpoint=state.last_checkpoint,
        )
        if totals.timed(n, t1):
            state.loop_length.observe(n, t1 - t0)
        totals.add(n, loop_loss, float(loop_correct))
        state.global_step += n
        step = totals.step
        bar.update(
            step,
            [
                ("loss", totals.loss_sum / step),
                ("accuracy", totals.correct_sum / (step * state.global_batch)),
                ("lr", state.lr),
            ],
        )
        if every and state.global_step % every == 0 and step < spe:
            progress = ckpt_lib.Progress(
                epoch=epoch - 1,
                step=step,
                global_step=state.global_step,
                history=state.history,
                partial=totals.partial(),
            )
            save(state, progress)
            state.last_checkpoint = state.global_step
    return totals


def validate(state: RunState, size: int) -> dict:
    """The current weights (the EMA ones when kept) on the validation split at `size` px, every replica's share."""
    trainer = state.trainer
    trainer.sync_moving_statistics()
    if trainer.ema:
        trainer.swap_ema()
    val = trainer.evaluate(val_dataset(state, size))
    if trainer.ema:
        trainer.swap_ema()
    return val


def val_dataset(state: RunState, size: int):
    """The distributed validation split at `size` px, built once per size."""
    if size not in state.val_cache:
        state.val_cache[size] = pipelines.distributed_val(
            state.config, state.strategy, state.splits, image_size=size, global_batch=state.global_batch
        )
    return state.val_cache[size]


def save(state: RunState, progress: ckpt_lib.Progress, metrics: dict | None = None) -> None:
    """A checkpoint (the replicas' BatchNorm statistics averaged first), then metrics.json when given."""
    with ckpt_lib.deferred_interrupt():
        state.trainer.sync_moving_statistics()
        state.saver.save(progress)
        if metrics is not None:
            state.metrics.write(metrics)
