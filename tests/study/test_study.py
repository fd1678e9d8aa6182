"""The study end to end at 32 px: measure-only through the command, repeatability of two runs, Ctrl-C and
resume, refused folders, bad input, training, the fused-stage sweep and the grid search."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from study_support import check_png, fast_settings

from common import cli
from study import __main__ as study_main
from study import measure, members, plan, run, stats
from study.config import StudyConfig


def _rows(out):
    with open(os.path.join(out, "results.csv")) as f:
        return list(csv.DictReader(f))


def _value(rows, key, measurement, backend=""):
    found = [
        r for r in rows if r["key"] == key and r["measurement"] == measurement and r["backend"].startswith(backend)
    ]
    assert len(found) == 1, (key, measurement, backend, found)
    return float(found[0]["value"])


def _argv(out, *extra, **changes):
    settings = {"out": out, **fast_settings(**changes)}
    argv = []
    for k, v in settings.items():
        argv.append(f"--{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}")
    return argv + list(extra)


def _env():
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """`python -m study --measure_only` as a user runs it, from another directory: B0 on every backend and one
    formula twin."""
    out = str(tmp_path_factory.mktemp("measured") / "S")
    cmd = [
        sys.executable,
        "-m",
        "study",
        "--measure_only",
        "--members=b0",
        "--formula_phis=1",
        *_argv(out, backends=measure.BACKENDS),
    ]
    proc = subprocess.run(
        cmd, cwd=str(tmp_path_factory.mktemp("elsewhere")), env=_env(), capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_measure_only_times_every_backend_with_median_and_spread(measured):
    out, proc = measured
    assert "wrote" in proc.stdout
    rows = _rows(out)
    for backend in measure.BACKENDS:
        row = next(r for r in rows if r["key"] == "b0" and r["measurement"] == "latency_ms" and r["backend"] == backend)
        assert float(row["q1"]) <= float(row["value"]) <= float(row["q3"]) and float(row["value"]) > 0
        assert row["rounds"] == "2" and int(row["calls"]) >= 1 and row["noisy"] in ("True", "False")
    assert _value(rows, "b0", "tflite_bytes", "litert_int8") < _value(rows, "b0", "tflite_bytes", "litert_float32")
    assert _value(rows, "b0", "macs") > 0 and _value(rows, "b0", "layers") > 200
    assert not [r for r in rows if r["measurement"] == "val_top1"]
    assert not os.path.exists(os.path.join(out, "tflite"))  # converted files are removed after timing
    results = json.load(open(os.path.join(out, "results.json")))
    assert results["hardware"]["threads"]["litert"] == os.cpu_count()
    assert len(results["timing"]["load_before"]) == 3 and results["peak_rss_gb"] > 0
    report = open(os.path.join(out, "report.md")).read()
    assert "keras-effnet-study --out=" in report and "--members=b0" in report
    assert "load average" in report and "Published GPU figures (not measured here)" in report
    assert "| 1 | formula | 37 |" in report
    for name in ("macs_vs_latency.png", "activations_vs_latency.png"):
        check_png(os.path.join(out, name))


def test_two_measure_only_runs_rank_the_members_the_same(tmp_path):
    """Repeatability: Lite0, B0 and B2 at 32 px, timed in two separate studies of interleaved rounds."""
    tables = []
    for name in ("first", "second"):
        config = StudyConfig(
            **{
                "out": str(tmp_path / name),
                "measure_only": True,
                "members": ("lite0", "b0", "b2"),
                **fast_settings(rounds=5, sample_s=0.05),
            }
        )
        tables.append(run.run_study(config, progress=False)["models"])
    agree = stats.agreement(*tables, ["keras_b1_ms"])["keras_b1_ms"]
    assert agree["members"] == 3 and agree["spearman"] >= 0.95, (agree, tables)


def _sigint_at_default():
    """Run in the child before exec: a Ctrl-C in a terminal reaches a process whose SIGINT is at its default, but
    a shell without job control (a CI script, `make test &`) starts its children with SIGINT ignored, and Python
    keeps an inherited SIG_IGN, so the signal this test sends would be dropped."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_leaves_a_study_that_the_same_command_resumes(tmp_path, capsys):
    """A real SIGINT in the middle of the timing rounds, then the same command again."""
    out = str(tmp_path / "S")
    cmd = [sys.executable, "-m", "study", *_argv(out, "--measure_only", "--members=b0", rounds=40, sample_s=0.05)]
    first_round = os.path.join(out, "steps", "round_001.json")
    proc = subprocess.Popen(
        cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_sigint_at_default
    )
    deadline = time.monotonic() + 600
    while not os.path.exists(first_round) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == cli.EXIT_INTERRUPTED, err[-2000:]
    assert err.strip().splitlines()[-1] == cli.RESUME_HINT
    done = sorted(n for n in os.listdir(os.path.join(out, "steps")) if n.startswith("round_"))
    assert 1 <= len(done) < 40 and not os.path.exists(os.path.join(out, "results.csv"))
    assert not [n for n in os.listdir(os.path.join(out, "steps")) if n.startswith(".")]  # no half-written file
    kept = open(first_round).read()

    rerun = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert open(first_round).read() == kept  # resumed, not started again
    assert len([n for n in os.listdir(os.path.join(out, "steps")) if n.startswith("round_")]) == 40
    assert _value(_rows(out), "b0", "latency_ms", "keras_b1") > 0

    before = {n: open(os.path.join(out, n)).read() for n in ("study.json", "results.csv")}
    assert study_main.main(_argv(out, "--measure_only", "--members=b0", rounds=3, sample_s=0.05)) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    # In-process, TensorFlow may already run with other thread pools than the subprocess recorded; that
    # difference is named too, so only the rounds are asserted here.
    assert err.count("\n") == 1 and "another configuration (" in err, err
    assert "rounds: folder has 40, this run has 3" in err, err
    assert {n: open(os.path.join(out, n)).read() for n in before} == before


def _empty_dataset(root):
    os.makedirs(root / "train" / "a")
    os.makedirs(root / "val" / "a")
    return root


@pytest.mark.parametrize("case", ["unknown member", "empty dataset", "out under a file", "out not a study"])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, case):
    out = tmp_path / "S"
    argv = _argv(str(out), "--measure_only", "--members=b0")
    fragment = {
        "unknown member": "--members=b0,b9: unknown member 'b9'",
        "empty dataset": "--data_dir=",
        "out under a file": "--out=",
        "out not a study": "a new or empty folder",
    }[case]
    if case == "unknown member":
        argv = _argv(str(out), "--measure_only", "--members=b0,b9")
    elif case == "empty dataset":
        argv = _argv(str(out), "--members=b0", f"--data_dir={_empty_dataset(tmp_path / 'data')}")
    elif case == "out under a file":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "S"
        argv = _argv(str(out), "--measure_only", "--members=b0")
    else:
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    listing = sorted(os.listdir(tmp_path))
    assert study_main.main(argv) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and fragment in err, err
    assert "Traceback" not in err
    assert sorted(os.listdir(tmp_path)) == listing
    if case == "out not a study":
        assert os.listdir(out) == ["notes.txt"]


def test_unknown_member_from_the_command_line_is_one_line():
    proc = subprocess.run(
        [sys.executable, "-m", "study", "--members=b9"], env=_env(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error: --members=b9: unknown member")
    assert proc.stderr.count("\n") == 1


@pytest.mark.slow
def test_training_study_reports_accuracy_against_time_with_one_recipe(tmp_path, tiny_data, monkeypatch):
    config = StudyConfig(
        out=str(tmp_path / "S"),
        members=("b0",),
        data_dir=tiny_data,
        **fast_settings(epochs=2, rounds=1, plateau_epochs=1, target_accuracy=0.01),
    )
    from training import loop

    model_fns = []
    real_run = loop.run
    monkeypatch.setattr(loop, "run", lambda tc, **kw: (model_fns.append(kw.get("model_fn")), real_run(tc, **kw))[1])
    results = run.run_study(config, progress=False)
    assert model_fns and all(fn is not None for fn in model_fns)  # every member goes through the same model_fn path
    rows = _rows(config.out)
    trained = json.load(open(os.path.join(config.out, "runs", "b0_r32", "metrics.json")))
    assert _value(rows, "b0", "val_top1") == pytest.approx(trained["epochs"][-1]["val_accuracy"])  # the trainer's
    total = _value(rows, "b0", "train_seconds")
    assert 0 < _value(rows, "b0", "time_to_target_s") <= total
    assert _value(rows, "b0", "epochs") == 2
    assert [r["value"] for r in rows if r["measurement"] == "contract_zero_head"] == ["True"]
    # the timed model carries the head dropout the trainer chose for this image size and data
    assert _value(rows, "b0", "head_dropout") == pytest.approx(_value(rows, "b0", "train_dropout"))
    b0 = results["models"][0]
    assert len(json.loads(b0["accuracy_curve"])) == 2
    assert results["recipe"]["epochs"] == 2 and results["recipe"]["bn_momentum"] is not None
    report = open(os.path.join(config.out, "report.md")).read()
    assert "one recipe and the trainer's one model contract" in report and "Plateau criterion" in report
    check_png(os.path.join(config.out, "accuracy_vs_training_time.png"))

    # A finished training run is reused, not trained again.
    os.remove(os.path.join(config.out, "steps", plan.step_id(members.member("b0", 32), "train") + ".json"))
    monkeypatch.setattr(loop, "run", lambda *a, **k: pytest.fail("loop.run called for a finished run"))
    run.run_study(config, progress=False)


@pytest.mark.skipif(not members.v2_available(), reason="keras_effnet has no EfficientNetV2 / fused-stage knob")
def test_fused_stage_sweep_trades_macs_for_fewer_layers(tmp_path):
    config = StudyConfig(
        out=str(tmp_path / "S"), measure_only=True, members=("b0", "b0-fused1", "b0-fused3"), **fast_settings(rounds=1)
    )
    results = run.run_study(config, progress=False)
    by_key = {m["key"]: m for m in results["models"]}
    assert by_key["b0"]["macs"] < by_key["b0-fused1"]["macs"] < by_key["b0-fused3"]["macs"]
    assert by_key["b0-fused3"]["layers"] < by_key["b0"]["layers"]
    assert all(by_key[k]["keras_b1_ms"] > 0 for k in by_key)
    report = open(os.path.join(config.out, "report.md")).read()
    assert "Fused-stage sweep" in report and "| 3 |" in report


@pytest.mark.slow
def test_resnet50_baseline_is_trained_by_the_same_trainer(tmp_path, tiny_data):
    config = StudyConfig(out=str(tmp_path / "S"), members=("b0", "resnet50"), data_dir=tiny_data, **fast_settings())
    run.run_study(config, progress=False)
    metrics = json.load(open(os.path.join(config.out, "runs", "resnet50_r32", "metrics.json")))
    assert metrics["config"]["epochs"] == 1 and len(metrics["epochs"]) == 1
    assert _value(_rows(config.out), "resnet50", "params") == 23_591_810  # ResNet50 with a 2-class head
    assert "fewer MACs than ResNet50" in open(os.path.join(config.out, "report.md")).read()


@pytest.mark.slow
def test_grid_search_trains_two_points_and_names_the_best(tmp_path, tiny_data):
    config = StudyConfig(
        out=str(tmp_path / "S"), grid_search=True, grid_points=2, data_dir=tiny_data, **fast_settings()
    )
    results = run.run_study(config, progress=False)
    grid = [m for m in results["models"] if m["role"] == "grid"]
    assert len(grid) == 2 and (grid[0]["alpha"], grid[0]["beta"], grid[0]["gamma"]) == (1.2, 1.1, 1.15)
    assert grid[0]["macs"] != grid[1]["macs"]
    for m in grid:  # each point's accuracy is its own run's, as the trainer recorded it
        trained = json.load(open(os.path.join(config.out, "runs", f"{m['key']}_r{m['resolution']}", "metrics.json")))
        assert m["val_top1"] == pytest.approx(trained["epochs"][-1]["val_accuracy"])
    report = open(os.path.join(config.out, "report.md")).read()
    assert "Grid search at φ = 1" in report and report.count("**best**") == 1


def test_conversion_workers_write_every_file_of_every_member(tmp_path):
    """`study.convert.run_jobs` with real worker processes: a large member (by the parameter count given) in
    the fresh worker and a small one in the reused one, float32 and int8 each, readable by LiteRT."""
    from edge import litert
    from study import convert

    jobs = []
    for key, params in (("b0", 30_000_000), ("lite0", 3_000_000)):
        m = members.member(key, 32)
        paths = {p: str(tmp_path / f"{key}_{p}.tflite") for p in ("float32", "int8")}
        jobs.append(
            convert.Job(
                member=m,
                precisions=("float32", "int8"),
                paths=paths,
                trained_model=None,
                classes=2,
                seed=0,
                calibration=2,
                data_dir=None,
                params=params,
            )
        )
    assert [j.large for j in jobs] == [True, False]
    done = []
    convert.run_jobs(jobs, 2, lambda job, result: done.append((job.member.key, result)))
    assert sorted(k for k, _ in done) == ["b0", "lite0"]
    for job in jobs:
        result = dict(done)[job.member.key]
        assert result["peak_rss_gb"] > 0.1 and result["int8"]["calibration_samples"] == 2
        for precision, path in job.paths.items():
            assert os.path.getsize(path) == result[precision]["bytes"] > 0
            model = litert.TFLiteModel(path)
            assert tuple(model.input_shape[1:3]) == (32, 32)
            assert model.input_dtype == ("uint8" if precision == "int8" else "float32")
            assert model.predict(measure.random_images(1, 32)).shape == (1, 2)
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]  # no temporary file left
