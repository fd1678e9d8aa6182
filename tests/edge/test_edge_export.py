"""edge.export: every format of B0 through the real converter and LiteRT, the metadata, the report, failure
isolation, exports without labelled data, the output folder, and the command line with bad input."""

import json
import os
import shutil
import stat

import numpy as np
import pytest
from edge_support import CLASSES, SIZE, run_module

from common import cli
from edge import convert, data, evaluate, export, export_config, formats, litert, metadata, mixed
from edge import report as report_lib
from training import data as training_data

# One worker computes the shared export of every format (`b0_export`) for both files (pytest-xdist).
pytestmark = pytest.mark.xdist_group("b0_export")


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_every_format_is_written_and_evaluated(b0_export):
    report, out = b0_export
    rows = {r["format"]: r for r in report["formats"]}
    assert [f for f in rows if f != formats.MIXED] == list(formats.FORMATS)
    for fmt, row in rows.items():
        assert not row.get("error"), (fmt, row.get("error"))
        path = os.path.join(out, row["file"])
        assert os.path.getsize(path) == row["bytes"] > 0 and _mode(path) == 0o644
        assert 0 <= row["top1"] <= 1 and 0 <= row["agreement_with_keras"] <= 1
        assert (
            row["latency_api"] == "CompiledModel"
            and 0 < row["latency_p5_ms"] <= row["latency_ms"] <= row["latency_p95_ms"]
        )
        assert row["op_counts"]["CONV_2D"] > 0 and row["op_counts"]["SOFTMAX"] == 1
    assert rows["float16"]["bytes"] < 0.6 * rows["float32"]["bytes"]
    for fmt in ("dynamic", "int8", "int16x8"):
        assert rows[fmt]["bytes"] < 0.4 * rows["float32"]["bytes"]
    # Fully on XNNPACK: float32/float16, and int8 / qat_int8 with float I/O (their softmax runs in float on purpose).
    for fmt in ("float32", "float16", "int8", "qat_int8"):
        assert rows[fmt]["fully_accelerated"] and rows[fmt]["not_on_xnnpack"] == [], (fmt, rows[fmt]["not_on_xnnpack"])
    assert rows["int8"]["float_ops"] == [] and rows["int8"]["input_dtype"] == "float32"
    assert rows["int8"]["op_counts"]["QUANTIZE"] == 1 and rows["int8"]["op_counts"]["DEQUANTIZE"] == 1
    # Dynamic range: XNNPACK has no hybrid depthwise convolution; int16x8: no 16-bit kernels. Named, with why.
    assert {o["op"] for o in rows["dynamic"]["not_on_xnnpack"]} == {"DEPTHWISE_CONV_2D"}
    assert all("dynamic-range" in o["why"] for o in rows["dynamic"]["not_on_xnnpack"])
    assert not rows["int16x8"]["fully_accelerated"]
    assert all("16-bit" in o["why"] for o in rows["int16x8"]["not_on_xnnpack"] if "int16" in (o["input"], o["output"]))
    table = report_lib.format_table(report)
    assert "XNNPACK has no 16-bit activation kernels" in table
    # GPU delegate: every float file runs whole; int16 activations do not; float16 is the one to use.
    for fmt in ("float32", "float16", "int8"):
        assert rows[fmt]["gpu_delegate"]["gpu_compatible"], (fmt, rows[fmt]["gpu_delegate"])
    assert not rows["int16x8"]["gpu_delegate"]["gpu_compatible"] and "int16" in table
    assert report["gpu_delegate"]["format"] == "float16"
    assert sorted(f for f in os.listdir(out) if not f.startswith("model_")) == [
        "labels.txt",
        "qat",
        "report.json",
        "report.md",
    ]
    assert _mode(os.path.join(out, "report.json")) == _mode(os.path.join(out, "labels.txt")) == 0o644


def test_every_file_carries_the_metadata_android_reads(b0_export, probe_path):
    report, out = b0_export
    for row in report["formats"]:
        blob = open(os.path.join(out, row["file"]), "rb").read()
        meta = metadata.read(blob)
        assert meta["name"] == report["model_name"] and meta["version"] == report["model_version"]
        assert meta["version"].startswith("sha256:") and meta["min_parser_version"] == "1.0.0"
        assert meta["labels_file"] == "labels.txt" and meta["labels_type"] == 2  # TENSOR_AXIS_LABELS
        assert metadata.associated_files(blob) == {"labels.txt": b"circle\nsquare\ntriangle\n"}
        if row["input_dtype"] == "float32":
            assert meta["mean"] == [0.0] * 3 and meta["std"] == [1.0] * 3  # the model takes raw 0..255 pixels
        else:
            assert meta["mean"] is None
    assert report["labels_source"].endswith("labels.txt")


def test_float32_tflite_matches_keras(b0_export, probe_path, dataset):
    report, out = b0_export
    row = next(r for r in report["formats"] if r["format"] == "float32")
    assert row["agreement_with_keras"] == 1.0 and row["max_prob_diff"] < 1e-4
    model = data.load_model(probe_path)
    val = data.validation_set(training_data.load_splits(dataset), SIZE)
    got = litert.TFLiteModel(os.path.join(out, row["file"])).predict(val.images)
    np.testing.assert_allclose(got, model.predict(val.images, verbose=0), atol=1e-4)
    assert report["num_val_images"] == len(val.labels) == CLASSES * 4


def test_report_files_labels_ops_and_recommendation(b0_export):
    report, out = b0_export
    with open(os.path.join(out, formats.REPORT_JSON)) as f:
        on_disk = json.load(f)
    assert on_disk["formats"] == report["formats"]
    with open(os.path.join(out, formats.LABELS)) as f:
        assert f.read().split() == report["class_names"] == ["circle", "square", "triangle"]
    md = open(os.path.join(out, formats.REPORT_MD)).read()
    table = report_lib.format_table(report)
    assert table in md and table.count("\n") == 1 + len(report["formats"])
    assert report_lib.op_table(report) in md and "| CONV_2D |" in md and "| total |" in md
    assert "CompiledModel" in md
    rec = report["recommendation"]
    assert rec["format"] in formats.FORMATS + (formats.MIXED,) and f"Ship `{rec['file']}`" in md
    chosen = next(r for r in report["formats"] if r["format"] == rec["format"])
    close = [r for r in report["formats"] if (report["keras_top1"] - r["top1"]) * 100 <= evaluate.MAX_TOP1_DROP_POINTS]
    if close:
        assert chosen["latency_ms"] == min(r["latency_ms"] for r in close)
    assert report["qat"]["fine_tune"]["steps_per_epoch"] == 2
    assert _mode(os.path.join(out, "qat", "qat.weights.h5")) == 0o644


def test_int8_diagnostics_name_layers(b0_export):
    report, _ = b0_export
    rows = report["diagnostics"]["int8"]
    assert isinstance(rows, list) and 1 <= len(rows) <= 10
    assert all(r["rel_rmse"] >= 0 and ":" in r["tensor"] for r in rows)
    assert [r["rel_rmse"] for r in rows] == sorted((r["rel_rmse"] for r in rows), reverse=True)


def test_recommend_prefers_the_fastest_accurate_format():
    rows = [
        {
            "format": "float32",
            "file": "a",
            "top1": 0.90,
            "agreement_with_keras": 1.0,
            "latency_ms": 10.0,
            "bytes": 100,
            "latency_threads": 1,
        },
        {
            "format": "int8",
            "file": "b",
            "top1": 0.70,
            "agreement_with_keras": 0.8,
            "latency_ms": 3.0,
            "bytes": 25,
            "latency_threads": 1,
        },
        {
            "format": "qat_int8",
            "file": "c",
            "top1": 0.895,
            "agreement_with_keras": 0.995,
            "latency_ms": 4.0,
            "bytes": 25,
            "latency_threads": 1,
        },
        {"format": "float16", "error": "boom"},
    ]
    assert evaluate.recommend(rows, keras_top1=0.90)["format"] == "qat_int8"
    assert evaluate.recommend(rows[:2], keras_top1=0.99)["format"] == "float32"  # none within 1 point: most accurate
    assert evaluate.recommend(rows[3:], keras_top1=0.9)["format"] is None
    unlabelled = evaluate.recommend(rows, keras_top1=None)  # agreement stands in for accuracy
    assert unlabelled["format"] == "qat_int8" and "no labelled data" in unlabelled["reason"]
    # An int8_mixed with most MACs in float is not shipped as int8, however fast it measured.
    mixed_rows = [
        rows[0],
        {
            "format": formats.MIXED,
            "file": "m",
            "top1": 0.90,
            "agreement_with_keras": 1.0,
            "latency_ms": 1.0,
            "bytes": 90,
            "latency_threads": 1,
            "mixed": {"is_int8": False},
        },
    ]
    assert evaluate.recommend(mixed_rows, keras_top1=0.90)["format"] == "float32"
    mixed_rows[1]["mixed"]["is_int8"] = True
    assert evaluate.recommend(mixed_rows, keras_top1=0.90)["format"] == formats.MIXED


def test_fewest_float_layers_doubles_then_bisects():
    ranked = [f"layer{i}" for i in range(40)]
    calls = []

    def good_enough(nodes):  # the first 11 layers are the harmful ones
        calls.append(len(nodes))
        return len(nodes) >= 11

    k, tries = mixed.fewest_float_layers(ranked, good_enough)
    assert k == 11 and calls[:5] == [1, 2, 4, 8, 16] and len(calls) <= 9
    assert [t["float_layers"] for t in tries] == calls
    assert mixed.fewest_float_layers(ranked, lambda nodes: False) is None
    assert mixed.fewest_float_layers(ranked, lambda nodes: True)[0] == 1


def test_quantization_debugger_ranks_real_layers(b0_export, probe_path, dataset, tmp_path):
    _, out = b0_export
    model = data.load_model(probe_path)
    saved = convert.export_saved_model(model, str(tmp_path / "sm"))
    images = training_data.representative_images(dataset, 4, SIZE)
    calibrated = convert.calibrate(saved, images)
    ranked = mixed.rank_layers(calibrated, open(os.path.join(out, "model_float32.tflite"), "rb").read(), images)
    assert len(ranked) > 50 and all(r["rmse_over_scale"] >= 0 for r in ranked)
    assert [r["rmse_over_scale"] for r in ranked] == sorted((r["rmse_over_scale"] for r in ranked), reverse=True)
    worst = [r["node"] for r in ranked[:3]]
    mixed_blob = convert.quantize_calibrated(calibrated, float_nodes=worst)
    assert convert.float_ops(mixed_blob)  # the denylisted layers compute in float
    assert convert.float_ops(convert.quantize_calibrated(calibrated)) == []
    # What the mixed file keeps in float, measured on the file: a few layers, a small share of the MACs; every
    # layer in float: nearly all MACs, and it says it is not an int8 model.
    int8_share = mixed.float_share(convert.quantize_calibrated(calibrated))
    assert int8_share["float_ops"] == 0 and int8_share["float_mac_share"] == 0.0 and int8_share["macs"] > 1e6
    few = mixed.float_share(mixed_blob)
    assert 0 < few["float_ops"] <= 6 and few["float_mac_share"] < 0.5 and few["macs"] == int8_share["macs"]
    everything = convert.quantize_calibrated(calibrated, float_nodes=[r["node"] for r in ranked])
    sizes = {"int8": 5_000_000, "float32": 16_000_000}
    info = mixed.account({"float_layers": [r["node"] for r in ranked], "num_layers": len(ranked)}, everything, sizes)
    assert info["share"]["float_mac_share"] > 0.9 and not info["is_int8"]
    assert "not recommended as int8" in info["summary"] and "int8 5.00 MB, float32 16.00 MB" in info["summary"]
    assert mixed.account({"float_layers": worst, "num_layers": len(ranked)}, mixed_blob, sizes)["is_int8"]


def test_a_failing_format_is_reported_and_the_others_kept(monkeypatch, b0_path, dataset, tmp_path):
    real = convert.convert_saved_model

    def float16_fails(saved_model_dir, fmt, **kwargs):
        if fmt == "float16":
            raise RuntimeError("converter exploded on purpose")
        return real(saved_model_dir, fmt, **kwargs)

    monkeypatch.setattr(convert, "convert_saved_model", float16_fails)
    out = tmp_path / "E"
    labels = tmp_path / "names.txt"
    labels.write_text("triangle\ncircle\nsquare\n")  # not the class folders' order: matched by name
    report = export.export_all(
        b0_path,
        dataset,
        str(out),
        formats="float16,int8",
        io_dtype="uint8",
        num_calibration=3,
        latency_runs=2,
        max_val_images=6,
        mixed_int8=False,
        labels=str(labels),
    )
    rows = {r["format"]: r for r in report["formats"]}
    model = data.load_model(b0_path)
    val = data.validation_set(training_data.load_splits(dataset), SIZE, limit=6)
    mapped = np.asarray([["triangle", "circle", "square"].index(val.class_names[y]) for y in val.labels])
    assert report["keras_top1"] == pytest.approx(
        float((model.predict(val.images, verbose=0).argmax(1) == mapped).mean())
    )
    assert report["class_names"] == ["triangle", "circle", "square"]
    assert rows["float16"]["error"] == "RuntimeError: converter exploded on purpose"
    assert not rows["int8"].get("error") and rows["int8"]["input_dtype"] == "uint8"
    # uint8 input costs one QUANTIZE (uint8 -> int8) that XNNPACK does not take: named, with the reason.
    assert not rows["int8"]["fully_accelerated"]
    assert [(o["op"], o["input"], o["output"]) for o in rows["int8"]["not_on_xnnpack"]] == [
        ("QUANTIZE", "uint8", "int8")
    ]
    assert "uint8 -> int8" in rows["int8"]["not_on_xnnpack"][0]["why"]
    assert not (out / "model_float16.tflite").exists() and (out / "model_int8.tflite").is_file()
    assert report["num_val_images"] == 6
    assert "FAILED: RuntimeError: converter exploded on purpose" in (out / "report.md").read_text()
    assert report["recommendation"]["format"] == "int8"
    assert not [f for f in os.listdir(out) if f.startswith(".")]  # no temporary files or folders left


def test_qat_int8_without_fine_tune_is_an_error_row_not_a_crash(b0_path, dataset, tmp_path):
    report = export.export_all(
        b0_path, dataset, str(tmp_path / "E"), formats=["qat_int8"], latency_runs=2, max_val_images=3
    )
    assert "qat_epochs >= 1" in report["formats"][0]["error"]
    assert report["recommendation"]["format"] is None


def test_pretrained_model_without_data_exports_the_float_formats(b0_path, tmp_path, capsys):
    """No --data_dir: the float formats, labels from --labels, no accuracy; then --calibration_dir (unlabelled
    images in no class folders) adds int8."""
    labels = tmp_path / "names.txt"
    labels.write_text("cat\ndog\nbird\n")
    out = tmp_path / "E"
    code = export.main(
        [f"--model={b0_path}", f"--labels={labels}", f"--out={out}", "--formats=float32", "--latency_runs=2"]
    )
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert [r["format"] for r in report["formats"]] == ["float32"] and report["keras_top1"] is None
    assert "top1" not in report["formats"][0] and report["formats"][0]["agreement_with_keras"] == 1.0
    assert metadata.associated_files((out / "model_float32.tflite").read_bytes())["labels.txt"] == b"cat\ndog\nbird\n"
    assert report["recommendation"]["format"] == "float32"
    assert export_config.ExportConfig(model="m", out="o").chosen_formats() == formats.FLOAT_FORMATS + (
        formats.SAVED_MODEL,
    )

    images = tmp_path / "photos" / "nested"
    images.mkdir(parents=True)
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(images / f"p{i}.jpg")
    (images / "notes.txt").write_text("not an image")
    code = export.main(
        [
            f"--model={b0_path}",
            f"--labels={labels}",
            f"--out={out}",
            "--formats=int8",
            f"--calibration_dir={tmp_path / 'photos'}",
            "--latency_runs=2",
        ]
    )
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert [r["format"] for r in report["formats"]] == ["int8"] and "3 images under" in report["calibration"]
    assert sorted(os.listdir(out)) == ["labels.txt", "model_int8.tflite", "report.json", "report.md"]  # float32 cleaned


def test_no_format_succeeding_exits_1(monkeypatch, b0_path, tmp_path, capsys):
    def no_luck(*args, **kwargs):
        raise RuntimeError("no luck")

    monkeypatch.setattr(convert, "export_saved_model", lambda model, directory: directory)
    monkeypatch.setattr(convert, "convert_saved_model", no_luck)
    labels = tmp_path / "names.txt"
    labels.write_text("a\nb\nc\n")
    assert (
        export.main(
            [
                f"--model={b0_path}",
                f"--labels={labels}",
                f"--out={tmp_path / 'E'}",
                "--formats=float32,float16",
                "--latency_runs=2",
            ]
        )
        == 1
    )
    captured = capsys.readouterr()
    assert "no format was exported" in captured.err
    assert "| float32 | model_float32.tflite | - |" in captured.out and "FAILED: RuntimeError: no luck" in captured.out


def test_console_script_runs_from_any_directory(tmp_path):
    proc = run_module("edge.export", "--help", cwd=str(tmp_path))
    assert proc.returncode == 0 and "--calibration_dir" in proc.stdout and "(default: float32)" in proc.stdout


@pytest.fixture(scope="module")
def foreign_model(tmp_path_factory):
    from keras_effnet import keras_versions

    keras = keras_versions.keras3()
    model = keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 3)),
            keras.layers.Conv2D(2, 3),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(CLASSES, activation="softmax"),
        ]
    )
    path = tmp_path_factory.mktemp("foreign") / "foreign.keras"
    model.save(str(path))
    return str(path)


BAD_INPUT = {
    "missing_model": ("--model=.*nope.keras: expected a .keras model file \\(it does not exist\\)"),
    "corrupt_model": "model: .*bad.keras.* not a Keras .keras file",
    "truncated_zip": "model: .*cut.keras",
    "foreign_model": "model: .*foreign.keras.*not built by keras_effnet",
    "missing_data": "--data_dir=.*nodata: expected a folder",
    "empty_data": "data_dir: .*empty.* has no 'train' folder",
    "empty_class": "class folder .* is empty",
    "unknown_format": "--formats=int4: expected one of float32",
    "bad_io_dtype": "--io_dtype=float8: expected one of float32, uint8, int8",
    "class_mismatch": "labels: the class folders of .*two names 2 classes but the model .* has 3 outputs",
    "int8_without_images": "--formats=int8: expected formats without int8",
    "labels_mismatch": "labels: .*names.txt names 2 classes but the model .* has 3 outputs",
    "unknown_folder": "data_dir: .* not among them: \\['triangle'\\]",
    "empty_calibration_dir": "calibration_dir: .* holds no decodable image",
    "foreign_out": "out: .* holds files that edge.export did not write \\(mine.txt\\)",
    "zero_latency_runs": "--latency_runs=0: expected a positive integer",
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_is_one_line_exit_2_and_nothing_written(case, b0_path, dataset, foreign_model, tmp_path, capsys):
    model, data_dir, extra = b0_path, dataset, ["--formats=float32"]
    out = tmp_path / "E"
    if case == "missing_model":
        model = str(tmp_path / "nope.keras")
    elif case == "corrupt_model":
        model = str(tmp_path / "bad.keras")
        (tmp_path / "bad.keras").write_bytes(b"not a model")
    elif case == "truncated_zip":
        blob = open(b0_path, "rb").read()
        model = str(tmp_path / "cut.keras")
        (tmp_path / "cut.keras").write_bytes(blob[: len(blob) // 2])
    elif case == "foreign_model":
        model = foreign_model
    elif case == "missing_data":
        data_dir = str(tmp_path / "nodata")
    elif case == "empty_data":
        (tmp_path / "empty").mkdir()
        data_dir = str(tmp_path / "empty")
    elif case == "empty_class":
        for split in ("train", "val"):
            (tmp_path / "d" / split / "a").mkdir(parents=True)
        data_dir = str(tmp_path / "d")
    elif case == "unknown_format":
        extra = ["--formats=float32,int4"]
    elif case == "bad_io_dtype":
        extra = ["--io_dtype=float8"]
    elif case in ("class_mismatch", "unknown_folder"):
        shutil.copytree(dataset, tmp_path / "two")
        for split in ("train", "val"):
            shutil.rmtree(tmp_path / "two" / split / "triangle")
        data_dir = str(tmp_path / "two")
        if case == "unknown_folder":
            (tmp_path / "names.txt").write_text("circle\nsquare\nhexagon\n")
            extra.append(f"--labels={tmp_path / 'names.txt'}")
            shutil.copytree(dataset, tmp_path / "tri")
            data_dir = str(tmp_path / "tri")
    elif case == "int8_without_images":
        data_dir, extra = None, ["--formats=int8", f"--labels={tmp_path / 'names.txt'}"]
        (tmp_path / "names.txt").write_text("a\nb\nc\n")
    elif case == "labels_mismatch":
        (tmp_path / "names.txt").write_text("a\nb\n")
        extra.append(f"--labels={tmp_path / 'names.txt'}")
    elif case == "empty_calibration_dir":
        (tmp_path / "cal").mkdir()
        (tmp_path / "cal" / "readme.txt").write_text("no images here")
        extra = ["--formats=int8", f"--calibration_dir={tmp_path / 'cal'}"]
    elif case == "foreign_out":
        out.mkdir()
        (out / "mine.txt").write_text("keep me")
    elif case == "zero_latency_runs":
        extra.append("--latency_runs=0")
    argv = [f"--model={model}", f"--out={out}", *extra] + ([f"--data_dir={data_dir}"] if data_dir else [])
    code = export.main(argv)
    err = capsys.readouterr().err
    assert code == cli.EXIT_USAGE, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    import re

    assert re.search(BAD_INPUT[case], lines[0]), lines[0]
    assert (not out.exists()) or sorted(os.listdir(out)) == ["mine.txt"]


def _graph(blob):
    """(op codes, [(tensor type, first scale)]) of a .tflite flatbuffer, in file order."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(bytearray(blob), 0))
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    sub = model.subgraphs[0]
    tensors = [
        (t.type, None if t.quantization is None or t.quantization.scale is None else float(t.quantization.scale[0]))
        for t in sub.tensors
    ]
    return [codes[op.opcodeIndex] for op in sub.operators], tensors


def test_calibrating_the_float32_file_gives_the_int8_of_the_converter_route(b0_path, dataset, tmp_path):
    """`calibrate_float` (one converter pass) against `calibrate` (the converter's own calibrate-only pass):
    the same ops, tensor types and quantization scales, and the same outputs on real images."""
    import keras

    model = keras.models.load_model(b0_path, compile=False)
    saved = convert.export_saved_model(model, str(tmp_path / "saved"))
    images = training_data.representative_images(dataset, 8, SIZE)
    route_a = convert.quantize_calibrated(convert.calibrate(saved, images), io_dtype="uint8")
    float32 = convert.convert_saved_model(saved, "float32")
    route_b = convert.quantize_calibrated(convert.calibrate_float(float32, images), io_dtype="uint8")
    ops_a, tensors_a = _graph(route_a)
    ops_b, tensors_b = _graph(route_b)
    assert ops_a == ops_b and len(ops_a) > 100
    assert [t for t, _ in tensors_a] == [t for t, _ in tensors_b]
    assert np.allclose([s or 0 for _, s in tensors_a], [s or 0 for _, s in tensors_b], rtol=1e-3)
    paths = [tmp_path / "a.tflite", tmp_path / "b.tflite"]
    for path, blob in zip(paths, (route_a, route_b)):
        path.write_bytes(blob)
    out_a, out_b = (litert.TFLiteModel(str(p)).predict(images) for p in paths)
    np.testing.assert_allclose(out_a, out_b, atol=2 / 256)
    with pytest.raises(ValueError, match="calibration images"):
        convert.calibrate_float(float32, [])
