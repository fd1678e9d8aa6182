"""TFLite model metadata that MediaPipe Tasks' `ImageClassifier` and the Android Task Library read.

The schema is `metadata_schema.fbs` of tflite-support (the copy MediaPipe ships in
`mediapipe/tasks/metadata/`). A classifier needs three things from it:

- for a float input, `NormalizationOptions` (mean, std): the runtime feeds `(pixel - mean) / std`, and refuses a
  float model without them ("it requires specifying NormalizationOptions metadata");
- the labels, an associated file of type `TENSOR_AXIS_LABELS` on the output tensor (without it every
  `category_name` is empty);
- the model's name and version.

The metadata is a flatbuffer with file identifier ``M001`` stored in a model buffer named ``TFLITE_METADATA``;
the associated files are appended to the model as an uncompressed zip, as tflite-support's `MetadataPopulator`
does. Building the few tables by hand with `flatbuffers.Builder` (a TensorFlow dependency) avoids a dependency
on tflite-support (no release for current TensorFlow) or mediapipe (its absl-py pin conflicts with
tensorflow-model-optimization's). Field slots follow the schema's declaration order; a union takes two slots
(its type, then its value).
"""

from __future__ import annotations

import io
import zipfile

import flatbuffers
import numpy as np

METADATA_NAME = "TFLITE_METADATA"
METADATA_IDENTIFIER = b"M001"
TFLITE_IDENTIFIER = b"TFL3"
# The oldest metadata parser that reads every field written here (all of them exist since 1.0.0).
MIN_PARSER_VERSION = "1.0.0"

_TENSOR_AXIS_LABELS = 2  # AssociatedFileType
_RGB = 1  # ColorSpaceType
_IMAGE_PROPERTIES = 2  # ContentProperties union: FeatureProperties=1, ImageProperties=2
_FEATURE_PROPERTIES = 1
_NORMALIZATION_OPTIONS = 1  # ProcessUnitOptions union


def _strings(b: flatbuffers.Builder, values) -> int:
    offsets = [b.CreateString(v) for v in values]
    b.StartVector(4, len(offsets), 4)
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return b.EndVector()


def _tables(b: flatbuffers.Builder, offsets) -> int:
    b.StartVector(4, len(offsets), 4)
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return b.EndVector()


def _floats(b: flatbuffers.Builder, values) -> int:
    return b.CreateNumpyVector(np.asarray(values, dtype="<f4"))


def _table(b: flatbuffers.Builder, fields: list) -> int:
    """A table from [(slot, kind, value)], kind 'off' (an offset), 'u8' or 'i8'; None values are left out."""
    b.StartObject(max(slot for slot, _, _ in fields) + 1)
    for slot, kind, value in fields:
        if value is None:
            continue
        if kind == "off":
            b.PrependUOffsetTRelativeSlot(slot, value, 0)
        elif kind == "u8":
            b.PrependUint8Slot(slot, value, 0)
        elif kind == "i8":
            b.PrependInt8Slot(slot, value, 0)
        else:
            raise ValueError(kind)
    return b.EndObject()


def _stats(b, low, high) -> int:
    return _table(b, [(0, "off", _floats(b, high)), (1, "off", _floats(b, low))])


def build(
    *,
    name: str,
    version: str,
    description: str,
    author: str,
    input_name: str,
    output_name: str,
    labels_file: str,
    mean=None,
    std=None,
    input_range=(0.0, 255.0),
    num_classes: int,
) -> bytes:
    """The metadata flatbuffer of an image classifier with one RGB image input and one probability output.

    `mean`/`std` (per channel or one value): the input normalisation, required for a float input and omitted
    (None) for a quantized one, whose scale and zero point the runtime reads from the tensor itself.
    """
    b = flatbuffers.Builder(1024)
    # Input: an RGB image, optionally normalised.
    image_props = _table(b, [(0, "i8", _RGB)])
    content_in = _table(b, [(0, "u8", _IMAGE_PROPERTIES), (1, "off", image_props)])
    process_units = None
    if mean is not None:
        norm = _table(b, [(0, "off", _floats(b, np.atleast_1d(mean))), (1, "off", _floats(b, np.atleast_1d(std)))])
        unit = _table(b, [(0, "u8", _NORMALIZATION_OPTIONS), (1, "off", norm)])
        process_units = _tables(b, [unit])
    input_meta = _table(
        b,
        [
            (0, "off", b.CreateString(input_name)),
            (
                1,
                "off",
                b.CreateString(
                    "RGB image, pixels 0..255" + (", normalised as (x - mean) / std" if mean is not None else "")
                ),
            ),
            (3, "off", content_in),
            (4, "off", process_units),
            (5, "off", _stats(b, [input_range[0]], [input_range[1]])),
        ],
    )
    # Output: one probability per class, labelled by an associated file.
    feature = _table(b, [(0, "u8", 0)])
    content_out = _table(b, [(0, "u8", _FEATURE_PROPERTIES), (1, "off", feature)])
    labels = _table(
        b,
        [
            (0, "off", b.CreateString(labels_file)),
            (1, "off", b.CreateString(f"{num_classes} class names, one per line")),
            (2, "i8", _TENSOR_AXIS_LABELS),
        ],
    )
    output_meta = _table(
        b,
        [
            (0, "off", b.CreateString(output_name)),
            (1, "off", b.CreateString("Probability of each class (softmax)")),
            (3, "off", content_out),
            (5, "off", _stats(b, [0.0], [1.0])),
            (6, "off", _tables(b, [labels])),
        ],
    )
    subgraph = _table(b, [(2, "off", _tables(b, [input_meta])), (3, "off", _tables(b, [output_meta]))])
    model = _table(
        b,
        [
            (0, "off", b.CreateString(name)),
            (1, "off", b.CreateString(description)),
            (2, "off", b.CreateString(version)),
            (3, "off", _tables(b, [subgraph])),
            (4, "off", b.CreateString(author)),
            (7, "off", b.CreateString(MIN_PARSER_VERSION)),
        ],
    )
    b.Finish(model, file_identifier=METADATA_IDENTIFIER)
    return bytes(b.Output())


def populate(tflite: bytes, metadata: bytes, files: dict[str, bytes]) -> bytes:
    """`tflite` with `metadata` in its TFLITE_METADATA buffer (replacing any) and `files` appended as a zip."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(bytearray(tflite), 0))
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(metadata, dtype=np.uint8)
    model.buffers = model.buffers or []
    model.metadata = model.metadata or []
    for entry in model.metadata:
        if entry.name in (METADATA_NAME, METADATA_NAME.encode()):
            model.buffers[entry.buffer] = buffer
            break
    else:
        model.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name = METADATA_NAME
        entry.buffer = len(model.buffers) - 1
        model.metadata.append(entry)
    b = flatbuffers.Builder(len(tflite) + len(metadata) + 1024)
    b.Finish(model.Pack(b), file_identifier=TFLITE_IDENTIFIER)
    out = io.BytesIO(bytes(b.Output()))
    out.seek(0, io.SEEK_END)
    with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_STORED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return out.getvalue()


def metadata_buffer(tflite: bytes) -> bytes | None:
    """The TFLITE_METADATA flatbuffer of a model, or None."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(bytearray(tflite), 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() == METADATA_NAME.encode():
            data = model.Buffers(entry.Buffer()).DataAsNumpy()
            return None if isinstance(data, int) else data.tobytes()
    return None


def associated_files(tflite: bytes) -> dict[str, bytes]:
    """The files appended to a model (name -> bytes); empty when there are none."""
    stream = io.BytesIO(tflite)
    if not zipfile.is_zipfile(stream):
        return {}
    with zipfile.ZipFile(stream) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def read(tflite: bytes) -> dict:
    """The fields `build` writes, read back from a model: name, version, description, author,
    min_parser_version, mean, std (None when absent), input/output names, labels_file, labels_type."""
    blob = metadata_buffer(tflite)
    if blob is None:
        return {}
    if blob[4:8] != METADATA_IDENTIFIER:
        raise ValueError(f"TFLITE_METADATA buffer has identifier {blob[4:8]!r}, expected {METADATA_IDENTIFIER!r}.")
    root = _Table.root(blob)
    sub = root.tables(3)[0]
    inp, out = sub.tables(2)[0], sub.tables(3)[0]
    mean = std = None
    for unit in inp.tables(4):
        if unit.u8(0) == _NORMALIZATION_OPTIONS:
            norm = unit.table(1)
            mean, std = norm.floats(0), norm.floats(1)
    labels = out.tables(6)
    return {
        "name": root.string(0),
        "description": root.string(1),
        "version": root.string(2),
        "author": root.string(4),
        "min_parser_version": root.string(7),
        "mean": mean,
        "std": std,
        "input_name": inp.string(0),
        "output_name": out.string(0),
        "labels_file": labels[0].string(0) if labels else None,
        "labels_type": labels[0].i8(2) if labels else None,
    }


class _Table:
    """Just enough of a flatbuffers table reader for `read` (tests and the report use it)."""

    def __init__(self, buf: bytes, pos: int):
        self.t = flatbuffers.table.Table(bytearray(buf), pos)

    @classmethod
    def root(cls, buf: bytes) -> "_Table":
        return cls(buf, flatbuffers.encode.Get(flatbuffers.packer.uoffset, bytearray(buf), 0))

    def _offset(self, slot: int) -> int:
        return self.t.Offset(4 + 2 * slot)

    def string(self, slot: int) -> str | None:
        o = self._offset(slot)
        return self.t.String(o + self.t.Pos).decode() if o else None

    def u8(self, slot: int) -> int:
        o = self._offset(slot)
        return self.t.Get(flatbuffers.number_types.Uint8Flags, o + self.t.Pos) if o else 0

    def i8(self, slot: int) -> int:
        o = self._offset(slot)
        return self.t.Get(flatbuffers.number_types.Int8Flags, o + self.t.Pos) if o else 0

    def table(self, slot: int) -> "_Table":
        o = self._offset(slot)
        return _Table(self.t.Bytes, self.t.Indirect(o + self.t.Pos))

    def tables(self, slot: int) -> list["_Table"]:
        o = self._offset(slot)
        if not o:
            return []
        start, n = self.t.Vector(o), self.t.VectorLen(o)
        return [_Table(self.t.Bytes, self.t.Indirect(start + 4 * i)) for i in range(n)]

    def floats(self, slot: int) -> list[float]:
        o = self._offset(slot)
        if not o:
            return []
        return [float(v) for v in self.t.GetVectorAsNumpy(flatbuffers.number_types.Float32Flags, o)]
