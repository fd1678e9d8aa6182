"""common.files.atomic_write: the one atomic writer of the trainer, the exporter and the study."""

import os

import pytest

from common.files import atomic_write


def test_writes_text_and_bytes_and_replaces(tmp_path):
    path = tmp_path / "sub" / "out.json"
    assert atomic_write(str(path), "first\n") == str(path)
    assert path.read_text() == "first\n"
    atomic_write(str(path), b"\x00second")
    assert path.read_bytes() == b"\x00second"
    assert os.listdir(path.parent) == ["out.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "model.txt"
    atomic_write(str(path), "good")
    with pytest.raises(TypeError):
        atomic_write(str(path), 12345)  # not str or bytes: fails after the temporary file was created
    assert path.read_text() == "good"
    assert os.listdir(tmp_path) == ["model.txt"]
