"""Unit tests of the study's timing, storage and plotting helpers (issue 5)."""

import json
import os

from study_support import check_png
from training.study_lib import measure, plots, report, store


def test_timed_respects_min_max_reps_and_budget():
    calls = []
    seconds, reps = measure.timed(lambda: calls.append(1), measure.Timing(min_reps=3, max_reps=5, budget_s=100.0))
    assert reps == 5 and len(calls) == 6 and seconds >= 0  # one warm-up call, not timed
    calls.clear()
    _, reps = measure.timed(lambda: calls.append(1), measure.Timing(min_reps=2, max_reps=50, budget_s=0.0))
    assert reps == 2 and len(calls) == 3


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "a" / "r.json"
    store.atomic_write_json(str(path), {"x": 1})
    store.atomic_write_json(str(path), {"x": 2})
    assert json.loads(path.read_text()) == {"x": 2}
    assert os.listdir(path.parent) == ["r.json"]


def _model(key, role, macs, acts, ms, top1=None):
    return {"model": key.upper(), "key": key, "role": role, "family": "efficientnet", "phi": 0, "alpha": 1.2,
            "beta": 1.1, "gamma": 1.15, "resolution": 224, "macs": macs, "activations": acts, "params": 5e6,
            "keras_b1_ms": ms, "tflite_f32_ms": None if ms is None else ms / 2, "val_top1": top1, "time_to_final_s": 10.0 if top1 else None}


def test_plots_and_answer_from_a_table(tmp_path):
    table = [_model("b0", "family", 0.39e9, 6.7e6, 20.0, 0.8), _model("b1", "family", 0.69e9, 10e6, 30.0, 0.85),
             _model("resnet50", "baseline", 4.1e9, 11e6, 40.0, 0.9)]
    written = plots.write_all(table, str(tmp_path))
    assert written == ["accuracy_vs_macs.png", "accuracy_vs_training_time.png", "macs_vs_latency.png",
                       "activations_vs_latency.png"]
    for name in written:
        check_png(tmp_path / name)
    lines = report.answer(table)
    assert lines[0].startswith("- B0 has 10.5× fewer MACs than RESNET50; measured speed-up Keras batch 1 2.00×")


def test_no_plot_without_data(tmp_path):
    table = [_model("b0", "family", 0.39e9, 6.7e6, None)]
    assert plots.write_all(table, str(tmp_path)) == []
    assert os.listdir(tmp_path) == []
