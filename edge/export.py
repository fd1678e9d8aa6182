"""Export a keras_effnet model to every TFLite format, with the metadata Android's APIs read; check each one.

    keras-effnet-export --model=M/model.keras --data_dir=DIR --out=E        # a trained model and its data
    keras-effnet-export --model=M/model.keras --out=E                       # float formats only (no images)
    keras-effnet-export --model=M.keras --labels=imagenet.txt --calibration_dir=IMAGES --out=E

One conversion path serves every format (edge wraps the float model, it does not fork it): float32; float16
weights; dynamic-range int8 weights; full-integer int8 by post-training quantization (PTQ) calibrated on
images; int16x8 (16-bit activations, 8-bit weights); and the QAT model of `edge.qat`. When PTQ int8 loses more
than `MAX_TOP1_DROP_POINTS` top-1 against the float model, `int8_mixed` keeps the fewest layers in float that
bring it back (the layers ranked by TensorFlow's QuantizationDebugger).

Every file carries TFLite metadata (`edge.metadata`): the model's name and version, the input normalisation
for a float input, and the labels as an associated file, which is what MediaPipe Tasks' ImageClassifier and
the Android Task Library read. Each file is run by LiteRT on the evaluation images and compared with the Keras
float model; its latency is measured with LiteRT's CompiledModel API (what `litert-benchmark` and Android's
LiteRT run), and the ops XNNPACK does not take are named with the reason. A format that fails is recorded with
its error and the others are still written. Results: `E/report.json` and `E/report.md` (`edge.report`).

Beside the .tflite files: the calibrator's recorded ranges are audited before int8 is built (`edge.calibration`),
int8_mixed says what it keeps in float (`edge.mixed`), each file gets a GPU-delegate verdict
(`edge.gpu_delegate`), and `saved_model` writes a SavedModel for a server (`edge.saved_model`).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time

import flatbuffers
import numpy as np

from common import cli
from common import lock as folder_lock
from common.files import atomic_write
from edge import litert
from edge import metadata as metadata_lib

FORMATS = ("float32", "float16", "dynamic", "int8", "int16x8", "qat_int8")
SAVED_MODEL = "saved_model"  # not a .tflite: the serving SavedModel of `edge.saved_model`, a folder
ALL_FORMATS = FORMATS + (SAVED_MODEL,)
FLOAT_FORMATS = ("float32", "float16", "dynamic")
CALIBRATED_FORMATS = ("int8", "int16x8")
MIXED = "int8_mixed"
IO_DTYPES = ("float32", "uint8", "int8")
INT8_FORMATS = ("int8", "qat_int8", MIXED)
LABELS = "labels.txt"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
QAT_SUBDIR = "qat"
SERVING_INPUT = "images"
OUTPUT_NAME = "probabilities"
FILE_MODE = 0o644
# The recommendation ships the fastest format whose top-1 is within this many points of the Keras float model;
# int8_mixed is searched for when PTQ int8 is further away than this.
MAX_TOP1_DROP_POINTS = 1.0

FORMAT_NOTES = {
    "float32": "float32 weights and activations",
    "float16": "float16 weights, float32 compute",
    "dynamic": "int8 weights, float activations (dynamic range)",
    "int8": "full-integer int8, post-training quantization",
    "int16x8": "int16 activations, int8 weights, post-training quantization",
    "qat_int8": "full-integer int8 from quantization-aware training",
    MIXED: "post-training int8 with the fewest layers kept in float within 1 top-1 point of the Keras model",
}


def model_file(fmt: str) -> str:
    return f"model_{fmt}.tflite"


def check_formats(formats) -> tuple[str, ...]:
    if isinstance(formats, str):
        formats = [f.strip() for f in formats.split(",") if f.strip()]
    formats = tuple(formats)
    unknown = [f for f in formats if f not in ALL_FORMATS]
    if unknown or not formats:
        raise ValueError(f"formats: unknown format(s) {unknown or list(formats)!r}; allowed: {', '.join(ALL_FORMATS)}.")
    if len(set(formats)) != len(formats):
        raise ValueError(f"formats: {formats!r} lists a format twice.")
    return formats


def check_io_dtype(io_dtype: str) -> str:
    if io_dtype not in IO_DTYPES:
        raise ValueError(f"io_dtype must be one of {IO_DTYPES}, got {io_dtype!r}.")
    return io_dtype


# ------------------------------------------------------------------------------------------------ conversion


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


def _representative(images):
    images = np.asarray(images, dtype=np.float32)

    def dataset():
        for image in images:
            yield [image[None]]

    return dataset


def calibrate(saved_model_dir: str, representative) -> bytes:
    """The float model with the activation ranges of `representative` (float32 0..255 images) recorded: the
    input of `quantize_calibrated`, so that int8 and every int8_mixed candidate share one calibration."""
    import tensorflow as tf

    if representative is None or len(representative) == 0:
        raise ValueError("int8 needs calibration images (--data_dir or --calibration_dir); got none.")
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = _representative(representative)
    converter._experimental_calibrate_only = True  # the documented route of tf.lite.experimental.QuantizationDebugger
    return converter.convert()


def calibrate_float(float_tflite: bytes, representative) -> bytes:
    """`calibrate` without a second conversion: record the activation ranges on an already converted float32
    flatbuffer (`convert_saved_model(..., "float32")`).

    The converter's calibrate-only pass converts the SavedModel again and then runs this same calibrator; on
    keras_effnet graphs both routes give the same ops and tensor types (a test checks it), and skipping the
    second conversion saves a third to a half of an int8 export when the float32 file is made anyway (B7: about
    30 s of 73 s on a 2-core CPU).
    """
    from tensorflow.lite.python.optimize import calibrator

    if representative is None or len(representative) == 0:
        raise ValueError("int8 needs calibration images (--data_dir or --calibration_dir); got none.")
    prepared = calibrator.add_intermediate_tensors(float_tflite)
    return bytes(calibrator.Calibrator(prepared).calibrate(_representative(representative)))


def quantize_calibrated(calibrated: bytes, *, io_dtype: str = "float32", float_nodes=()) -> bytes:
    """Full-integer int8 from a calibrated model.

    The softmax stays in float: XNNPACK has no quantized softmax, so an int8 SOFTMAX would leave the graph's last
    op to the reference kernels (and a float softmax over int8 logits is also more precise). `io_dtype`
    float32 keeps float input and output (the QUANTIZE/DEQUANTIZE at the ends run on XNNPACK); uint8/int8
    replace them. `float_nodes`: output tensor names of ops to keep in float (int8_mixed).
    """
    import tensorflow as tf
    from tensorflow.lite.python import convert as tfl_convert
    from tensorflow.lite.python import util as tfl_util

    check_io_dtype(io_dtype)
    blob = tfl_convert.mlir_quantize(
        calibrated, fully_quantize=False, denylisted_ops=["SOFTMAX"], denylisted_nodes=list(float_nodes) or None
    )
    if io_dtype != "float32":
        blob = tfl_util.modify_model_io_type(blob, getattr(tf, io_dtype), getattr(tf, io_dtype))
    return bytes(blob)


def convert_saved_model(saved_model_dir: str, fmt: str, *, representative=None, io_dtype: str = "uint8") -> bytes:
    """The .tflite bytes of one format (no metadata).

    `representative`: float32 images (N, S, S, 3) in 0..255, needed by "int8" and "int16x8".
    `io_dtype`: the input/output type of "int8" and "qat_int8" ("float32"; "uint8": raw pixels go in unchanged,
    scale 1 zero point 0 when calibrated on 0..255 images; "int8").
    """
    import tensorflow as tf

    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}.")
    check_io_dtype(io_dtype)
    if fmt == "int8":
        return quantize_calibrated(calibrate(saved_model_dir, representative), io_dtype=io_dtype)
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
    if fmt == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif fmt == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif fmt == "int16x8":
        if representative is None or len(representative) == 0:
            raise ValueError("int16x8 needs calibration images (--data_dir or --calibration_dir); got none.")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = _representative(representative)
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
        ]
    elif fmt == "qat_int8":
        # The ranges come from the model's fake-quant nodes; no calibration set.
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if io_dtype != "float32":
            converter.inference_input_type = getattr(tf, io_dtype)
            converter.inference_output_type = getattr(tf, io_dtype)
    return converter.convert()


def float_softmax(tflite: bytes) -> bytes:
    """`tflite` with an int8 SOFTMAX that feeds a DEQUANTIZE (a float output) turned around: DEQUANTIZE the int8
    logits, then SOFTMAX in float.

    XNNPACK has no quantized softmax, so the converter's int8 SOFTMAX at the end of a QAT graph runs on the
    reference kernels (the model is not fully accelerated); and its 8-bit probabilities tie (1/256 steps), so
    two runtimes break the tie differently. A float softmax of the same dequantized logits costs nothing
    measurable. Models without that pattern are returned unchanged.
    """
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(bytearray(tflite), 0))
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    sub = model.subgraphs[0]
    ops = sub.operators
    for i, softmax in enumerate(ops):
        if codes[softmax.opcodeIndex] != schema.BuiltinOperator.SOFTMAX:
            continue
        logits, probs = int(softmax.inputs[0]), int(softmax.outputs[0])
        if sub.tensors[logits].type != schema.TensorType.INT8:
            continue
        users = [op for op in ops if probs in [int(x) for x in op.inputs]]
        if len(users) != 1 or codes[users[0].opcodeIndex] != schema.BuiltinOperator.DEQUANTIZE:
            continue
        dequantize = users[0]
        final = int(dequantize.outputs[0])
        dequantize.inputs, dequantize.outputs = [logits], [probs]
        softmax.inputs, softmax.outputs = [probs], [final]
        middle = sub.tensors[probs]
        middle.type, middle.quantization = schema.TensorType.FLOAT32, None
        j = ops.index(dequantize)
        ops[i], ops[j] = dequantize, softmax
        b = flatbuffers.Builder(len(tflite) + 1024)
        b.Finish(model.Pack(b), file_identifier=b"TFL3")
        return bytes(b.Output())
    return tflite


def convert(model, fmt: str, *, representative=None, io_dtype: str = "uint8") -> bytes:
    """`export_saved_model` then `convert_saved_model`, in a temporary directory."""
    directory = tempfile.mkdtemp(prefix="edge-savedmodel-")
    try:
        export_saved_model(model, os.path.join(directory, "model"))
        return convert_saved_model(
            os.path.join(directory, "model"), fmt, representative=representative, io_dtype=io_dtype
        )
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def with_metadata(tflite: bytes, *, name: str, version: str, class_names, fmt: str) -> bytes:
    """`tflite` with the metadata MediaPipe Tasks reads: normalisation (identity: the model takes raw 0..255
    pixels) for a float input, the labels file, name and version."""
    model = litert.TFLiteModel(tflite)
    float_input = model.input_dtype == "float32"
    blob = metadata_lib.build(
        name=name,
        version=version,
        author="keras_effnet",
        description=f"{name}, image classifier ({len(class_names)} classes), {fmt}: {FORMAT_NOTES[fmt]}. "
        f"Input: RGB, {model.input_shape[1]}x{model.input_shape[2]}, pixels 0..255.",
        input_name=SERVING_INPUT,
        output_name=OUTPUT_NAME,
        labels_file=LABELS,
        num_classes=len(class_names),
        mean=[0.0, 0.0, 0.0] if float_input else None,
        std=[1.0, 1.0, 1.0] if float_input else None,
    )
    labels = "".join(f"{c}\n" for c in class_names).encode()
    return metadata_lib.populate(tflite, blob, {LABELS: labels})


# ------------------------------------------------------------------------------------------------ evaluation


def float_ops(tflite) -> list[str]:
    """Ops of a quantized model that compute in float, besides the (de)quantization at its ends and the float
    softmax that `quantize_calibrated` keeps on purpose (the sign of a layer left unquantized)."""
    interp = litert._plain_interpreter(tflite)
    details = {t["index"]: t for t in interp.get_tensor_details()}
    out = []
    for op in interp._get_ops_details():
        if op["op_name"] in ("QUANTIZE", "DEQUANTIZE", "SOFTMAX"):
            continue
        outs = [details[i] for i in op["outputs"] if i in details]
        if any(np.dtype(t["dtype"]) == np.float32 for t in outs):
            out.append(op["op_name"])
    return sorted(set(out))


def evaluate_tflite(
    path, images, labels, keras_probs, *, threads: int = 1, latency_runs: int = 50, warmup: int = 5
) -> dict:
    """Top-1 (when `labels` is given), agreement of its top-1 with the Keras float model, largest probability
    difference, op counts, the ops XNNPACK does not take, and CompiledModel latency."""
    model = litert.TFLiteModel(path, num_threads=threads)
    probs = model.predict(images)
    top1 = probs.argmax(axis=1)
    keras_top1 = np.asarray(keras_probs).argmax(axis=1)
    timing = litert.compiled_latency(path, num_threads=threads, runs=latency_runs, warmup=warmup)
    row = {
        "agreement_with_keras": float((top1 == keras_top1).mean()),
        "max_prob_diff": float(np.abs(probs - keras_probs).max()),
        "latency_ms": timing["median_ms"],
        "latency_p5_ms": timing["p5_ms"],
        "latency_p95_ms": timing["p95_ms"],
        "latency_threads": int(threads),
        "latency_api": timing["api"],
        "fully_accelerated": timing["fully_accelerated"],
        "not_on_xnnpack": litert.undelegated_ops(path, num_threads=threads),
        "op_counts": litert.op_counts(path),
        "input_dtype": model.input_dtype,
        "output_dtype": model.output_dtype,
    }
    if labels is not None:
        row["top1"] = float((top1 == np.asarray(labels)).mean())
    return row


def _quality(row: dict, labelled: bool) -> float:
    return row["top1"] if labelled else row["agreement_with_keras"]


def recommend(rows: list[dict], keras_top1: float | None) -> dict:
    """The fastest format whose top-1 is within MAX_TOP1_DROP_POINTS of the Keras float model (ties: smaller
    file); when none is, the most accurate one. Without labelled data (`keras_top1` None) the agreement of
    its top-1 with the Keras model stands in for top-1 (the Keras model counts as 100%)."""
    # An int8_mixed file with most of its MACs in float is a float model in an int8 wrapper: never shipped as int8.
    ok = [r for r in rows if not r.get("error") and r.get("mixed", {}).get("is_int8", True)]
    if not ok:
        return {"format": None, "reason": "every format failed; see the errors."}
    labelled = keras_top1 is not None
    reference = keras_top1 if labelled else 1.0
    what = (
        f"top-1 point of the Keras float model ({keras_top1:.2%})"
        if labelled
        else "point of agreement with the Keras float model (no labelled data: accuracy not measured)"
    )
    close = [r for r in ok if (reference - _quality(r, labelled)) * 100 <= MAX_TOP1_DROP_POINTS + 1e-9]
    if close:
        best = min(close, key=lambda r: (r["latency_ms"], r["bytes"]))
        measure = f"top-1 {best['top1']:.2%}" if labelled else f"agreement {best['agreement_with_keras']:.2%}"
        return {
            "format": best["format"],
            "file": best["file"],
            "reason": (
                f"fastest ({best['latency_ms']:.2f} ms at {best['latency_threads']} thread(s)) of the formats within "
                f"{MAX_TOP1_DROP_POINTS:g} {what}; {measure}, {best['bytes'] / 1e6:.2f} MB."
            ),
        }
    best = max(ok, key=lambda r: (_quality(r, labelled), -r["latency_ms"]))
    return {
        "format": best["format"],
        "file": best["file"],
        "reason": (f"no format is within {MAX_TOP1_DROP_POINTS:g} {what}; this is the most accurate."),
    }


# ------------------------------------------------------------------------------------------------ inputs


@dataclasses.dataclass(frozen=True)
class Inputs:
    """Everything export needs, checked and loaded before anything is written."""

    model: object
    model_path: str
    class_names: tuple[str, ...]
    labels_source: str
    eval_images: np.ndarray
    eval_labels: np.ndarray | None  # None: the images are not labelled (no accuracy)
    eval_source: str
    representative: np.ndarray | None
    calibration_source: str | None
    version: str


def read_labels(path: str) -> tuple[str, ...]:
    with open(path, encoding="utf-8") as f:
        names = tuple(line.strip() for line in f if line.strip())
    if not names:
        raise ValueError(f"labels: {path!r} holds no class name (expected one per line).")
    return names


def _file_version(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()[:12]


def load_inputs(config: "ExportConfig") -> Inputs:
    """Load and check the model, labels and images of `config`; raises ValueError/FileNotFoundError naming the
    flag for anything a user must fix."""
    from edge import data as data_lib

    model = data_lib.load_model(config.model)
    image_size = int(model.input_shape[1])
    classes = int(model.output_shape[-1])
    beside = os.path.join(os.path.dirname(os.path.abspath(config.model)), LABELS)
    splits = data_lib.load_splits(config.data_dir) if config.data_dir else None
    if config.labels:
        names, source = read_labels(config.labels), os.fspath(config.labels)
    elif os.path.isfile(beside):
        names, source = read_labels(beside), beside
    elif splits is not None:
        names, source = tuple(splits.class_names), f"the class folders of {config.data_dir}"
    else:
        raise ValueError(
            f"labels: the model has no {LABELS} beside it; give --labels=FILE (one class name per "
            f"line, {classes} lines) or --data_dir with one folder per class."
        )
    if len(names) != classes:
        raise ValueError(
            f"labels: {source} names {len(names)} classes but the model {config.model!r} has {classes} outputs."
        )
    if len(set(names)) != len(names):
        raise ValueError(f"labels: {source} names a class twice.")
    eval_labels = None
    if splits is not None:
        unknown = [c for c in splits.class_names if c not in names]
        if unknown:
            raise ValueError(
                f"data_dir: {config.data_dir!r} has {len(splits.class_names)} classes {list(splits.class_names)} but "
                f"the model {config.model!r} has {classes} outputs named by {source}; not among them: {unknown[:5]}."
            )
        val = data_lib.validation_set(config.data_dir, image_size, limit=config.max_val_images)
        index = {c: i for i, c in enumerate(names)}
        eval_images = val.images
        eval_labels = np.asarray([index[val.class_names[y]] for y in val.labels], dtype=np.int64)
        eval_source = f"{len(eval_labels)} labelled validation images of {config.data_dir}"
    representative, cal_source = None, None
    if config.calibration_dir:
        representative = data_lib.folder_images(
            config.calibration_dir, config.num_calibration, image_size, seed=config.seed
        )
        cal_source = f"{len(representative)} images under {config.calibration_dir}"
    elif splits is not None:
        representative = data_lib.calibration_images(
            config.data_dir, config.num_calibration, image_size, seed=config.seed
        )
        cal_source = f"{len(representative)} training images of {config.data_dir}"
    if eval_labels is None:
        if representative is not None:
            eval_images, eval_source = representative, f"the {cal_source} (unlabelled: agreement only)"
        else:
            rng = np.random.default_rng(config.seed)
            eval_images = rng.uniform(0, 255, size=(8, image_size, image_size, 3)).astype(np.float32)
            eval_source = "8 random images (no images given: agreement with Keras only)"
    return Inputs(
        model=model,
        model_path=os.fspath(config.model),
        class_names=names,
        labels_source=source,
        eval_images=eval_images,
        eval_labels=eval_labels,
        eval_source=eval_source,
        representative=representative,
        calibration_source=cal_source,
        version=config.model_version or _file_version(config.model),
    )


def _is_owned(name: str) -> bool:
    return (
        name in (LABELS, REPORT_JSON, REPORT_MD, QAT_SUBDIR, SAVED_MODEL)
        or (name.startswith("model_") and name.endswith(".tflite"))
        or name.startswith((".edge-export-", f".{REPORT_JSON}.", f".{REPORT_MD}.", f".{LABELS}.", ".model_"))
    )


def check_out_dir(out_dir: str) -> list[str]:
    """The entries of `out_dir` that an earlier export wrote (to remove before writing); raises ValueError when
    it holds anything else (an export never mixes its files with others)."""
    if not os.path.isdir(out_dir):
        return []
    entries = sorted(e for e in os.listdir(out_dir) if e != folder_lock.LOCK_NAME)  # held while we run
    foreign = [e for e in entries if not _is_owned(e)]
    if foreign:
        raise ValueError(
            f"out: {out_dir!r} holds files that edge.export did not write ({', '.join(foreign[:3])}"
            f"{', ...' if len(foreign) > 3 else ''}); give an empty or new folder."
        )
    return entries


def _write(path: str, data) -> str:
    atomic_write(path, data)
    os.chmod(path, FILE_MODE)
    return path


def _host() -> str:
    return f"{platform.machine()} {os.cpu_count()}-CPU host ({platform.system()})"


# ------------------------------------------------------------------------------------------------ export


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """The flags of `keras-effnet-export`, and the keywords of `export_all`."""

    model: str | None = cli.flag(
        None,
        "A .keras model built by keras_effnet (labels.txt beside it names the classes).",
        group="input",
        required=True,
    )
    data_dir: str | None = cli.flag(
        None,
        "Folder with train/<class>/ and val/<class>/ images: calibration from train, accuracy on val.",
        group="input",
    )
    calibration_dir: str | None = cli.flag(
        None,
        "Any folder of images, labelled or not, to calibrate the int8 "
        "formats (default: the train images of --data_dir).",
        group="input",
    )
    labels: str | None = cli.flag(
        None,
        "Class names, one per line (default: labels.txt beside the model, then the class folders of --data_dir).",
        group="input",
    )
    out: str | None = cli.flag(
        None,
        "Output folder: one .tflite per format, labels.txt, report.json, report.md.",
        group="output",
        required=True,
    )
    formats: tuple[str, ...] = cli.flag(
        (), "Formats, comma-separated (default: every one the inputs allow).", group="output", choices=ALL_FORMATS
    )
    io_dtype: str = cli.flag(
        "float32",
        "Input/output type of int8 and qat_int8 (float32 runs fully on XNNPACK).",
        group="output",
        choices=IO_DTYPES,
    )
    model_version: str | None = cli.flag(
        None, "Version written into the metadata (default: sha256 of the model file).", group="output"
    )
    mixed_int8: bool = cli.flag(
        True,
        f"When int8 loses more than {MAX_TOP1_DROP_POINTS:g} top-1 point, also "
        f"write {MIXED} (fewest layers in float within it).",
        group="output",
    )
    num_calibration: int = cli.flag(100, "Images used to calibrate the int8 and int16x8 formats.", group="data")
    max_val_images: int | None = cli.flag(None, "Evaluate on at most this many validation images.", group="data")
    qat_epochs: int = cli.flag(0, "QAT fine-tune epochs before qat_int8 (0: use --qat_dir).", group="qat")
    qat_dir: str | None = cli.flag(None, "A folder written by keras-effnet-qat to convert as qat_int8.", group="qat")
    batch_size: int = cli.flag(32, "Global batch size of the QAT fine-tune.", group="qat")
    learning_rate: float = cli.flag(1e-4, "Adam learning rate of the QAT fine-tune.", group="qat")
    steps_per_epoch: int | None = cli.flag(None, "Limit the QAT fine-tune steps per epoch.", group="qat")
    threads: int = cli.flag(1, "CPU threads for the latency measurement.", group="timing")
    latency_runs: int = cli.flag(50, "Timed runs per format (after 5 warm-up runs).", group="timing")
    diagnostics: bool = cli.flag(False, "Per-layer float-vs-int8 error of the int8 format.", group="output")
    audit_ranges: bool = cli.flag(
        True,
        "Check the calibrator's activation ranges against LiteRT's reference kernels "
        "and build int8 from the observed ones where they differ.",
        group="data",
    )
    seed: int = cli.flag(0, "Seed for the calibration-image choice and the QAT shuffle.", group="data")

    def __post_init__(self):
        for name in ("num_calibration", "threads", "latency_runs", "batch_size"):
            cli.positive(name, getattr(self, name))
        for name in ("max_val_images", "steps_per_epoch"):
            cli.positive(name, getattr(self, name), allow_none=True)
        cli.positive("learning_rate", self.learning_rate, kind="number")
        if self.qat_epochs < 0:
            raise cli.UsageError("qat_epochs", self.qat_epochs, "an integer >= 0")
        if len(set(self.formats)) != len(self.formats):
            raise cli.UsageError("formats", ",".join(self.formats), "each format at most once")
        unknown = [f for f in self.formats if f not in ALL_FORMATS]
        if unknown:
            raise cli.UsageError("formats", ",".join(self.formats), "formats among " + ", ".join(ALL_FORMATS))
        if self.io_dtype not in IO_DTYPES:
            raise cli.UsageError("io_dtype", self.io_dtype, "one of " + ", ".join(IO_DTYPES))

    def chosen_formats(self) -> tuple[str, ...]:
        """The formats to write: those asked for, else every one the inputs allow."""
        if self.formats:
            return self.formats
        out = list(FLOAT_FORMATS)
        if self.data_dir or self.calibration_dir:
            out += CALIBRATED_FORMATS
        if self.data_dir and (self.qat_epochs or self.qat_dir):
            out.append("qat_int8")
        return tuple(out) + (SAVED_MODEL,)


def check_config(config: ExportConfig) -> None:
    """Every flag-level check that needs no model loaded; raises cli.UsageError."""
    cli.require_file("model", config.model, what="a .keras model file")
    if config.data_dir:
        cli.require_dir("data_dir", config.data_dir, what="a folder with train/<class>/ and val/<class>/ images")
    if config.calibration_dir:
        cli.require_dir("calibration_dir", config.calibration_dir, what="a folder of images")
    if config.labels:
        cli.require_file("labels", config.labels, what="a text file with one class name per line")
    if config.qat_dir:
        cli.require_dir("qat_dir", config.qat_dir, what="a folder written by keras-effnet-qat")
    cli.require_writable_dir("out", config.out)
    formats = config.chosen_formats()
    needs_images = [f for f in formats if f in CALIBRATED_FORMATS]
    if needs_images and not (config.data_dir or config.calibration_dir):
        raise cli.UsageError(
            "formats",
            ",".join(formats),
            f"formats without {', '.join(needs_images)}, or --data_dir / --calibration_dir with calibration images",
        )
    if "qat_int8" in formats and not config.data_dir and not config.qat_dir:
        raise cli.UsageError("formats", ",".join(formats), "qat_int8 with --data_dir (QAT fine-tune data) or --qat_dir")


def export_all(model_path: str, data_dir: str | None, out_dir: str, **kwargs) -> dict:
    """Write one .tflite per format into `out_dir`, evaluate each, write report.json/report.md; return the report.

    Keywords: the ExportConfig fields (`formats` also as a comma-separated string). Raises ValueError or
    FileNotFoundError, before writing anything, for a missing/corrupt/foreign model, a missing or empty data
    folder, labels that do not match the model, an unknown format, or an `out_dir` holding other files; a
    failure inside one format is recorded in its row instead.
    """
    if isinstance(kwargs.get("formats"), str):
        kwargs["formats"] = check_formats(kwargs["formats"])
    elif "formats" in kwargs:
        kwargs["formats"] = check_formats(kwargs["formats"])
    if "io_dtype" in kwargs:
        check_io_dtype(kwargs["io_dtype"])
    config = ExportConfig(
        model=os.fspath(model_path),
        data_dir=os.fspath(data_dir) if data_dir else None,
        out=os.fspath(out_dir),
        **kwargs,
    )
    inputs = load_inputs(config)
    with folder_lock.exclusive(config.out, command="keras-effnet-export"):
        return write_export(config, inputs, _stale_entries(config))


def _stale_entries(config: ExportConfig) -> list[str]:
    """What an earlier export left in --out, to remove (under the folder's lock); refuses foreign files."""
    stale = check_out_dir(config.out)
    if config.qat_dir and os.path.abspath(config.qat_dir) == os.path.abspath(os.path.join(config.out, QAT_SUBDIR)):
        stale = [e for e in stale if e != QAT_SUBDIR]
    return stale


def write_export(config: ExportConfig, inputs: Inputs, stale=()) -> dict:
    out_dir = config.out
    model = inputs.model
    for entry in stale:
        path = os.path.join(out_dir, entry)
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    labelled = inputs.eval_labels is not None
    keras_probs = np.asarray(model.predict(inputs.eval_images, batch_size=32, verbose=0), dtype=np.float32)
    keras_top1 = float((keras_probs.argmax(axis=1) == inputs.eval_labels).mean()) if labelled else None

    os.makedirs(out_dir, exist_ok=True)
    _write(os.path.join(out_dir, LABELS), "".join(f"{name}\n" for name in inputs.class_names))
    work = tempfile.mkdtemp(prefix=".edge-export-", dir=out_dir)
    rows, qat_info, diagnostics, mixed_info, serving = [], None, {}, None, None
    state = {}

    def add_row(fmt, make_blob):
        file = model_file(fmt)
        row = {"format": fmt, "file": file}
        start = time.perf_counter()
        try:
            blob = with_metadata(
                make_blob(), name=model.name, version=inputs.version, class_names=inputs.class_names, fmt=fmt
            )
            path = _write(os.path.join(out_dir, file), blob)
            row["bytes"] = len(blob)
            row.update(
                evaluate_tflite(
                    path,
                    inputs.eval_images,
                    inputs.eval_labels,
                    keras_probs,
                    threads=config.threads,
                    latency_runs=config.latency_runs,
                )
            )
            if fmt in INT8_FORMATS:
                row["float_ops"] = float_ops(path)
            row["gpu_delegate"] = _gpu_verdict(blob)
        except Exception as exc:  # noqa: BLE001 - one format's failure is reported, the others go on
            row["error"] = f"{type(exc).__name__}: {exc}"
        row["seconds"] = round(time.perf_counter() - start, 1)
        rows.append(row)
        return row

    def float_saved_model():
        if "float_sm" not in state:
            state["float_sm"] = export_saved_model(model, os.path.join(work, "float"))
        return state["float_sm"]

    def calibrated():
        if "calibrated" not in state:
            state["calibrated"] = calibrate(float_saved_model(), inputs.representative)
            if config.audit_ranges:
                state["calibrated"], state["audit"] = _audited(state["calibrated"], inputs.representative)
        return state["calibrated"]

    def qat_blob():
        nonlocal qat_info
        qat_model, qat_info = _qat_model(model, config, out_dir)
        saved = export_saved_model(qat_model, os.path.join(work, "qat"))
        return float_softmax(convert_saved_model(saved, "qat_int8", io_dtype=config.io_dtype))

    try:
        for fmt in config.chosen_formats():
            if fmt == SAVED_MODEL:
                serving = _serving_saved_model(model, inputs.class_names, out_dir, work)
            elif fmt == "int8":
                add_row(fmt, lambda: quantize_calibrated(calibrated(), io_dtype=config.io_dtype))
            elif fmt == "qat_int8":
                add_row(fmt, qat_blob)
            else:
                add_row(
                    fmt,
                    lambda fmt=fmt: convert_saved_model(
                        float_saved_model(), fmt, representative=inputs.representative, io_dtype=config.io_dtype
                    ),
                )
        int8 = next((r for r in rows if r["format"] == "int8" and not r.get("error")), None)
        if (
            config.mixed_int8
            and labelled
            and int8 is not None
            and (keras_top1 - int8["top1"]) * 100 > MAX_TOP1_DROP_POINTS
        ):
            mixed_info = _mixed_int8(config, inputs, keras_top1, calibrated(), out_dir, add_row, rows)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    if config.diagnostics:
        from edge import diagnostics as diag

        ref = os.path.join(out_dir, model_file("float32"))
        for row in rows:
            if row["format"] == "int8" and not row.get("error") and os.path.isfile(ref):
                try:
                    diagnostics["int8"] = diag.layer_errors(
                        ref, os.path.join(out_dir, row["file"]), inputs.eval_images[:8]
                    )
                except Exception as exc:  # noqa: BLE001 - diagnostics are optional; say why they are missing
                    diagnostics["int8"] = f"not available: {type(exc).__name__}: {exc}"

    report = {
        "model": inputs.model_path,
        "model_name": model.name,
        "model_version": inputs.version,
        "data_dir": config.data_dir,
        "calibration": inputs.calibration_source,
        "evaluation": inputs.eval_source,
        "labels_source": inputs.labels_source,
        "image_size": int(model.input_shape[1]),
        "class_names": list(inputs.class_names),
        "num_val_images": int(len(inputs.eval_images)),
        "labelled": labelled,
        "keras_top1": keras_top1,
        "io_dtype": config.io_dtype,
        "latency_runs": config.latency_runs,
        "host": _host(),
        "date": datetime.date.today().isoformat(),
        "formats": rows,
        "recommendation": recommend(rows, keras_top1),
        "qat": qat_info,
        "int8_mixed": mixed_info,
        "diagnostics": diagnostics or None,
        "saved_model": serving,
        "calibration_audit": state.get("audit"),
        "gpu_delegate": _gpu_recommendation(rows),
        "config": dataclasses.asdict(config),
    }
    _write(os.path.join(out_dir, REPORT_JSON), json.dumps(report, indent=1) + "\n")
    from edge import report as report_lib

    _write(os.path.join(out_dir, REPORT_MD), report_lib.report_markdown(report))
    return report


def _mixed_int8(config, inputs, keras_top1, calibrated, out_dir, add_row, rows) -> dict:
    """`edge.mixed.search`, then write the file as int8_mixed with what it keeps in float beside int8 and float32."""
    from edge import mixed

    float_path = os.path.join(out_dir, model_file("float32"))
    if not os.path.isfile(float_path):
        return {"error": "int8_mixed needs the float32 format in --formats (the debugger compares against it)."}
    with open(float_path, "rb") as f:
        float_blob = f.read()

    def quantize(float_nodes):
        return quantize_calibrated(calibrated, io_dtype=config.io_dtype, float_nodes=float_nodes)

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
        keras_top1=keras_top1,
    )
    blob = info.pop("blob", None)
    if blob is None:
        return info
    row = add_row(MIXED, lambda: blob)
    sizes = {r["format"]: r.get("bytes") for r in rows if r["format"] in ("int8", "float32", MIXED)}
    info = mixed.account(info, blob, sizes)
    row["mixed"] = {k: info[k] for k in ("share", "is_int8", "summary")}
    return info


def _audited(calibrated: bytes, images) -> tuple[bytes, dict]:
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


def _serving_saved_model(model, class_names, out_dir: str, work: str) -> dict:
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


def _gpu_verdict(blob: bytes) -> dict:
    from edge import gpu_delegate

    try:
        return gpu_delegate.verdict(blob)
    except Exception as exc:  # noqa: BLE001 - the verdict is advice; its failure does not fail the format
        return {"error": f"{type(exc).__name__}: {exc}"}


def _gpu_recommendation(rows) -> dict:
    from edge import gpu_delegate

    return gpu_delegate.recommend(
        {r["format"]: r["gpu_delegate"] for r in rows if not r.get("error") and not r["gpu_delegate"].get("error")}
    )


def _qat_model(model, config: ExportConfig, out_dir: str):
    from edge import qat

    if config.qat_dir:
        return qat.load(model, config.qat_dir), {"source": os.fspath(config.qat_dir)}
    if config.qat_epochs < 1 or not config.data_dir:
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
    qat_model, history = qat.fine_tune(model, config.data_dir, tune)
    qat.save(qat_model, os.path.join(out_dir, QAT_SUBDIR), {"fine_tune": dataclasses.asdict(tune), "history": history})
    for root, _, names in os.walk(os.path.join(out_dir, QAT_SUBDIR)):
        for name in names:
            os.chmod(os.path.join(root, name), FILE_MODE)
    return qat_model, {"fine_tune": dataclasses.asdict(tune), "history": history}


# ------------------------------------------------------------------------------------------------ command line


def run(config: ExportConfig) -> int:
    """Check every input, export, print the table; exit code 1 when no format succeeded."""
    check_config(config)
    from edge import report as report_lib

    with folder_lock.exclusive(config.out, command="keras-effnet-export"):
        try:
            inputs = load_inputs(config)
            stale = _stale_entries(config)
        except (ValueError, FileNotFoundError) as exc:
            raise cli.UsageError(str(exc)) from None
        report = write_export(config, inputs, stale)
    print(report_lib.format_table(report))
    rec = report["recommendation"]
    print(report_lib.gpu_line(report).replace("**", ""))
    if report.get("saved_model"):
        print(report_lib.saved_model_line(report).replace("`", ""))
    if report.get("calibration_audit"):
        print(report["calibration_audit"]["summary"])
    if (report.get("int8_mixed") or {}).get("summary"):
        print(f"\n{MIXED}: {report['int8_mixed']['summary']}")
    print(f"\nrecommendation: {rec.get('file') or '-'}: {rec['reason']}")
    print(f"report: {os.path.join(config.out, REPORT_MD)}")
    outputs = report["formats"] + ([report["saved_model"]] if report.get("saved_model") else [])
    if all(r.get("error") for r in outputs):
        print("error: no format was exported; see the errors above", file=sys.stderr)
        return 1
    return 0


def main(argv=None) -> int:
    return cli.main(
        ExportConfig,
        run,
        argv,
        prog="keras-effnet-export",
        description="Export a keras_effnet model to every TFLite format with MediaPipe/Android "
        "metadata, check each on images and say which to ship.",
    )


if __name__ == "__main__":
    cli.run_main(main)
