"""Export a keras_effnet model to every TFLite format, check each on the validation images, say which to ship.

    python -m edge.export --model=M/model.keras --data_dir=DIR --out=E \
        --formats=float32,float16,dynamic,int8,qat_int8 [--qat_epochs=N | --qat_dir=Q] [--io_dtype=uint8]

One conversion function (`convert_saved_model`) serves every format (STYLE principle 9: edge wraps the float
model, it does not fork it): float32; float16 weights; dynamic-range int8 weights; full-integer int8 by
post-training quantization calibrated on training images (uint8 or int8 input and output); and the QAT model
of `edge.qat` converted to full-integer int8. Every .tflite is run by the LiteRT interpreter on the validation
images and compared with the Keras float model (issue 4). A format whose conversion or evaluation fails is
recorded with its error; the others are still written. The class names travel as `labels.txt` beside the
models (the maintained TFLite metadata writer, tflite-support, is not a dependency and has no release for this
TensorFlow). Results: `E/report.json` and `E/report.md`, written atomically.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import shutil
import tempfile
import time

import numpy as np

from edge import litert
from training.files import atomic_write

FORMATS = ("float32", "float16", "dynamic", "int8", "qat_int8")
IO_DTYPES = ("uint8", "int8")
INT8_FORMATS = ("int8", "qat_int8")
LABELS = "labels.txt"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
SERVING_INPUT = "images"
# The recommendation ships the fastest format whose top-1 is within this many points of the Keras float model
# (the issue's QAT target).
MAX_TOP1_DROP_POINTS = 1.0

FORMAT_NOTES = {
    "float32": "float32 weights and activations",
    "float16": "float16 weights, float32 compute",
    "dynamic": "int8 weights, float activations (dynamic range)",
    "int8": "full-integer int8, post-training quantization",
    "qat_int8": "full-integer int8 from quantization-aware training",
}


def check_formats(formats) -> tuple[str, ...]:
    if isinstance(formats, str):
        formats = [f.strip() for f in formats.split(",") if f.strip()]
    formats = tuple(formats)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ValueError(f"formats: unknown format(s) {unknown or formats!r}; allowed: {', '.join(FORMATS)}.")
    if len(set(formats)) != len(formats):
        raise ValueError(f"formats: {formats!r} lists a format twice.")
    return formats


def check_io_dtype(io_dtype: str) -> str:
    if io_dtype not in IO_DTYPES:
        raise ValueError(f"io_dtype must be one of {IO_DTYPES}, got {io_dtype!r}.")
    return io_dtype


def export_saved_model(model, directory: str) -> str:
    """A SavedModel of `model` with one batch-1 signature `serving_default(images)`, for the converter.

    Keras 3 models go through `keras.export.ExportArchive` (TFLiteConverter.from_keras_model does not accept
    them); a tf_keras (QAT) model is wrapped in a bare `tf.Module`, which skips tf_keras's per-layer SavedModel
    tracing (2x faster on the QAT graph). Batch 1 is fixed so that the SE Reshape folds to a constant shape.
    """
    import tensorflow as tf

    from keras_effnet import flavours

    shape = [1, *[int(d) for d in model.input_shape[1:]]]
    spec = tf.TensorSpec(shape, tf.float32, name=SERVING_INPUT)
    if isinstance(model, flavours.tf_keras().Model):
        module = tf.Module()
        module.variables_ = list(model.variables)
        module.serve = tf.function(lambda images: model(images, training=False), input_signature=[spec])
        tf.saved_model.save(module, directory, signatures=module.serve.get_concrete_function())
        return directory
    keras = flavours.keras3()
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", lambda images: model(images, training=False), input_signature=[spec])
    archive.write_out(directory, verbose=False)
    return directory


def convert_saved_model(saved_model_dir: str, fmt: str, *, representative=None, io_dtype: str = "uint8") -> bytes:
    """The .tflite bytes of one format.

    `representative`: float32 images (N, S, S, 3) in 0..255, needed by "int8" (post-training calibration).
    `io_dtype`: the input/output type of the full-integer formats ("uint8": raw pixels go in unchanged,
    scale 1 zero point 0 when calibrated on 0..255 images; "int8").
    """
    import tensorflow as tf

    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}.")
    check_io_dtype(io_dtype)
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
    if fmt == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif fmt == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif fmt == "int8":
        if representative is None or len(representative) == 0:
            raise ValueError("int8 needs a representative set (training images) to calibrate; got none.")
        images = np.asarray(representative, dtype=np.float32)

        def dataset():
            for image in images:
                yield [image[None]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = getattr(tf, io_dtype)
        converter.inference_output_type = getattr(tf, io_dtype)
    elif fmt == "qat_int8":
        # The ranges come from the model's fake-quant nodes; no calibration set.
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.inference_input_type = getattr(tf, io_dtype)
        converter.inference_output_type = getattr(tf, io_dtype)
    return converter.convert()


def convert(model, fmt: str, *, representative=None, io_dtype: str = "uint8") -> bytes:
    """`export_saved_model` then `convert_saved_model`, in a temporary directory."""
    directory = tempfile.mkdtemp(prefix="edge-savedmodel-")
    try:
        export_saved_model(model, os.path.join(directory, "model"))
        return convert_saved_model(os.path.join(directory, "model"), fmt, representative=representative, io_dtype=io_dtype)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def float_ops(tflite) -> list[str]:
    """Ops of a quantized model that still compute in float (the sign of a layer left unquantized)."""
    model = litert.TFLiteModel(tflite)
    details = {t["index"]: t for t in model.interpreter.get_tensor_details()}
    out = []
    for op in model.interpreter._get_ops_details():
        if op["op_name"] in ("QUANTIZE", "DEQUANTIZE"):
            continue
        outs = [details[i] for i in op["outputs"] if i in details]
        if any(np.dtype(t["dtype"]) == np.float32 for t in outs):
            out.append(op["op_name"])
    return sorted(set(out))


def evaluate_tflite(path, images, labels, keras_probs, *, threads: int = 1, latency_runs: int = 20,
                    warmup: int = 3) -> dict:
    """Top-1, agreement of its top-1 with the Keras float model, largest probability difference, latency."""
    model = litert.TFLiteModel(path, num_threads=threads)
    probs = model.predict(images)
    labels = np.asarray(labels)
    top1 = probs.argmax(axis=1)
    keras_top1 = np.asarray(keras_probs).argmax(axis=1)
    timing = litert.latency_stats(model.time_invokes(images[0], runs=latency_runs, warmup=warmup))
    return {
        "top1": float((top1 == labels).mean()),
        "agreement_with_keras": float((top1 == keras_top1).mean()),
        "max_prob_diff": float(np.abs(probs - keras_probs).max()),
        "latency_ms": timing["median_ms"],
        "latency_p10_ms": timing["p10_ms"],
        "latency_p90_ms": timing["p90_ms"],
        "latency_threads": int(threads),
        "input_dtype": model.input_dtype,
        "output_dtype": model.output_dtype,
    }


def recommend(rows: list[dict], keras_top1: float) -> dict:
    """The fastest format whose top-1 is within MAX_TOP1_DROP_POINTS of the Keras float model (ties: smaller file);
    when none is, the most accurate one."""
    ok = [r for r in rows if not r.get("error")]
    if not ok:
        return {"format": None, "reason": "every format failed; see the errors."}
    close = [r for r in ok if (keras_top1 - r["top1"]) * 100 <= MAX_TOP1_DROP_POINTS + 1e-9]
    if close:
        best = min(close, key=lambda r: (r["latency_ms"], r["bytes"]))
        return {"format": best["format"], "file": best["file"], "reason": (
            f"fastest ({best['latency_ms']:.2f} ms at {best['latency_threads']} thread(s)) of the formats within "
            f"{MAX_TOP1_DROP_POINTS:g} top-1 point of the Keras float model ({keras_top1:.2%}); "
            f"top-1 {best['top1']:.2%}, {best['bytes'] / 1e6:.2f} MB.")}
    best = max(ok, key=lambda r: (r["top1"], -r["latency_ms"]))
    return {"format": best["format"], "file": best["file"], "reason": (
        f"no format is within {MAX_TOP1_DROP_POINTS:g} top-1 point of the Keras float model ({keras_top1:.2%}); "
        f"this is the most accurate (top-1 {best['top1']:.2%}).")}


def format_table(report: dict) -> str:
    """The report's formats as a Markdown table (what `make demo` prints)."""
    lines = [
        "| format | file | MB | top-1 | agree w/ Keras | max prob diff | latency ms (p10-p90) | I/O | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["formats"]:
        if r.get("error"):
            lines.append(f"| {r['format']} | {r.get('file') or '-'} | - | - | - | - | - | - | FAILED: {_one_line(r['error'])} |")
            continue
        note = FORMAT_NOTES[r["format"]]
        if r.get("float_ops"):
            note += f"; float ops left: {', '.join(r['float_ops'])}"
        lines.append(
            f"| {r['format']} | {r['file']} | {r['bytes'] / 1e6:.2f} | {r['top1']:.2%} | {r['agreement_with_keras']:.2%} "
            f"| {r['max_prob_diff']:.2g} | {r['latency_ms']:.2f} ({r['latency_p10_ms']:.2f}-{r['latency_p90_ms']:.2f}) "
            f"| {r['input_dtype']}/{r['output_dtype']} | {note} |"
        )
    return "\n".join(lines)


def report_markdown(report: dict) -> str:
    rec = report["recommendation"]
    ship = f"**Ship `{rec['file']}`** ({rec['format']}): {rec['reason']}" if rec.get("format") else rec["reason"]
    lines = [
        f"# TFLite export of {report['model_name']}",
        "",
        f"Model `{report['model']}`, {report['image_size']} px, {len(report['class_names'])} classes; "
        f"{report['num_val_images']} validation images from `{report['data_dir']}`; Keras float top-1 "
        f"{report['keras_top1']:.2%}. Latency: LiteRT interpreter (XNNPACK), batch 1, median of "
        f"{report['latency_runs']} runs on {report['host']}, {report['date']}. Labels: `{LABELS}`.",
        "",
        format_table(report),
        "",
        ship,
        "",
    ]
    if report.get("qat"):
        lines += [f"QAT: {json.dumps(report['qat'], sort_keys=True)}", ""]
    if report.get("diagnostics"):
        lines += ["## int8 per-layer error (largest first)", ""]
        for fmt, rows in report["diagnostics"].items():
            if isinstance(rows, str):
                lines += [f"{fmt}: {rows}", ""]
                continue
            lines += [f"### {fmt}", "", "| tensor | relative RMS error | max abs error |", "|---|---|---|"]
            lines += [f"| {r['tensor']} | {r['rel_rmse']:.3g} | {r['max_abs']:.3g} |" for r in rows]
            lines.append("")
    return "\n".join(lines)


def _one_line(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split()).replace("|", "/")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _host() -> str:
    return f"{platform.machine()} {os.cpu_count()}-CPU host ({platform.system()})"


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """Everything `export_all` takes besides the three paths (see its docstring)."""

    formats: tuple[str, ...] = FORMATS
    io_dtype: str = "uint8"
    num_calibration: int = 100
    max_val_images: int | None = None
    qat_epochs: int = 0
    qat_dir: str | None = None
    qat_steps_per_epoch: int | None = None
    qat_batch_size: int = 32
    qat_learning_rate: float = 1e-4
    threads: int = 1
    latency_runs: int = 20
    diagnostics: bool = False
    seed: int = 0


def export_all(model_path: str, data_dir: str, out_dir: str, formats=FORMATS, qat_epochs: int = 0, **kwargs) -> dict:
    """Write one .tflite per format into `out_dir`, evaluate each, write report.json/report.md; return the report.

    `formats`: a subset of FORMATS (a list or a comma-separated string). `qat_epochs`: QAT fine-tune epochs before
    "qat_int8" (0 needs `qat_dir`, the output of `python -m edge.qat`). Other keywords: the ExportConfig fields.
    Raises before writing anything for a missing/corrupt/foreign model, a missing or empty data folder, an
    unknown format or io_dtype; a failure inside one format is recorded in its row instead.
    """
    from edge import data as data_lib

    config = ExportConfig(formats=check_formats(formats), qat_epochs=qat_epochs, **kwargs)
    check_io_dtype(config.io_dtype)
    if isinstance(config.num_calibration, bool) or not isinstance(config.num_calibration, int) or config.num_calibration < 1:
        raise ValueError(f"num_calibration must be an integer >= 1, got {config.num_calibration!r}.")
    model = data_lib.load_model(model_path)
    image_size = int(model.input_shape[1])
    val = data_lib.validation_set(data_dir, image_size, limit=config.max_val_images)
    classes = int(model.output_shape[-1])
    if len(val.class_names) != classes:
        raise ValueError(
            f"data_dir: {data_dir!r} has {len(val.class_names)} classes {list(val.class_names)} but the model "
            f"{model_path!r} has {classes} outputs."
        )
    representative = None
    if "int8" in config.formats:
        representative = data_lib.calibration_images(data_dir, config.num_calibration, image_size, seed=config.seed)
    keras_probs = np.asarray(model.predict(val.images, batch_size=32, verbose=0), dtype=np.float32)
    keras_top1 = float((keras_probs.argmax(axis=1) == val.labels).mean())

    os.makedirs(out_dir, exist_ok=True)
    atomic_write(os.path.join(out_dir, LABELS), "".join(f"{name}\n" for name in val.class_names))
    work = tempfile.mkdtemp(prefix=".edge-export-", dir=out_dir)
    rows, qat_info, diagnostics = [], None, {}
    try:
        float_sm = None
        for fmt in config.formats:
            file = f"model_{fmt}.tflite"
            row = {"format": fmt, "file": file}
            start = time.perf_counter()
            try:
                if fmt == "qat_int8":
                    qat_model, qat_info = _qat_model(model, data_dir, config, out_dir)
                    saved = export_saved_model(qat_model, os.path.join(work, "qat"))
                else:
                    if float_sm is None:
                        float_sm = export_saved_model(model, os.path.join(work, "float"))
                    saved = float_sm
                blob = convert_saved_model(saved, fmt, representative=representative, io_dtype=config.io_dtype)
                path = atomic_write(os.path.join(out_dir, file), blob)
                row["bytes"] = len(blob)
                row.update(evaluate_tflite(path, val.images, val.labels, keras_probs, threads=config.threads,
                                           latency_runs=config.latency_runs))
                if fmt in INT8_FORMATS:
                    row["float_ops"] = float_ops(path)
                    row["full_integer"] = not row["float_ops"]
            except Exception as exc:  # noqa: BLE001 - one format's failure is reported, the others go on
                row["error"] = f"{type(exc).__name__}: {exc}"
            row["seconds"] = round(time.perf_counter() - start, 1)
            rows.append(row)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    if config.diagnostics:
        from edge import diagnostics as diag

        ref = os.path.join(out_dir, "model_float32.tflite")
        for row in rows:
            if row["format"] == "int8" and not row.get("error"):
                try:
                    diagnostics[row["format"]] = diag.layer_errors(ref, os.path.join(out_dir, row["file"]), val.images[:8])
                except Exception as exc:  # noqa: BLE001 - diagnostics are optional; say why they are missing
                    diagnostics[row["format"]] = f"not available: {type(exc).__name__}: {exc}"

    report = {
        "model": os.fspath(model_path), "model_name": model.name, "data_dir": os.fspath(data_dir),
        "image_size": image_size, "class_names": list(val.class_names), "num_val_images": int(len(val.labels)),
        "keras_top1": keras_top1, "io_dtype": config.io_dtype, "latency_runs": config.latency_runs,
        "host": _host(), "date": datetime.date.today().isoformat(), "formats": rows,
        "recommendation": recommend(rows, keras_top1), "qat": qat_info, "diagnostics": diagnostics or None,
        "config": dataclasses.asdict(config),
    }
    atomic_write(os.path.join(out_dir, REPORT_JSON), json.dumps(report, indent=1) + "\n")
    atomic_write(os.path.join(out_dir, REPORT_MD), report_markdown(report))
    return report


def _qat_model(model, data_dir: str, config: ExportConfig, out_dir: str):
    from edge import qat

    if config.qat_dir:
        return qat.load(model, config.qat_dir), {"source": os.fspath(config.qat_dir)}
    if config.qat_epochs < 1:
        raise ValueError("qat_int8 needs a QAT fine-tune: pass qat_epochs >= 1, or qat_dir written by `python -m edge.qat`.")
    tune = qat.FineTuneConfig(
        epochs=config.qat_epochs, batch_size=config.qat_batch_size, learning_rate=config.qat_learning_rate,
        steps_per_epoch=config.qat_steps_per_epoch, seed=config.seed,
    )
    qat_model, history = qat.fine_tune(model, data_dir, tune)
    qat.save(qat_model, os.path.join(out_dir, "qat"), {"fine_tune": dataclasses.asdict(tune), "history": history})
    return qat_model, {"fine_tune": dataclasses.asdict(tune), "history": history}


def main(argv):
    from edge import flags as edge_flags

    cfg = edge_flags.export_config()
    report = export_all(cfg.model, cfg.data_dir, cfg.out, **cfg.export_kwargs())
    print(format_table(report))
    rec = report["recommendation"]
    print(f"\nrecommendation: {rec.get('file') or '-'}: {rec['reason']}")
    print(f"report: {os.path.join(cfg.out, REPORT_MD)}")


if __name__ == "__main__":
    from absl import app

    from edge import flags as _flags  # noqa: F401  (defines the flags)

    app.run(main)
