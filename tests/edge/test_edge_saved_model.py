"""edge.saved_model through `edge.export --formats=saved_model`: the serving SavedModel is loaded in a fresh
process with `tf.saved_model.load` and both signatures are called on real image files, against the Keras model."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from edge_support import SIZE

from edge import data, export, formats, saved_model
from training import data as training_data

_CALL = r"""
import json, sys
import numpy as np
import tensorflow as tf
sm, files, images, out = sys.argv[1:5]
loaded = tf.saved_model.load(sm)
assert sorted(loaded.signatures) == ["serve_image_bytes", "serving_default"], sorted(loaded.signatures)
by_bytes = loaded.signatures["serve_image_bytes"](
    image_bytes=tf.constant([open(f, "rb").read() for f in json.loads(files)]))
by_images = loaded.signatures["serving_default"](images=tf.constant(np.load(images)))
def plain(v):
    v = v.numpy()
    return v.astype(str).tolist() if v.dtype == object else v.tolist()
json.dump({**{f"bytes_{k}": plain(v) for k, v in by_bytes.items()},
           **{f"images_{k}": plain(v) for k, v in by_images.items()}}, open(out, "w"))
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory, probe_path, dataset):
    """The probe B0 exported with --formats=saved_model, called in a fresh process on PNG and JPEG files of
    other sizes than the model's (decoded and resized in the graph) and on a batch of decoded images."""
    import tensorflow as tf
    from PIL import Image

    tmp = tmp_path_factory.mktemp("edge_saved_model")
    out = str(tmp / "E")
    code = export.main(
        [f"--model={probe_path}", f"--data_dir={dataset}", f"--out={out}", "--formats=saved_model", "--latency_runs=1"]
    )
    assert code == 0
    val = data.validation_set(training_data.load_splits(dataset), SIZE)
    files = []
    for i, (image, size) in enumerate(zip(val.images[:4], [(50, 40), (24, 24), (64, 64), (33, 47)])):
        path = str(tmp / (f"img{i}.png" if i % 2 else f"img{i}.jpg"))
        Image.fromarray(image.astype(np.uint8)).resize(size, Image.BICUBIC).save(path)
        files.append(path)
    batch = str(tmp / "images.npy")
    np.save(batch, val.images[:5])
    result = str(tmp / "out.json")
    proc = subprocess.run(
        [sys.executable, "-c", _CALL, os.path.join(out, "saved_model"), json.dumps(files), batch, result],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The same decode and resize outside the graph: what training.data's eval pipeline does to a file.
    outside = np.stack(
        [
            tf.image.resize(
                tf.io.decode_image(open(f, "rb").read(), channels=3, expand_animations=False),
                [SIZE, SIZE],
                antialias=True,
            ).numpy()
            for f in files
        ]
    )
    return {k: np.asarray(v) for k, v in json.load(open(result)).items()}, outside, val, out


def test_both_signatures_agree_with_keras(served, probe_path):
    got, outside, val, _ = served
    model = data.load_model(probe_path)
    np.testing.assert_allclose(got["images_probabilities"], model.predict(val.images[:5], verbose=0), atol=1e-4)
    np.testing.assert_allclose(got["bytes_probabilities"], model.predict(outside, verbose=0), atol=1e-4)
    assert got["bytes_probabilities"].shape == (4, 3) and got["images_probabilities"].shape == (5, 3)


def test_outputs_carry_the_class_names(served):
    got, _, val, out = served
    names = np.array(val.class_names)
    for prefix in ("images", "bytes"):
        probs = got[f"{prefix}_probabilities"]
        assert (got[f"{prefix}_class_names"] == names[None]).all() and got[f"{prefix}_class_names"].shape == probs.shape
        assert list(got[f"{prefix}_top_class"]) == list(names[probs.argmax(1)])
    report = json.load(open(os.path.join(out, formats.REPORT_JSON)))
    assert report["saved_model"]["signatures"] == [saved_model.SERVING, saved_model.BYTES]
    assert report["formats"] == [] and "SavedModel for serving" in open(os.path.join(out, formats.REPORT_MD)).read()
    assert sorted(os.listdir(out)) == ["labels.txt", "report.json", "report.md", "saved_model"]
