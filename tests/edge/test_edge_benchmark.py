"""edge.benchmark on a real .tflite file through LiteRT's CompiledModel API (no timing thresholds in the default
suite: a benchmark, not a timed test), its agreement with `litert-benchmark`, and the keras.applications
comparison."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from edge import benchmark, convert
from keras_effnet import keras_versions


@pytest.fixture(scope="module")
def tiny_tflite(tmp_path_factory):
    keras = keras_versions.keras3()
    model = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(4, 3),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    path = tmp_path_factory.mktemp("bench") / "tiny.tflite"
    path.write_bytes(convert.convert(model, "float32"))
    return str(path)


def test_rows_per_thread_count(tiny_tflite):
    rows = benchmark.benchmark(tiny_tflite, threads=(1, 2), warmup=1, runs=7, interpreter=True)
    assert [r["threads"] for r in rows] == [1, 2]
    for r in rows:
        assert r["runs"] == 7 and r["input_shape"] == [1, 16, 16, 3] and r["input_dtype"] == "float32"
        assert 0 < r["min_ms"] <= r["p5_ms"] <= r["median_ms"] <= r["p95_ms"] <= r["max_ms"]
        assert r["api"] == "CompiledModel" and r["fully_accelerated"] is True and r["interpreter_median_ms"] > 0
    table = benchmark.format_rows(rows)
    assert table.count("| tiny.tflite |") == 2 and "Interpreter median ms" in table


def test_command_line_json(tiny_tflite, capsys):
    folder = os.path.dirname(tiny_tflite)
    assert benchmark.main([f"--model={tiny_tflite},{folder}", "--threads=1,2", "--runs=3", "--warmup=1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["results"]) == 4 and out["host"] and out["load_average"]


@pytest.mark.parametrize(
    "kwargs,match", [({"threads": (0,)}, "threads"), ({"runs": 0}, "runs"), ({"warmup": -1}, "warmup")]
)
def test_bad_arguments(tiny_tflite, kwargs, match):
    with pytest.raises(ValueError, match=match):
        benchmark.benchmark(tiny_tflite, **kwargs)


@pytest.mark.parametrize(
    "argv,message",
    [
        ([], "--model is required"),
        (["--model=/nonexistent.tflite"], "--model=/nonexistent.tflite: expected an existing .tflite file or folder"),
        (["--model=x.tflite", "--threads=0"], "--threads=0: expected a positive integer"),
        (["--model=x.tflite", "--runs=-1"], "--runs=-1: expected a positive integer"),
        (["FILE.tflite"], "FILE.tflite"),
    ],
)
def test_bad_command_line_is_one_line_exit_2(argv, message, capsys):
    assert benchmark.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_missing_and_corrupt_files(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="nope.tflite"):
        benchmark.benchmark(str(tmp_path / "nope.tflite"))
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"definitely not a flatbuffer")
    with pytest.raises(ValueError, match="bad.tflite.* could not be loaded"):
        benchmark.benchmark(str(bad))
    assert benchmark.main([f"--model={bad}"]) == 2
    assert "expected a .tflite model" in capsys.readouterr().err


@pytest.mark.slow
def test_latency_agrees_with_litert_benchmark(tmp_path):
    """Our CompiledModel timing and LiteRT's own tool on the same file, alternated so load hits both: within 15%."""
    import keras_effnet

    model = keras_effnet.build(0, input_shape=(64, 64, 3), classes=10)
    path = tmp_path / "b0_64.tflite"
    path.write_bytes(convert.convert(model, "float32"))
    tool = shutil.which("litert-benchmark") or os.path.join(os.path.dirname(sys.executable), "litert-benchmark")
    ours, theirs = [], []
    for _ in range(3):
        ours.append(benchmark.benchmark(str(path), runs=100, warmup=10)[0]["median_ms"])
        result = tmp_path / "r.json"
        subprocess.run(
            [
                tool,
                f"--model={path}",
                "--num_runs=100",
                "--warmup_runs=10",
                "--num_threads=1",
                f"--result_json={result}",
            ],
            check=True,
            capture_output=True,
        )
        theirs.append(json.loads(result.read_text())["latency"]["median_ms"])
    ours_ms, theirs_ms = sorted(ours)[1], sorted(theirs)[1]
    assert abs(ours_ms / theirs_ms - 1) <= 0.15, (ours, theirs)


@pytest.mark.slow
def test_compare_with_keras_applications_plain_conversion():
    result = benchmark.compare_keras_applications(64, runs=20, warmup=3)
    assert result["same_top1"] and result["max_abs_output_diff"] < 1e-4
    assert result["ours_ms"] > 0 and result["keras_applications_ms"] > 0
    assert result["ours_ops"]["CONV_2D"] == result["keras_applications_ops"]["CONV_2D"]
