"""edge.export: every format of B0 through the real converter and the LiteRT interpreter, the report, the
labels, failure isolation, the command line and bad input."""

import json
import os

import numpy as np
import pytest

from edge import data, export, litert

from edge_support import CLASSES, SIZE, run_module


def test_every_format_is_written_and_evaluated(b0_export):
    report, out = b0_export
    rows = {r["format"]: r for r in report["formats"]}
    assert list(rows) == list(export.FORMATS)
    for fmt, row in rows.items():
        assert not row.get("error"), (fmt, row.get("error"))
        path = os.path.join(out, row["file"])
        assert os.path.getsize(path) == row["bytes"] > 0
        assert 0 <= row["top1"] <= 1 and 0 <= row["agreement_with_keras"] <= 1
        assert row["latency_ms"] > 0 and row["latency_p10_ms"] <= row["latency_ms"] <= row["latency_p90_ms"]
    assert rows["float16"]["bytes"] < 0.6 * rows["float32"]["bytes"]
    assert rows["dynamic"]["bytes"] < 0.35 * rows["float32"]["bytes"]
    assert rows["int8"]["bytes"] < 0.35 * rows["float32"]["bytes"]
    for fmt in ("int8", "qat_int8"):
        assert rows[fmt]["input_dtype"] == rows[fmt]["output_dtype"] == "uint8"
        assert rows[fmt]["full_integer"] and rows[fmt]["float_ops"] == []
    for fmt in ("float32", "float16", "dynamic"):
        assert rows[fmt]["input_dtype"] == "float32"
    assert sorted(f for f in os.listdir(out) if not f.startswith("model_")) == ["labels.txt", "qat", "report.json", "report.md"]


def test_float32_tflite_matches_keras(b0_export, b0_path, dataset):
    report, out = b0_export
    row = next(r for r in report["formats"] if r["format"] == "float32")
    assert row["agreement_with_keras"] == 1.0 and row["max_prob_diff"] < 1e-4
    model = data.load_model(b0_path)
    val = data.validation_set(dataset, SIZE)
    got = litert.TFLiteModel(os.path.join(out, row["file"])).predict(val.images)
    want = model.predict(val.images, verbose=0)
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert report["num_val_images"] == len(val.labels) == CLASSES * 4


def test_report_files_labels_and_recommendation(b0_export):
    report, out = b0_export
    with open(os.path.join(out, export.REPORT_JSON)) as f:
        on_disk = json.load(f)
    assert on_disk["formats"] == report["formats"]
    for row in on_disk["formats"]:
        assert {"format", "file", "bytes", "top1", "agreement_with_keras", "latency_ms"} <= set(row)
    with open(os.path.join(out, export.LABELS)) as f:
        assert f.read().split() == report["class_names"] == ["circle", "square", "triangle"]
    md = open(os.path.join(out, export.REPORT_MD)).read()
    table = export.format_table(report)
    assert table in md and table.count("\n") == 1 + len(export.FORMATS)
    rec = report["recommendation"]
    assert rec["format"] in export.FORMATS and f"Ship `{rec['file']}`" in md
    chosen = next(r for r in report["formats"] if r["format"] == rec["format"])
    close = [r for r in report["formats"] if (report["keras_top1"] - r["top1"]) * 100 <= export.MAX_TOP1_DROP_POINTS]
    if close:
        assert chosen["latency_ms"] == min(r["latency_ms"] for r in close)
    assert report["qat"]["fine_tune"]["steps_per_epoch"] == 2
    assert os.path.isfile(os.path.join(out, "qat", "qat.weights.h5"))


def test_int8_diagnostics_name_layers(b0_export):
    report, _ = b0_export
    rows = report["diagnostics"]["int8"]
    assert isinstance(rows, list) and 1 <= len(rows) <= 10
    assert all(r["rel_rmse"] >= 0 and ":" in r["tensor"] for r in rows)
    assert [r["rel_rmse"] for r in rows] == sorted((r["rel_rmse"] for r in rows), reverse=True)


def test_recommend_prefers_the_fastest_accurate_format():
    rows = [
        {"format": "float32", "file": "a", "top1": 0.90, "latency_ms": 10.0, "bytes": 100, "latency_threads": 1},
        {"format": "int8", "file": "b", "top1": 0.70, "latency_ms": 3.0, "bytes": 25, "latency_threads": 1},
        {"format": "qat_int8", "file": "c", "top1": 0.895, "latency_ms": 4.0, "bytes": 25, "latency_threads": 1},
        {"format": "float16", "error": "boom"},
    ]
    assert export.recommend(rows, keras_top1=0.90)["format"] == "qat_int8"
    assert export.recommend(rows[:2], keras_top1=0.99)["format"] == "float32"  # none within 1 point: most accurate
    assert export.recommend(rows[3:], keras_top1=0.9)["format"] is None


def test_a_failing_format_is_reported_and_the_others_kept(monkeypatch, b0_path, dataset, tmp_path):
    real = export.convert_saved_model

    def convert(saved_model_dir, fmt, **kwargs):
        if fmt == "float16":
            raise RuntimeError("converter exploded on purpose")
        return real(saved_model_dir, fmt, **kwargs)

    monkeypatch.setattr(export, "convert_saved_model", convert)
    out = tmp_path / "E"
    report = export.export_all(b0_path, dataset, str(out), formats="float16,int8", io_dtype="int8",
                               num_calibration=3, latency_runs=2, max_val_images=6)
    rows = {r["format"]: r for r in report["formats"]}
    assert rows["float16"]["error"] == "RuntimeError: converter exploded on purpose"
    assert not rows["int8"].get("error") and rows["int8"]["input_dtype"] == "int8"
    assert not (out / "model_float16.tflite").exists() and (out / "model_int8.tflite").is_file()
    assert report["num_val_images"] == 6
    assert "FAILED: RuntimeError: converter exploded on purpose" in (out / "report.md").read_text()
    assert report["recommendation"]["format"] == "int8"
    assert not [f for f in os.listdir(out) if f.startswith(".")]  # no temporary files or folders left


def test_qat_int8_without_fine_tune_is_an_error_row_not_a_crash(b0_path, dataset, tmp_path):
    report = export.export_all(b0_path, dataset, str(tmp_path / "E"), formats=["qat_int8"], latency_runs=2,
                               max_val_images=3)
    assert "qat_epochs >= 1, or qat_dir" in report["formats"][0]["error"]
    assert report["recommendation"]["format"] is None


def test_command_line_prints_the_table(b0_path, dataset, tmp_path):
    out = tmp_path / "E"
    proc = run_module("edge.export", f"--model={b0_path}", f"--data_dir={dataset}", f"--out={out}",
                      "--formats=dynamic", "--latency_runs=2", "--max_val_images=3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| dynamic | model_dynamic.tflite |" in proc.stdout and "recommendation: model_dynamic.tflite" in proc.stdout
    assert json.loads((out / "report.json").read_text())["formats"][0]["format"] == "dynamic"


@pytest.fixture(scope="module")
def foreign_model(tmp_path_factory):
    from keras_effnet import flavours

    keras = flavours.keras3()
    model = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Conv2D(2, 3), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(CLASSES, activation="softmax")])
    path = tmp_path_factory.mktemp("foreign") / "foreign.keras"
    model.save(str(path))
    return str(path)


def _bad(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


@pytest.mark.parametrize("case", ["missing_model", "corrupt_model", "truncated_zip", "foreign_model", "missing_data",
                                  "empty_data", "empty_class", "unknown_format", "bad_io_dtype", "class_mismatch"])
def test_bad_input_is_named_and_nothing_is_written(case, b0_path, dataset, foreign_model, tmp_path):
    model, data_dir, kwargs = b0_path, dataset, {"formats": "float32"}
    if case == "missing_model":
        model, error, match = str(tmp_path / "nope.keras"), FileNotFoundError, "model: .*nope.keras.* does not exist"
    elif case == "corrupt_model":
        model, error, match = _bad(tmp_path, "bad.keras", b"not a model"), ValueError, "model: .*bad.keras.* not a Keras .keras file"
    elif case == "truncated_zip":
        blob = open(b0_path, "rb").read()
        model, error, match = _bad(tmp_path, "cut.keras", blob[: len(blob) // 2]), ValueError, "model: .*cut.keras"
    elif case == "foreign_model":
        model, error, match = foreign_model, ValueError, "model: .*foreign.keras.*not built by keras_effnet"
    elif case == "missing_data":
        data_dir, error, match = str(tmp_path / "nodata"), ValueError, "data_dir: .*nodata.* is not a directory"
    elif case == "empty_data":
        (tmp_path / "empty").mkdir()
        data_dir, error, match = str(tmp_path / "empty"), ValueError, "data_dir: .*empty.* has no 'train' folder"
    elif case == "empty_class":
        for split in ("train", "val"):
            (tmp_path / "d" / split / "a").mkdir(parents=True)
        data_dir, error, match = str(tmp_path / "d"), ValueError, "class folder .* is empty"
    elif case == "unknown_format":
        kwargs, error, match = {"formats": "float32,int4"}, ValueError, r"formats: unknown format\(s\) \['int4'\]; allowed: float32"
    elif case == "bad_io_dtype":
        kwargs, error, match = {"formats": "int8", "io_dtype": "float8"}, ValueError, "io_dtype must be one of"
    else:
        import shutil

        shutil.copytree(dataset, tmp_path / "two")
        shutil.rmtree(tmp_path / "two" / "train" / "triangle")
        shutil.rmtree(tmp_path / "two" / "val" / "triangle")
        data_dir, error, match = str(tmp_path / "two"), ValueError, "has 2 classes .* but the model .* has 3 outputs"
    out = tmp_path / "E"
    with pytest.raises(error, match=match):
        export.export_all(model, data_dir, str(out), **kwargs)
    assert not out.exists()
