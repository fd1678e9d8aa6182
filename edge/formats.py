"""The TFLite formats of `keras-effnet-export` as data: what each needs, its file name, and the checks of a
list of formats and of the int8 input/output type.

One row per format, in the order the export writes them. `calibration`: built from calibration images
(post-training quantization); `qat`: converted from the quantization-aware model of `edge.qat`; `io_dtype`:
its input and output follow `--io_dtype` (the other formats keep float input and output); `int8`: a
full-integer graph, whose ops left in float are listed (`edge.convert.float_ops`).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Format:
    name: str
    note: str  # what the metadata description and the report say the format is
    calibration: bool = False
    qat: bool = False
    io_dtype: bool = False
    int8: bool = False


MIXED = "int8_mixed"
TABLE = (
    Format("float32", "float32 weights and activations"),
    Format("float16", "float16 weights, float32 compute"),
    Format("dynamic", "int8 weights, float activations (dynamic range)"),
    Format("int8", "full-integer int8, post-training quantization", calibration=True, io_dtype=True, int8=True),
    Format("int16x8", "int16 activations, int8 weights, post-training quantization", calibration=True),
    Format("qat_int8", "full-integer int8 from quantization-aware training", qat=True, io_dtype=True, int8=True),
    # Written only when int8 misses the accuracy target (`edge.mixed`); never asked for by name.
    Format(
        MIXED,
        "post-training int8 with the fewest layers kept in float within 1 top-1 point of the Keras model",
        calibration=True,
        io_dtype=True,
        int8=True,
    ),
)
BY_NAME = {f.name: f for f in TABLE}

FORMATS = tuple(f.name for f in TABLE if f.name != MIXED)  # what --formats may name, besides SAVED_MODEL
SAVED_MODEL = "saved_model"  # not a .tflite: the serving SavedModel of `edge.saved_model`, a folder
ALL_FORMATS = FORMATS + (SAVED_MODEL,)
FLOAT_FORMATS = tuple(f.name for f in TABLE if not (f.calibration or f.qat))  # need no images
CALIBRATED_FORMATS = tuple(f for f in FORMATS if BY_NAME[f].calibration)
INT8_FORMATS = tuple(f.name for f in TABLE if f.int8)
FORMAT_NOTES = {f.name: f.note for f in TABLE}

IO_DTYPES = ("float32", "uint8", "int8")
# The one default of the int8 input/output type: float32 keeps the QUANTIZE/DEQUANTIZE at the ends on XNNPACK.
IO_DTYPE = "float32"

# The names of what an export writes in its folder.
LABELS = "labels.txt"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
QAT_SUBDIR = "qat"


def model_file(fmt: str) -> str:
    return f"model_{fmt}.tflite"


def unknown(formats) -> list[str]:
    """The names in `formats` that are no format (`ALL_FORMATS`)."""
    return [f for f in formats if f not in ALL_FORMATS]


def repeated(formats) -> bool:
    return len(set(formats)) != len(formats)


def check_formats(formats) -> tuple[str, ...]:
    """`formats` (a sequence or a comma-separated string) as a tuple; raises ValueError for an empty list, an
    unknown name or a name listed twice."""
    if isinstance(formats, str):
        formats = [f.strip() for f in formats.split(",") if f.strip()]
    formats = tuple(formats)
    bad = unknown(formats)
    if bad or not formats:
        raise ValueError(f"formats: unknown format(s) {bad or list(formats)!r}; allowed: {', '.join(ALL_FORMATS)}.")
    if repeated(formats):
        raise ValueError(f"formats: {formats!r} lists a format twice.")
    return formats


def check_io_dtype(io_dtype: str) -> str:
    if io_dtype not in IO_DTYPES:
        raise ValueError(f"io_dtype must be one of {IO_DTYPES}, got {io_dtype!r}.")
    return io_dtype
