"""edge.formats: the table of formats, the derived lists the export and its flags use, and the one place that
checks formats and io_dtype."""

import pytest

from common import cli
from edge import formats
from edge.export_config import ExportConfig


def test_the_derived_lists_follow_the_table():
    assert formats.FORMATS == ("float32", "float16", "dynamic", "int8", "int16x8", "qat_int8")
    assert formats.ALL_FORMATS == formats.FORMATS + (formats.SAVED_MODEL,)
    assert formats.FLOAT_FORMATS == ("float32", "float16", "dynamic")
    assert formats.CALIBRATED_FORMATS == ("int8", "int16x8")
    assert formats.INT8_FORMATS == ("int8", "qat_int8", formats.MIXED)
    assert list(formats.FORMAT_NOTES) == [*formats.FORMATS, formats.MIXED]


@pytest.mark.parametrize("row", formats.TABLE, ids=lambda r: r.name)
def test_every_format_has_a_note_and_a_file_name(row):
    assert row.note and formats.model_file(row.name) == f"model_{row.name}.tflite"
    assert not (row.int8 and not row.io_dtype)  # a full-integer graph's input and output follow --io_dtype


def test_one_io_dtype_default():
    assert formats.IO_DTYPE in formats.IO_DTYPES
    assert ExportConfig(model="m", out="o").io_dtype == formats.IO_DTYPE == "float32"


@pytest.mark.parametrize(
    "given, match",
    [("float32,int4", "unknown format"), ("", "unknown format"), (["int8", "int8"], "lists a format twice")],
)
def test_check_formats_names_what_is_wrong(given, match):
    with pytest.raises(ValueError, match=match):
        formats.check_formats(given)


def test_check_formats_reads_a_comma_separated_string():
    assert formats.check_formats(" float32, int8 ") == ("float32", "int8")
    assert formats.check_io_dtype("uint8") == "uint8"
    with pytest.raises(ValueError, match="io_dtype must be one of"):
        formats.check_io_dtype("float8")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"formats": ("int8", "int8")}, "--formats=int8,int8: expected each format at most once"),
        ({"formats": ("int4",)}, "--formats=int4: expected formats among float32"),
        ({"io_dtype": "float8"}, "--io_dtype=float8: expected one of float32, uint8, int8"),
    ],
)
def test_the_config_phrases_the_same_checks_as_flags(kwargs, message):
    with pytest.raises(cli.UsageError) as info:
        ExportConfig(model="m", out="o", **kwargs)
    assert str(info.value).startswith(message)
