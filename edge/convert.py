"""Conversion: a keras_effnet model to the .tflite bytes of each format, and the metadata every file carries.

One conversion path serves every format (edge wraps the float model, it does not fork it): a batch-1 SavedModel
(`export_saved_model`), then TensorFlow's converter for float32, float16, dynamic range, int16x8 and the QAT
model. Full-integer int8 is a calibrated model (`calibrate` on the SavedModel, or `calibrate_float` on the
float32 flatbuffer: the same graph, one converter pass fewer) quantized by the MLIR quantizer
(`quantize_calibrated`), so that int8 and every int8_mixed candidate share one calibration.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import flatbuffers
import numpy as np

from edge import formats as formats_lib
from edge import litert
from edge import metadata as metadata_lib

SERVING_INPUT = "images"
OUTPUT_NAME = "probabilities"
_FLOAT_ON_PURPOSE = ("QUANTIZE", "DEQUANTIZE", "SOFTMAX")  # the ends of a float-I/O int8 graph, and its softmax


def export_saved_model(model, directory: str) -> str:
    """A SavedModel of `model` with one batch-1 signature `serving_default(images)`, for the converter.

    Keras 3 models go through `keras.export.ExportArchive` (TFLiteConverter.from_keras_model does not accept
    them); a tf_keras (QAT) model is wrapped in a bare `tf.Module`, which skips tf_keras's per-layer SavedModel
    tracing (2x faster on the QAT graph). Batch 1 is fixed so that the SE Reshape folds to a constant shape.
    """
    import tensorflow as tf

    from keras_effnet import keras_versions

    shape = [1, *[int(d) for d in model.input_shape[1:]]]
    spec = tf.TensorSpec(shape, tf.float32, name=SERVING_INPUT)
    if isinstance(model, keras_versions.tf_keras().Model):
        module = tf.Module()
        module.variables_ = list(model.variables)
        module.serve = tf.function(lambda images: model(images, training=False), input_signature=[spec])
        tf.saved_model.save(module, directory, signatures=module.serve.get_concrete_function())
        return directory
    keras = keras_versions.keras3()
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", lambda images: model(images, training=False), input_signature=[spec])
    archive.write_out(directory, verbose=False)
    return directory


def representative_dataset(images):
    """The converter's and the QuantizationDebugger's `representative_dataset`: one batch-1 float32 image a step."""
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
    converter.representative_dataset = representative_dataset(representative)
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
    return bytes(calibrator.Calibrator(prepared).calibrate(representative_dataset(representative)))


def quantize_calibrated(calibrated: bytes, *, io_dtype: str = formats_lib.IO_DTYPE, float_nodes=()) -> bytes:
    """Full-integer int8 from a calibrated model.

    The softmax stays in float: XNNPACK has no quantized softmax, so an int8 SOFTMAX would leave the graph's last
    op to the reference kernels (and a float softmax over int8 logits is also more precise). `io_dtype`
    float32 keeps float input and output (the QUANTIZE/DEQUANTIZE at the ends run on XNNPACK); uint8/int8
    replace them. `float_nodes`: output tensor names of ops to keep in float (int8_mixed).
    """
    import tensorflow as tf
    from tensorflow.lite.python import convert as tfl_convert
    from tensorflow.lite.python import util as tfl_util

    formats_lib.check_io_dtype(io_dtype)
    blob = tfl_convert.mlir_quantize(
        calibrated, fully_quantize=False, denylisted_ops=["SOFTMAX"], denylisted_nodes=list(float_nodes) or None
    )
    if io_dtype != "float32":
        blob = tfl_util.modify_model_io_type(blob, getattr(tf, io_dtype), getattr(tf, io_dtype))
    return bytes(blob)


def convert_saved_model(
    saved_model_dir: str, fmt: str, *, representative=None, io_dtype: str = formats_lib.IO_DTYPE
) -> bytes:
    """The .tflite bytes of one format (no metadata).

    `representative`: float32 images (N, S, S, 3) in 0..255, needed by "int8" and "int16x8".
    `io_dtype`: the input/output type of "int8" and "qat_int8" ("float32"; "uint8": raw pixels go in unchanged,
    scale 1 zero point 0 when calibrated on 0..255 images; "int8").
    """
    import tensorflow as tf

    if fmt not in formats_lib.FORMATS:
        raise ValueError(f"format must be one of {formats_lib.FORMATS}, got {fmt!r}.")
    formats_lib.check_io_dtype(io_dtype)
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
        converter.representative_dataset = representative_dataset(representative)
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


def convert(model, fmt: str, *, representative=None, io_dtype: str = formats_lib.IO_DTYPE) -> bytes:
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
        description=f"{name}, image classifier ({len(class_names)} classes), {fmt}: {formats_lib.FORMAT_NOTES[fmt]}. "
        f"Input: RGB, {model.input_shape[1]}x{model.input_shape[2]}, pixels 0..255.",
        input_name=SERVING_INPUT,
        output_name=OUTPUT_NAME,
        labels_file=formats_lib.LABELS,
        num_classes=len(class_names),
        mean=[0.0, 0.0, 0.0] if float_input else None,
        std=[1.0, 1.0, 1.0] if float_input else None,
    )
    labels = "".join(f"{c}\n" for c in class_names).encode()
    return metadata_lib.populate(tflite, blob, {formats_lib.LABELS: labels})


def computes_in_float(op: dict, tensors: dict) -> bool:
    """Whether an op of a quantized graph (`litert.graph`: its op and tensors) computes in float: a float32
    output, the (de)quantization at the graph's ends and the float softmax that `quantize_calibrated` keeps on
    purpose excepted."""
    outs = [tensors[i] for i in op["outputs"] if i in tensors]
    return op["op_name"] not in _FLOAT_ON_PURPOSE and any(np.dtype(t["dtype"]) == np.float32 for t in outs)


def float_ops(tflite) -> list[str]:
    """The names of the ops of a quantized model that compute in float (`computes_in_float`): the sign of a
    layer left unquantized."""
    tensors, ops = litert.graph(tflite)
    return sorted({op["op_name"] for op in ops if computes_in_float(op, tensors)})
