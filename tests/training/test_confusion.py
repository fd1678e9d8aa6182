"""training.confusion on a hand-made prediction set: every figure checked against counts done by hand."""

import csv
import os

import numpy as np
import pytest

from training import confusion

NAMES = ["cat", "dog", "fox"]
# 10 images: true cat x4, dog x4, fox x2.
TARGETS = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
PREDICTED = [0, 0, 1, 2, 1, 1, 0, 1, 1, 1]
# By hand: rows true, columns predicted.
MATRIX = [[2, 1, 1], [1, 3, 0], [0, 2, 0]]


def test_matrix_and_per_class_figures_are_exact():
    m = confusion.confusion_matrix(TARGETS, PREDICTED, 3)
    assert m.tolist() == MATRIX
    np.testing.assert_allclose(confusion.row_normalized(m), [[0.5, 0.25, 0.25], [0.25, 0.75, 0], [0, 1, 0]])
    figures = confusion.per_class(m, NAMES)
    # cat: precision 2/3 (column 2+1+0), recall 2/4; dog: 3/6 and 3/4; fox: never predicted -> precision 0, recall 0.
    assert figures["cat"] == pytest.approx(
        {"precision": 2 / 3, "recall": 0.5, "f1": 2 * (2 / 3 * 0.5) / (2 / 3 + 0.5), "support": 4}
    )
    assert figures["dog"] == pytest.approx({"precision": 0.5, "recall": 0.75, "f1": 0.6, "support": 4})
    assert figures["fox"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    pairs = confusion.most_confused(m, NAMES)
    assert [(p["true"], p["predicted"], p["count"]) for p in pairs] == [
        ("fox", "dog", 2),
        ("cat", "dog", 1),
        ("cat", "fox", 1),
        ("dog", "cat", 1),
    ]
    assert pairs[0]["share_of_true"] == 1.0 and pairs[1]["share_of_true"] == 0.25


def test_summary_files_and_report(tmp_path):
    result = confusion.summary(np.array(TARGETS), np.array(PREDICTED), NAMES)
    assert result["macro_f1"] == pytest.approx((4 / 7 + 0.6 + 0) / 3)
    paths = confusion.write(str(tmp_path / "ev"), result)
    with open(paths["counts_csv"]) as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["true \\ predicted", *NAMES]
    assert [[int(v) for v in r[1:]] for r in rows[1:]] == MATRIX and [r[0] for r in rows[1:]] == NAMES
    with open(paths["normalized_csv"]) as f:
        assert list(csv.reader(f))[3] == ["fox", "0.0000", "1.0000", "0.0000"]
    with open(paths["png"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    text = open(paths["report"]).read()
    assert "fox -> dog: 2 (100.0%)" in text and "macro F1 0.3905" in text
    assert sorted(os.listdir(tmp_path / "ev")) == sorted(
        [confusion.COUNTS_CSV, confusion.NORMALIZED_CSV, confusion.PNG, confusion.REPORT]
    )
