"""training.synthetic: the embedded dataset is deterministic, complete, idempotent and checked."""

import hashlib
import os

import numpy as np
import pytest
from PIL import Image

from training import synthetic


def _digest(root):
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in sorted(os.walk(root)):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            h.update(os.path.relpath(path, root).encode())
            with open(path, "rb") as f:
                h.update(f.read())
    return h.hexdigest()


def test_layout_counts_and_jpeg(tmp_path):
    root = synthetic.generate(str(tmp_path / "syn"), num_classes=4, train_per_class=3, val_per_class=2, image_size=32)
    for split, n in (("train", 3), ("val", 2)):
        classes = sorted(os.listdir(os.path.join(root, split)))
        assert classes == sorted(synthetic.CLASSES[:4])
        for c in classes:
            files = os.listdir(os.path.join(root, split, c))
            assert len(files) == n
            with Image.open(os.path.join(root, split, c, files[0])) as im:
                assert im.format == "JPEG" and im.size == (32, 32) and im.mode == "RGB"
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".synthetic-")]


def test_deterministic_and_seed_dependent(tmp_path):
    kw = dict(num_classes=3, train_per_class=2, val_per_class=1, image_size=32)
    a = _digest(synthetic.generate(str(tmp_path / "a"), seed=5, **kw))
    b = _digest(synthetic.generate(str(tmp_path / "b"), seed=5, **kw))
    c = _digest(synthetic.generate(str(tmp_path / "c"), seed=6, **kw))
    assert a == b
    assert a != c


def test_idempotent_reuses_complete_dataset(tmp_path):
    root = synthetic.generate(str(tmp_path / "syn"), num_classes=2, train_per_class=2, val_per_class=1, image_size=32)
    marker = os.path.join(root, "train", synthetic.CLASSES[0], "extra.txt")
    with open(marker, "w") as f:
        f.write("kept")
    synthetic.generate(str(tmp_path / "syn"), num_classes=2, train_per_class=2, val_per_class=1, image_size=32)
    assert os.path.exists(marker)  # reused, not rewritten
    synthetic.generate(str(tmp_path / "syn"), num_classes=2, train_per_class=3, val_per_class=1, image_size=32)
    assert not os.path.exists(marker)  # different arguments: regenerated
    assert len(os.listdir(os.path.join(root, "train", synthetic.CLASSES[0]))) == 3


def test_classes_are_not_a_single_colour(tmp_path):
    root = synthetic.generate(str(tmp_path / "syn"), num_classes=10, train_per_class=8, val_per_class=1, image_size=32)
    means = []
    for c in synthetic.CLASSES:
        folder = os.path.join(root, "train", c)
        means.append(
            [
                np.asarray(Image.open(os.path.join(folder, f)), np.float32).mean((0, 1))
                for f in sorted(os.listdir(folder))
            ]
        )
    means = np.array(means)  # (class, image, rgb)
    within = means.std(axis=1).mean()
    assert within > 20, "images of one class should vary widely in colour"


@pytest.mark.parametrize(
    "kw, name",
    [
        ({"num_classes": 11}, "num_classes"),
        ({"num_classes": 1}, "num_classes"),
        ({"train_per_class": 0}, "train_per_class"),
        ({"image_size": 8}, "image_size"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_arguments(tmp_path, kw, name):
    with pytest.raises(ValueError, match=name):
        synthetic.generate(str(tmp_path / "x"), **kw)


def test_refuses_foreign_non_empty_directory(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="not a synthetic dataset"):
        synthetic.generate(str(tmp_path / "mine"))


def test_linear_probe_separates_colour_but_not_the_synthetic_shapes(tmp_path):
    """The difficulty figure: a linear classifier on raw pixels solves a colour-coded set and fails on the shapes."""
    easy = tmp_path / "easy"
    for split, n in (("train", 12), ("val", 4)):
        for label, colour in enumerate(((200, 30, 30), (30, 200, 30), (30, 30, 200))):
            folder = easy / split / f"c{label}"
            folder.mkdir(parents=True)
            rng = np.random.default_rng([label, n])
            for i in range(n):
                noise = rng.normal(0, 20, size=(16, 16, 3))
                Image.fromarray(np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)).save(folder / f"{i}.png")
    assert synthetic.linear_probe(str(easy), image_size=8, steps=100)["val_top1"] == 1.0
    root = synthetic.generate(str(tmp_path / "syn"), train_per_class=40, val_per_class=10, image_size=32)
    probe = synthetic.linear_probe(root, image_size=16, steps=100)
    assert probe["chance"] == 0.1 and probe["num_val"] == 100
    assert probe["val_top1"] < 0.45 and probe["train_top1"] > probe["val_top1"]
