"""The trainer learns: B0 on the embedded synthetic dataset, through `training.train.run`, on the defaults.

This test trains the real path (folder loader, tf.data pipeline, adaptive regularisation,
the custom loop, evaluation of the saved model) on held-out images and asserts
top-1 far above chance (10 classes: 0.1). The threshold comes from measurement
(docs/measurements/benchmarks.md, "Trainer defaults"), with margin for other seeds of
TensorFlow's kernels and other CPUs: measured 0.563 with these 7 epochs (0.687 with 9), on a loaded 2-core
CPU; 0.40 is 4x chance. The run is the `learned_b0` session fixture (conftest.py), which
test_finetune_learning reuses as its pretrained model.
"""

import pytest

from training import evaluate

THRESHOLD = 0.40


@pytest.mark.xdist_group("learned_b0")  # one worker trains the shared B0 once for both tests
def test_b0_learns_the_embedded_dataset_on_the_defaults(learned_b0):
    result = learned_b0["result"]
    # The defaults at 32 px: no crop (flip only), no stochastic depth, half the head dropout.
    reg = result["regularization"]["32"]
    assert reg["crop_scale_min"] == 1.0 and reg["drop_connect_rate"] == 0.0
    ev = evaluate.evaluate(learned_b0["model"], learned_b0["data_dir"])
    assert ev["num_images"] == 300
    assert ev["top1"] >= THRESHOLD, (ev, [e["val_accuracy"] for e in result["epochs"]])
    assert abs(ev["top1"] - result["epochs"][-1]["val_accuracy"]) < 0.02  # the saved model is the trained one
