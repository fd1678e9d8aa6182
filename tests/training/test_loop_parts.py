"""The small parts of the training loop, called alone: an epoch's running totals, the NaN check, the loop
length, the metrics writer and the validation pipeline. The whole loop runs in test_checkpoints.py and
test_train_e2e.py."""

import json
import os

import numpy as np
import pytest

from training import checkpoints, epoch, metrics_writer, pipelines, synthetic
from training import data as data_lib
from training.config import TrainConfig
from training.trainer import LOOP_SECONDS, MAX_STEPS_PER_LOOP, LoopLength


def test_epoch_totals_resume_the_partial_sums_and_skip_the_first_call_for_throughput():
    totals = epoch.EpochTotals(3, {"loss_sum": 1.5, "correct_sum": 6.0, "seconds": 2.0})
    assert totals.timed(2, end=10.0) is False  # the first call may trace: not steady
    totals.add(2, 0.5, 3.0)
    assert totals.timed(4, end=12.0) is True
    totals.add(4, 1.0, 4.0)
    assert (totals.step, totals.loss_sum, totals.correct_sum) == (9, 3.0, 13.0)
    partial = totals.partial()
    assert partial["loss_sum"] == 3.0 and partial["correct_sum"] == 13.0 and partial["seconds"] >= 2.0
    seconds, _ = totals.finish(steps_per_epoch=9, global_batch=8)
    assert seconds >= 2.0


def test_epoch_totals_without_a_steady_call_count_every_step_done_here():
    totals = epoch.EpochTotals(2, {})
    totals.timed(3, end=1.0)
    totals.add(3, 0.3, 1.0)
    seconds, per_sec = totals.finish(steps_per_epoch=5, global_batch=4)
    assert seconds >= 0 and per_sec == pytest.approx(3 * 4 / max(seconds, 1e-9), rel=0.5)


def test_check_finite_names_the_steps_and_the_kept_checkpoint(tmp_path):
    epoch.check_finite(
        1.0, epoch=1, first_step=1, last_step=1, global_step=1, model_dir=str(tmp_path), last_checkpoint=0
    )
    with pytest.raises(epoch.NonFiniteLossError, match=r"global step 7 \(epoch 2, steps 2-3\).*global step 4\)"):
        epoch.check_finite(
            float("nan"), epoch=2, first_step=2, last_step=3, global_step=7, model_dir=str(tmp_path), last_checkpoint=4
        )
    with pytest.raises(epoch.NonFiniteLossError, match=r"step 1\);.*no checkpoint had been written yet"):
        epoch.check_finite(
            float("inf"), epoch=1, first_step=1, last_step=1, global_step=1, model_dir=str(tmp_path), last_checkpoint=0
        )


def test_loop_length_is_fixed_or_adapts_to_the_target_seconds():
    assert LoopLength(5).next() == 5
    adaptive = LoopLength(None)
    assert adaptive.next() == 1
    adaptive.observe(4, 4 * LOOP_SECONDS / 2)  # a step takes half the target: two per call
    assert adaptive.next() == 2
    adaptive.observe(2, 0.0)  # the estimate halves: a running mean of the last calls
    assert adaptive.next() == 4
    fast = LoopLength(None)
    fast.observe(1, 1e-12)
    assert fast.next() == MAX_STEPS_PER_LOOP


def test_metrics_writer_writes_only_on_the_chief_and_logs_tensorboard_scalars(tmp_path):
    chief = metrics_writer.MetricsWriter(str(tmp_path / "chief"), chief=True)
    other = metrics_writer.MetricsWriter(str(tmp_path / "other"), chief=False)
    os.makedirs(tmp_path / "chief")
    os.makedirs(tmp_path / "other")
    for writer in (chief, other):
        writer.write({"epochs": [1]})
        writer.open_logs(TrainConfig(out=str(tmp_path), tensorboard=True), {})
        writer.log_epoch(
            {
                "epoch": 1,
                "loss": 1.0,
                "accuracy": 0.5,
                "images_per_sec": 10.0,
                "learning_rate": 0.1,
                "val_loss": 1.2,
                "val_accuracy": 0.4,
                "val_top5": 1.0,
            }
        )
        writer.close()
    assert json.load(open(tmp_path / "chief" / checkpoints.METRICS)) == {"epochs": [1]}
    assert os.listdir(tmp_path / "other") == []
    for part in ("train", "val"):
        assert os.listdir(tmp_path / "chief" / checkpoints.LOGS / part)


def test_the_validation_pipeline_serves_every_image_in_order(tmp_path):
    root = synthetic.generate(str(tmp_path / "data"), train_per_class=2, val_per_class=3, image_size=32, seed=0)
    splits = data_lib.load_splits(root)
    batches = list(pipelines.val_dataset(splits, image_size=16, batch_size=4))
    labels = np.concatenate([y.numpy() for _, y in batches])
    assert labels.tolist() == list(splits.val_labels)
    assert batches[0][0].shape[1:] == (16, 16, 3)
