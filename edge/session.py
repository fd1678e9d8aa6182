"""One export of one model into one folder: every format converted, checked and recorded, then the report.

`ExportSession` holds what the formats share, each made once and on first use: the float model's SavedModel,
its float32 flatbuffer, and the int8 calibration, recorded on that float32 flatbuffer (`convert.calibrate_float`:
no second converter pass) and audited (`edge.calibration`). Each format becomes one row of the report
(`add_row`); a format that fails is recorded with its error and the others are still written. When PTQ int8
loses more than `MAX_TOP1_DROP_POINTS` top-1 against the Keras float model, `int8_mixed` keeps the fewest layers
in float that bring it back (`edge.mixed`), and says what it keeps in float. Every file carries TFLite metadata
(`convert.with_metadata`: what MediaPipe Tasks and the Android Task Library read) and gets a GPU-delegate
verdict (`edge.gpu_delegate`); `saved_model` writes a SavedModel for a server (`edge.saved_model`).
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import platform
import shutil
import tempfile
import time

import numpy as np

from common import files
from edge import convert, litert
from edge import evaluate as evaluate_lib
from edge import formats as formats_lib
from edge.evaluate import MAX_TOP1_DROP_POINTS
from edge.export_config import ExportConfig
from edge.formats import MIXED, SAVED_MODEL, model_file
from edge.inputs import Inputs


class ExportSession:
    """The formats of one export, written into `config.out`; `work` is a temporary folder inside it."""

    def __init__(self, config: ExportConfig, inputs: Inputs, keras_probs: np.ndarray, work: str):
        self.config, self.inputs, self.work = config, inputs, work
        self.model = inputs.model
        self.out = config.out
        self.keras_probs = keras_probs
        self.labelled = inputs.eval_labels is not None
        self.keras_top1 = float((keras_probs.argmax(axis=1) == inputs.eval_labels).mean()) if self.labelled else None
        self.rows: list[dict] = []
        self.qat_info = None
        self.mixed_info = None
        self.serving = None
        self.audit = None
        self.diagnostics: dict = {}
        self._float_saved_model = None
        self._float_tflite = None
        self._calibrated = None

    # -------------------------------------------------------------------------------- what the formats share

    def float_saved_model(self) -> str:
        """The float model's batch-1 SavedModel, exported once."""
        if self._float_saved_model is None:
            self._float_saved_model = convert.export_saved_model(self.model, os.path.join(self.work, "float"))
        return self._float_saved_model

    def float_tflite(self) -> bytes:
        """The float32 flatbuffer (no metadata), converted once: the float32 format and the int8 calibration."""
        if self._float_tflite is None:
            self._float_tflite = convert.convert_saved_model(self.float_saved_model(), "float32")
        return self._float_tflite

    def calibrated(self) -> bytes:
        """The float32 flatbuffer with the calibration images' ranges recorded, audited unless turned off."""
        if self._calibrated is None:
            calibrated = convert.calibrate_float(self.float_tflite(), self.inputs.representative)
            if self.config.audit_ranges:
                calibrated, self.audit = audited(calibrated, self.inputs.representative)
            self._calibrated = calibrated
        return self._calibrated

    # -------------------------------------------------------------------------------- one row per format

    def blob(self, fmt: str) -> bytes:
        """The .tflite bytes of `fmt` (no metadata)."""
        if fmt == "float32":
            return self.float_tflite()
        if fmt == "int8":
            return convert.quantize_calibrated(self.calibrated(), io_dtype=self.config.io_dtype)
        if fmt == "qat_int8":
            return self.qat_blob()
        return convert.convert_saved_model(
            self.float_saved_model(), fmt, representative=self.inputs.representative, io_dtype=self.config.io_dtype
        )

    def qat_blob(self) -> bytes:
        """The QAT model (fine-tuned here or loaded from --qat_dir) as full-integer int8 with a float softmax."""
        qat_model, self.qat_info = qat_model_for(self.model, self.config, self.inputs.splits)
        saved = convert.export_saved_model(qat_model, os.path.join(self.work, "qat"))
        return convert.float_softmax(convert.convert_saved_model(saved, "qat_int8", io_dtype=self.config.io_dtype))

    def add_row(self, fmt: str, make_blob) -> dict:
        """Write `make_blob()` with its metadata as `fmt`'s file, evaluate it, and record the row (or its error)."""
        inputs, config = self.inputs, self.config
        row = {"format": fmt, "file": model_file(fmt)}
        start = time.perf_counter()
        try:
            blob = convert.with_metadata(
                make_blob(), name=self.model.name, version=inputs.version, class_names=inputs.class_names, fmt=fmt
            )
            path = files.atomic_write(os.path.join(self.out, row["file"]), blob)
            row["bytes"] = len(blob)
            row.update(
                evaluate_lib.evaluate_tflite(
                    path,
                    inputs.eval_images,
                    inputs.eval_labels,
                    self.keras_probs,
                    threads=config.threads,
                    latency_runs=config.latency_runs,
                )
            )
            if formats_lib.BY_NAME[fmt].int8:
                row["float_ops"] = convert.float_ops(path)
            row["gpu_delegate"] = evaluate_lib.gpu_verdict(blob)
        except Exception as exc:  # noqa: BLE001 - one format's failure is reported, the others go on
            row["error"] = f"{type(exc).__name__}: {exc}"
        row["seconds"] = round(time.perf_counter() - start, 1)
        self.rows.append(row)
        return row

    def write_formats(self) -> None:
        """Every chosen format in order, then int8_mixed when int8 misses the target."""
        for fmt in self.config.chosen_formats():
            if fmt == SAVED_MODEL:
                self.serving = serving_saved_model(self.model, self.inputs.class_names, self.out, self.work)
            else:
                self.add_row(fmt, lambda fmt=fmt: self.blob(fmt))
        if self.wants_mixed():
            self.mixed_info = self.mixed()

    # -------------------------------------------------------------------------------- int8_mixed

    def wants_mixed(self) -> bool:
        """Whether int8 was written and lost more than MAX_TOP1_DROP_POINTS (labelled data only)."""
        int8 = next((r for r in self.rows if r["format"] == "int8" and not r.get("error")), None)
        return bool(
            self.config.mixed_int8
            and self.labelled
            and int8 is not None
            and (self.keras_top1 - int8["top1"]) * 100 > MAX_TOP1_DROP_POINTS
        )

    def mixed(self) -> dict:
        """`edge.mixed.search`, then write the file as int8_mixed with what it keeps in float beside int8 and
        float32."""
        from edge import mixed

        float_path = os.path.join(self.out, model_file("float32"))
        if not os.path.isfile(float_path):
            return {"error": "int8_mixed needs the float32 format in --formats (the debugger compares against it)."}
        with open(float_path, "rb") as f:
            float_blob = f.read()
        calibrated, inputs = self.calibrated(), self.inputs

        def quantize(float_nodes):
            return convert.quantize_calibrated(calibrated, io_dtype=self.config.io_dtype, float_nodes=float_nodes)

        def evaluate(blob):
            probs = litert.TFLiteModel(blob).predict(inputs.eval_images)
            return float((probs.argmax(1) == inputs.eval_labels).mean())

        info = mixed.search(
            calibrated,
            float_blob,
            quantize=quantize,
            evaluate=evaluate,
            images=inputs.representative[:16],
            max_drop_points=MAX_TOP1_DROP_POINTS,
            keras_top1=self.keras_top1,
        )
        blob = info.pop("blob", None)
        if blob is None:
            return info
        row = self.add_row(MIXED, lambda: blob)
        sizes = {r["format"]: r.get("bytes") for r in self.rows if r["format"] in ("int8", "float32", MIXED)}
        info = mixed.account(info, blob, sizes)
        row["mixed"] = {k: info[k] for k in ("share", "is_int8", "summary")}
        return info

    # -------------------------------------------------------------------------------- the report

    def diagnose(self) -> None:
        """Per-layer float-vs-int8 errors of the int8 file (`edge.diagnostics`), when asked for."""
        if not self.config.diagnostics:
            return
        from edge import diagnostics as diag

        ref = os.path.join(self.out, model_file("float32"))
        for row in self.rows:
            if row["format"] == "int8" and not row.get("error") and os.path.isfile(ref):
                try:
                    self.diagnostics["int8"] = diag.layer_errors(
                        ref, os.path.join(self.out, row["file"]), self.inputs.eval_images[:8]
                    )
                except Exception as exc:  # noqa: BLE001 - diagnostics are optional; say why they are missing
                    self.diagnostics["int8"] = f"not available: {type(exc).__name__}: {exc}"

    def report(self) -> dict:
        """What report.json holds."""
        inputs, config = self.inputs, self.config
        return {
            "model": inputs.model_path,
            "model_name": self.model.name,
            "model_version": inputs.version,
            "data_dir": config.data_dir,
            "calibration": inputs.calibration_source,
            "evaluation": inputs.eval_source,
            "labels_source": inputs.labels_source,
            "image_size": int(self.model.input_shape[1]),
            "class_names": list(inputs.class_names),
            "num_val_images": int(len(inputs.eval_images)),
            "labelled": self.labelled,
            "keras_top1": self.keras_top1,
            "io_dtype": config.io_dtype,
            "latency_runs": config.latency_runs,
            "host": host(),
            "date": datetime.date.today().isoformat(),
            "formats": self.rows,
            "recommendation": evaluate_lib.recommend(self.rows, self.keras_top1),
            "qat": self.qat_info,
            "int8_mixed": self.mixed_info,
            "diagnostics": self.diagnostics or None,
            "saved_model": self.serving,
            "calibration_audit": self.audit,
            "gpu_delegate": evaluate_lib.gpu_recommendation(self.rows),
            "config": dataclasses.asdict(config),
        }


def write_export(config: ExportConfig, inputs: Inputs, stale=()) -> dict:
    """Remove what an earlier export left (`stale`), write labels.txt and every format into `config.out`,
    evaluate each, write report.json and report.md; return the report."""
    from edge import report as report_lib

    out_dir = config.out
    for entry in stale:
        path = os.path.join(out_dir, entry)
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    keras_probs = np.asarray(inputs.model.predict(inputs.eval_images, batch_size=32, verbose=0), dtype=np.float32)
    os.makedirs(out_dir, exist_ok=True)
    files.atomic_write(os.path.join(out_dir, formats_lib.LABELS), "".join(f"{name}\n" for name in inputs.class_names))
    work = tempfile.mkdtemp(prefix=".edge-export-", dir=out_dir)
    session = ExportSession(config, inputs, keras_probs, work)
    try:
        session.write_formats()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    session.diagnose()
    report = session.report()
    files.write_json(os.path.join(out_dir, formats_lib.REPORT_JSON), report)
    files.atomic_write(os.path.join(out_dir, formats_lib.REPORT_MD), report_lib.report_markdown(report))
    return report


def audited(calibrated: bytes, images) -> tuple[bytes, dict]:
    """`edge.calibration.audit` of the recorded ranges, and the model rebuilt from the observed ones if any is wrong."""
    from edge import calibration

    result = calibration.audit(calibrated, images)
    fixed = calibration.repair(calibrated, result)
    return fixed, {
        "tensors": result["tensors"],
        "max_rel_diff": result["max_rel_diff"],
        "repaired": len(result["wrong"]),
        "wrong": [
            {k: w[k] for k in ("tensor", "op", "recorded", "observed", "rel_diff")} for w in result["wrong"][:10]
        ],
        "summary": calibration.summary(result),
    }


def serving_saved_model(model, class_names, out_dir: str, work: str) -> dict:
    """`edge.saved_model.write` into the work folder, then renamed to OUT/saved_model (never half written)."""
    from edge import saved_model

    start = time.perf_counter()
    try:
        staged = saved_model.write(model, class_names, os.path.join(work, SAVED_MODEL))
        os.replace(staged, os.path.join(out_dir, SAVED_MODEL))
    except Exception as exc:  # noqa: BLE001 - reported like a failed format; the others are still written
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {
        "dir": SAVED_MODEL,
        "signatures": [saved_model.SERVING, saved_model.BYTES],
        "seconds": round(time.perf_counter() - start, 1),
    }


def qat_model_for(model, config: ExportConfig, splits):
    """The QAT model of `model` and what the report says of it: loaded from --qat_dir, else fine-tuned on
    `splits` (the scan of --data_dir) and saved in OUT/qat."""
    from edge import qat

    if config.qat_dir:
        return qat.load(model, config.qat_dir), {"source": os.fspath(config.qat_dir)}
    if config.qat_epochs < 1 or splits is None:
        raise ValueError(
            "qat_int8 needs a QAT fine-tune: pass qat_epochs >= 1 and data_dir, or qat_dir written by "
            "`keras-effnet-qat`."
        )
    tune = qat.FineTuneConfig(
        epochs=config.qat_epochs,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        steps_per_epoch=config.steps_per_epoch,
        seed=config.seed,
    )
    qat_model, history = qat.fine_tune(model, splits, tune)
    qat_dir = os.path.join(config.out, formats_lib.QAT_SUBDIR)
    qat.save(qat_model, qat_dir, {"fine_tune": dataclasses.asdict(tune), "history": history})
    return qat_model, {"fine_tune": dataclasses.asdict(tune), "history": history}


def host() -> str:
    return f"{platform.machine()} {os.cpu_count()}-CPU host ({platform.system()})"
