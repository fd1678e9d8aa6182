"""edge.benchmark on a real .tflite file through the LiteRT interpreter (no timing thresholds: a benchmark, not a
timed test)."""

import json

import pytest

from edge import benchmark, export
from keras_effnet import flavours

from edge_support import run_module


@pytest.fixture(scope="module")
def tiny_tflite(tmp_path_factory):
    keras = flavours.keras3()
    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(3, activation="softmax")])
    path = tmp_path_factory.mktemp("bench") / "tiny.tflite"
    path.write_bytes(export.convert(model, "float32"))
    return str(path)


def test_rows_per_thread_count(tiny_tflite):
    rows = benchmark.benchmark(tiny_tflite, threads=(1, 2), warmup=1, runs=7)
    assert [r["threads"] for r in rows] == [1, 2]
    for r in rows:
        assert r["runs"] == 7 and r["input_shape"] == [1, 16, 16, 3] and r["input_dtype"] == "float32"
        assert 0 < r["min_ms"] <= r["p10_ms"] <= r["median_ms"] <= r["p90_ms"] <= r["max_ms"]
    table = benchmark.format_rows(rows)
    assert table.count("| tiny.tflite |") == 2


def test_command_line_json(tiny_tflite):
    proc = run_module("edge.benchmark", tiny_tflite, tiny_tflite, "--threads=1,2", "--runs=3", "--warmup=1", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert len(out["results"]) == 4 and out["host"]


@pytest.mark.parametrize("kwargs,match", [({"threads": (0,)}, "threads"), ({"runs": 0}, "runs"), ({"warmup": -1}, "warmup")])
def test_bad_arguments(tiny_tflite, kwargs, match):
    with pytest.raises(ValueError, match=match):
        benchmark.benchmark(tiny_tflite, **kwargs)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.tflite"):
        benchmark.benchmark(str(tmp_path / "nope.tflite"))
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"definitely not a flatbuffer")
    with pytest.raises(ValueError, match="bad.tflite.* could not be loaded"):
        benchmark.benchmark(str(bad))
