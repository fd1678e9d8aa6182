"""MediaPipe Tasks' ImageClassifier (the API Android apps classify with) runs every exported format as it is:
the float formats through their normalisation metadata, every format with the class names of its labels file,
and with the top-1 accuracy of the project's own evaluation.

The images go to MediaPipe as lossless PNG copies of the pixels the project's evaluation decoded, so that both
runtimes see the same pixels: JPEG decoders differ by a grey level here and there, and a barely fine-tuned QAT
model of a random network is chaotic enough to change its answer on such a difference.

MediaPipe runs in its own environment (`.venv-mediapipe`, made by `make test` from
tests/edge/mediapipe-requirements.txt; or the Python named by KERAS_EFFNET_MEDIAPIPE_PYTHON): its absl-py pin
conflicts with tensorflow-model-optimization's, so pip cannot install both into one environment.
"""

import json
import os
import subprocess

import numpy as np
import pytest
from edge_support import REPO_ROOT, SIZE

from edge import data
from training import data as training_data

# One worker computes the shared export of every format (`b0_export`) for both files (pytest-xdist).
pytestmark = pytest.mark.xdist_group("b0_export")

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mediapipe_classify.py")


def _mediapipe_python():
    path = os.environ.get("KERAS_EFFNET_MEDIAPIPE_PYTHON") or os.path.join(
        REPO_ROOT, ".venv-mediapipe", "bin", "python"
    )
    return path if os.path.isfile(path) else None


@pytest.mark.skipif(_mediapipe_python() is None, reason="no MediaPipe environment (make test creates .venv-mediapipe)")
def test_mediapipe_image_classifier_reads_every_format(b0_export, dataset, tmp_path):
    from PIL import Image

    report, out = b0_export
    rows = [r for r in report["formats"] if not r.get("error")]
    val = data.validation_set(training_data.load_splits(dataset), SIZE)
    images = []
    for i, pixels in enumerate(val.images):
        assert np.array_equal(pixels, np.round(pixels))  # 32 px files at 32 px: no resize, whole grey levels
        images.append(str(tmp_path / f"val{i}.png"))
        Image.fromarray(pixels.astype(np.uint8)).save(images[-1])
    request = {"models": [os.path.join(out, r["file"]) for r in rows], "images": images}
    proc = subprocess.run(
        [_mediapipe_python(), SCRIPT],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, GLOG_minloglevel="2"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout)
    names = report["class_names"]
    labels = list(val.labels)
    for row in rows:
        answers = results[os.path.join(out, row["file"])]
        assert len(answers) == len(labels) == report["num_val_images"]
        assert all(name == names[index] for index, name, _ in answers), (row["format"], answers[:3])
        top1 = sum(index == y for (index, _, _), y in zip(answers, labels)) / len(labels)
        assert abs(top1 - row["top1"]) * 100 <= 0.5, (row["format"], top1, row["top1"])
    assert report["image_size"] == SIZE
