"""edge.session.ExportSession: what the formats share is made once, int8 is calibrated on the float32 file
(one converter pass), and each format becomes one row of the report, a failure included."""

import os

import numpy as np

from edge import convert, formats
from edge import inputs as inputs_lib
from edge.export_config import ExportConfig
from edge.session import ExportSession

REPORT_KEYS = {
    "model", "model_name", "model_version", "data_dir", "calibration", "evaluation", "labels_source",
    "image_size", "class_names", "num_val_images", "labelled", "keras_top1", "io_dtype", "latency_runs", "host",
    "date", "formats", "recommendation", "qat", "int8_mixed", "diagnostics", "saved_model", "calibration_audit",
    "gpu_delegate", "config",
}  # fmt: skip


def test_one_float_conversion_serves_float32_and_int8(monkeypatch, b0_path, dataset, tmp_path):
    out, work = tmp_path / "E", tmp_path / "E" / ".edge-export-work"
    work.mkdir(parents=True)
    config = ExportConfig(
        model=b0_path,
        data_dir=dataset,
        out=str(out),
        formats=("float32", "int8"),
        num_calibration=3,
        latency_runs=2,
        max_val_images=6,
    )
    inputs = inputs_lib.load_inputs(config)
    keras_probs = np.asarray(inputs.model.predict(inputs.eval_images, verbose=0), dtype=np.float32)
    passes = []
    real = convert.convert_saved_model
    monkeypatch.setattr(
        convert, "convert_saved_model", lambda d, fmt, **kw: (passes.append(fmt), real(d, fmt, **kw))[1]
    )
    session = ExportSession(config, inputs, keras_probs, str(work))

    assert session.float_saved_model() == session.float_saved_model() == str(work / "float")
    assert session.calibrated() is session.calibrated()
    assert session.audit is not None and session.audit["tensors"] > 0  # audited by default
    float32 = session.add_row("float32", lambda: session.blob("float32"))
    int8 = session.add_row("int8", lambda: session.blob("int8"))
    assert passes == ["float32"]  # the calibration ran on the float32 flatbuffer, not a second conversion
    assert not float32.get("error") and not int8.get("error"), (float32, int8)
    assert int8["float_ops"] == [] and "float_ops" not in float32
    assert int8["input_dtype"] == "float32" and float32["agreement_with_keras"] == 1.0
    assert os.path.isfile(out / formats.model_file("int8"))

    failed = session.add_row("float16", lambda: 1 / 0)
    assert failed["error"].startswith("ZeroDivisionError") and session.rows == [float32, int8, failed]
    assert not (out / formats.model_file("float16")).exists()
    report = session.report()
    assert set(report) == REPORT_KEYS and report["formats"] == session.rows
    assert report["calibration_audit"] is session.audit and report["keras_top1"] == session.keras_top1
