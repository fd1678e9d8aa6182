"""The efficiency study (issue 5) end to end at 32 px: training, measure-only via the CLI, grid search, resume, bad input."""

import csv
import json
import os
import subprocess
import sys

import pytest

from study_support import REPO_ROOT, check_png, fast_settings
from training import study
from training.study_lib import members, store, training_link


def _rows(out):
    with open(os.path.join(out, "results.csv")) as f:
        return list(csv.DictReader(f))


def _value(rows, key, measurement, backend_prefix=""):
    found = [r for r in rows if r["key"] == key and r["measurement"] == measurement and r["backend"].startswith(backend_prefix)]
    assert len(found) == 1, (key, measurement, backend_prefix, found)
    return float(found[0]["value"])


def _env():
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": REPO_ROOT}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_data):
    """Two phi values, one epoch each, through training.train.run."""
    config = study.StudyConfig(out=str(tmp_path_factory.mktemp("trained") / "S"), phis=(0, 1), dataset="folder",
                               data_dir=tiny_data, tflite=False, **fast_settings())
    return config, study.run_study(config, progress=False)


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """`python -m training.study --measure_only` as a user runs it: B0 with both TFLite backends, one formula twin."""
    out = str(tmp_path_factory.mktemp("measured") / "S")
    cmd = [sys.executable, "-m", "training.study", "--measure_only", f"--out={out}", "--phis=0", "--baselines=",
           "--formula_phis=1", "--image_size=32", "--min_reps=1", "--max_reps=2", "--budget_s=0.1",
           "--throughput_batch=4", "--measure_classes=2", "--calibration_samples=2"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_training_study_reports_accuracy_speed_and_time_for_each_member(trained):
    config, results = trained
    rows = _rows(config.out)
    for key, size in (("b0", 32), ("b1", 34)):
        assert 0.0 <= _value(rows, key, "val_top1") <= 1.0
        assert _value(rows, key, "train_images_per_sec") > 0
        total = _value(rows, key, "train_seconds")
        assert 0 < _value(rows, key, "time_to_final_accuracy_s") <= total
        assert _value(rows, key, "epochs") == 1
        assert _value(rows, key, "latency_ms", "keras-") > 0
        assert _value(rows, key, "throughput", "keras-") > 0
        assert {r["resolution"] for r in rows if r["key"] == key} == {str(size)}
        metrics = json.load(open(os.path.join(config.out, "runs", f"{key}_r{size}", "metrics.json")))
        assert metrics["config"]["epochs"] == 1 and metrics["class_names"] == ["circle", "square"]
    assert _value(rows, "b1", "macs") > _value(rows, "b0", "macs")
    assert _value(rows, "b1", "params") > _value(rows, "b0", "params")
    with open(os.path.join(config.out, "results.json")) as f:
        saved = json.load(f)
    assert saved["hardware"]["cpu_cores"] == os.cpu_count()
    assert saved["hardware"]["libraries"]["tensorflow"] and saved["hardware"]["cpu_model"]
    assert {m["key"] for m in saved["models"]} == {"b0", "b1"}


def test_training_study_writes_every_plot_as_a_real_image(trained):
    config, results = trained
    assert set(results["plots"]) == {"accuracy_vs_macs.png", "accuracy_vs_training_time.png",
                                     "macs_vs_latency.png", "activations_vs_latency.png"}
    for name in results["plots"]:
        check_png(os.path.join(config.out, name))
    report = open(os.path.join(config.out, "report.md")).read()
    assert "| B0 | 32 |" in report and "| B1 | 34 |" in report
    for name in results["plots"]:
        assert f"]({name})" in report


def test_finished_training_run_is_reused_not_retrained(trained, monkeypatch):
    config, _ = trained
    before = _value(_rows(config.out), "b0", "val_top1")
    os.remove(store.step_path(config.out, study.step_id(members.family_member(0, "efficientnet", 32), "train")))

    def no_training(*args, **kwargs):
        raise AssertionError("train.run called for a finished run")

    from training import train

    monkeypatch.setattr(train, "run", no_training)
    study.run_study(config, progress=False)
    assert _value(_rows(config.out), "b0", "val_top1") == before


def test_run_folder_with_other_training_settings_is_an_error(trained, tiny_data):
    config, _ = trained
    member = members.family_member(0, "efficientnet", 32)
    run_dir = study.run_dir(config, member)
    metrics_before = open(os.path.join(run_dir, "metrics.json")).read()
    other = study.StudyConfig(**{**config.__dict__, "epochs": 3})
    with pytest.raises(ValueError, match=r"run folder .* other settings .*epochs"):
        training_link.train_member(other, member, study.prepare_data(other), run_dir)
    assert open(os.path.join(run_dir, "metrics.json")).read() == metrics_before


@pytest.mark.slow
def test_resnet50_baseline_is_trained_by_the_same_trainer(tmp_path, tiny_data):
    config = study.StudyConfig(out=str(tmp_path / "S"), phis=(0,), dataset="folder", data_dir=tiny_data, tflite=False,
                               **fast_settings(baselines=("resnet50",)))
    results = study.run_study(config, progress=False)
    rows = _rows(config.out)
    metrics = json.load(open(os.path.join(config.out, "runs", "resnet50_r32", "metrics.json")))
    assert metrics["config"]["epochs"] == 1 and len(metrics["epochs"]) == 1
    assert 0 <= _value(rows, "resnet50", "val_top1") <= 1
    assert _value(rows, "resnet50", "params") == 23_591_810  # ResNet50 with a 2-class head
    report = open(os.path.join(config.out, "report.md")).read()
    assert "fewer MACs than ResNet50" in report
    from keras_effnet import flavours

    trained = flavours.keras3().saving.load_model(os.path.join(config.out, "runs", "resnet50_r32", "model.keras"))
    assert trained.count_params() == 23_591_810  # the trainer saved the study's ResNet-50, built by its model_fn


def test_resnet50_baseline_is_keras_applications_with_input_scaling():
    member = members.baseline_member("resnet50", 32)
    model = members.build_model(member, classes=1000)
    from keras_effnet import flavours, profile

    reference = flavours.keras3().applications.ResNet50(weights=None, input_shape=(32, 32, 3))
    assert profile(model).params == profile(reference).params == 25_636_712
    assert profile(model).macs == profile(reference).macs
    assert model.layers[1].name == "rescaling"


def test_measure_only_cli_measures_cost_keras_and_both_litert_backends(measured):
    out, proc = measured
    rows = _rows(out)
    assert "wrote" in proc.stdout
    for backend in ("keras-", "litert-float32-cpu", "litert-int8-cpu"):
        assert _value(rows, "b0", "latency_ms", backend) > 0
    assert _value(rows, "b0", "tflite_bytes", "litert-int8") < _value(rows, "b0", "tflite_bytes", "litert-float32")
    assert _value(rows, "b0", "macs") > 0 and _value(rows, "b0", "activations") > 0
    assert not [r for r in rows if r["measurement"] == "val_top1"]
    assert not os.path.exists(os.path.join(out, "tflite")) or not os.listdir(os.path.join(out, "tflite"))
    formula = _value(rows, "phi1_formula", "params")
    assert formula > 0 and formula != _value(rows, "b0", "params")
    report = open(os.path.join(out, "report.md")).read()
    assert "Compound-scaling formula vs official presets" in report and "| 1 | formula | 37 |" in report
    for name in ("macs_vs_latency.png", "activations_vs_latency.png"):
        check_png(os.path.join(out, name))
    assert not os.path.exists(os.path.join(out, "accuracy_vs_macs.png"))


def test_measure_only_rerun_skips_finished_steps(measured, monkeypatch):
    out, _ = measured
    config = study.StudyConfig(out=out, phis=(0,), measure_only=True, **fast_settings(formula_phis=(1,)))
    monkeypatch.setattr(study.Runner, "run", lambda *a: (_ for _ in ()).throw(AssertionError("step rerun")))
    results = study.run_study(config, progress=False)
    assert {m["key"] for m in results["models"]} == {"b0", "phi1_formula"}


def test_interrupted_study_resumes_where_it_stopped(tmp_path, monkeypatch):
    config = study.StudyConfig(out=str(tmp_path / "S"), phis=(0,), measure_only=True, tflite=False, **fast_settings())
    calls = []
    real = study.Runner.run

    def interrupted(self, member, what):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(what)
        return real(self, member, what)

    monkeypatch.setattr(study.Runner, "run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        study.run_study(config, progress=False)
    assert calls == ["cost", "keras_b1"]
    assert not os.path.exists(os.path.join(config.out, "results.csv"))

    resumed = []

    def counting(self, member, what):
        resumed.append(what)
        return real(self, member, what)

    monkeypatch.setattr(study.Runner, "run", counting)
    results = study.run_study(config, progress=False)
    assert resumed == ["keras_batch"]
    assert {r["measurement"] for r in results["rows"]} >= {"macs", "latency_ms", "throughput"}


def test_grid_search_trains_two_points_and_names_the_best(tmp_path, tiny_data):
    config = study.StudyConfig(out=str(tmp_path / "S"), grid_search=True, grid_points=2, dataset="folder",
                               data_dir=tiny_data, **fast_settings())
    results = study.run_study(config, progress=False)
    grid = [m for m in results["models"] if m["role"] == "grid"]
    assert len(grid) == 2
    assert (grid[0]["alpha"], grid[0]["beta"], grid[0]["gamma"]) == (1.2, 1.1, 1.15)
    for m in grid:
        assert abs(m["alpha"] * m["beta"] ** 2 * m["gamma"] ** 2 - 2) <= 0.1
        assert 0 <= m["val_top1"] <= 1 and m["macs"] > 0
    assert grid[0]["macs"] != grid[1]["macs"]
    report = open(os.path.join(config.out, "report.md")).read()
    assert "Grid search at φ = 1" in report and report.count("**best**") == 1
    check_png(os.path.join(config.out, "accuracy_vs_macs.png"))


def test_grid_points_satisfy_the_paper_constraint():
    points = members.grid_points()
    assert points[0] == (1.2, 1.1, 1.15)
    assert len(points) == len(set(points)) > 2
    for a, b, g in points:
        assert abs(a * b**2 * g**2 - 2.0) <= 0.1 and min(a, b, g) >= 1.0


def test_scaled_resolution_keeps_compound_ratios():
    assert members.scaled_resolution(224, 0) == 224
    assert members.scaled_resolution(600, 0) == 600
    assert members.scaled_resolution(240, 32) == 34
    assert members.scaled_resolution(600, 64) == 171
    assert members.scaled_resolution(224, 40) == 40


@pytest.mark.parametrize("changes, message", [
    ({"phis": (13,)}, r"phi must be <= 12, got 13"),
    ({"phis": (-1,)}, r"phi must be >= 0, got -1"),
    ({"family": "lite", "phis": (5,)}, r"phi=5 is not an EfficientNet-Lite variant"),
    ({"family": "mobilenet"}, r"family must be one of .*'mobilenet'"),
    ({"baselines": ("vgg16",)}, r"baselines: unknown baseline 'vgg16'; allowed: resnet50"),
    ({"dataset": "imagenet"}, r"dataset must be one of .*'imagenet'"),
    ({"grid_search": True, "measure_only": True}, r"grid_search: .*--measure_only"),
    ({"image_size": 16}, r"image_size must be 0 \(native\) or >= 32, got 16"),
    ({"epochs": 0}, r"epochs must be an integer >= 1, got 0"),
    ({"out": ""}, r"out: the study folder is required"),
])
def test_bad_settings_are_named(tmp_path, changes, message):
    settings = {"out": str(tmp_path / "S"), "measure_only": True, **fast_settings(), **changes}
    with pytest.raises(ValueError, match=message):
        study.run_study(study.StudyConfig(**settings), progress=False)
    assert not os.path.exists(tmp_path / "S")


@pytest.mark.parametrize("layout, message", [
    ({"train/a": 0, "val/a": 0}, r"class folder .* is empty"),
    ({"train": None, "val": None}, r"train' has no class folders"),
    ({"train/a": "notes.txt", "val/a": "notes.txt"}, r"no decodable image"),
])
def test_empty_dataset_is_an_error(tmp_path, layout, message):
    root = tmp_path / "data"
    for folder, file in layout.items():
        os.makedirs(root / folder)
        if file:
            (root / folder / file).write_text("not an image")
    config = study.StudyConfig(out=str(tmp_path / "S"), phis=(0,), dataset="folder", data_dir=str(root), **fast_settings())
    with pytest.raises(ValueError, match=message):
        study.run_study(config, progress=False)


def test_results_folder_from_other_settings_is_refused_and_kept(tmp_path):
    config = study.StudyConfig(out=str(tmp_path / "S"), phis=(0,), measure_only=True, tflite=False, **fast_settings())
    study.run_study(config, progress=False)
    before = {name: open(os.path.join(config.out, name)).read() for name in ("study.json", "results.csv")}
    other = study.StudyConfig(**{**config.__dict__, "max_reps": 5})
    with pytest.raises(ValueError, match=r"different configuration .*max_reps: folder has 2, this run has 5"):
        study.run_study(other, progress=False)
    after = {name: open(os.path.join(config.out, name)).read() for name in before}
    assert after == before


def test_folder_that_is_not_a_study_is_refused(tmp_path):
    out = tmp_path / "S"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    config = study.StudyConfig(out=str(out), phis=(0,), measure_only=True, **fast_settings())
    with pytest.raises(ValueError, match=r"exists and is not empty but has no study.json"):
        study.run_study(config, progress=False)
    assert (out / "notes.txt").read_text() == "mine"


def test_cli_bad_flag_values_exit_with_a_message():
    for flag, message in (("--phis=abc", "phis must be comma-separated numbers"), ("--family=resnet", "family")):
        proc = subprocess.run([sys.executable, "-m", "training.study", flag, "--measure_only", "--out=unused"],
                              cwd=REPO_ROOT, env=_env(), capture_output=True, text=True, timeout=300)
        assert proc.returncode != 0
        assert message in proc.stderr, proc.stderr[-2000:]
