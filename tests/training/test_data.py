"""training.data: real image folders through the real loader: formats, corrupt files, bad folders, pipeline."""

import os

import numpy as np
import pytest
from PIL import Image

from training import data, decode


def _image(seed, size=(40, 30)):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8))


def _write_split(root, split, classes, per_class=3):
    for c in classes:
        os.makedirs(os.path.join(root, split, c), exist_ok=True)
        for i in range(per_class):
            _image(hash((split, c, i)) % 2**32).save(os.path.join(root, split, c, f"{i}.jpg"), quality=95)


@pytest.fixture()
def folder(tmp_path):
    root = str(tmp_path / "ds")
    _write_split(root, "train", ["a", "b"])
    _write_split(root, "val", ["a", "b"], per_class=2)
    return root


def test_formats_and_modes_become_rgb_and_match_pil(tmp_path):
    """JPEG/PNG/BMP/GIF in grayscale, CMYK, palette, alpha and 16-bit all decode to PIL's RGB, whatever the extension."""
    root = tmp_path / "ds" / "train" / "x"
    root.mkdir(parents=True)
    base = _image(1, (36, 28))
    cases = {
        "rgb.jpg": (base, "JPEG"),
        "gray.jpg": (base.convert("L"), "JPEG"),
        "cmyk.jpg": (base.convert("CMYK"), "JPEG"),
        "pal.png": (base.convert("P"), "PNG"),
        "la.png": (base.convert("LA"), "PNG"),
        "i16.png": (base.convert("I;16"), "PNG"),
        "rgba.png": (base.convert("RGBA"), "PNG"),
        "pal.gif": (base.convert("P"), "GIF"),
        "rgb.bmp": (base, "BMP"),
        "pal.bmp": (base.convert("P"), "BMP"),
        "png_named.jpg": (base, "PNG"),
    }
    for name, (im, fmt) in cases.items():
        im.save(root / name, fmt)
    split = data.scan_folder(str(tmp_path / "ds" / "train"))
    files = split.files
    assert split.skipped == () and split.class_names == ("x",) and len(files) == len(cases)
    ds = data.make_dataset(
        files,
        split.labels,
        image_size=28,
        batch_size=len(files),
        training=False,
        augment="none",
        pil_files=split.pil_files,
    )
    images, got_labels = next(iter(ds))
    # The scan's decoder verdicts are the headers' ones; without them the pipeline decides alike.
    assert {os.path.basename(f) for f in split.pil_files} == {n for n in cases if decode.needs_pil(str(root / n))}
    assert {"i16.png", "pal.bmp"} <= {os.path.basename(f) for f in split.pil_files}
    from_headers = data.make_dataset(files, split.labels, image_size=28, batch_size=len(files), training=False)
    np.testing.assert_array_equal(next(iter(from_headers))[0].numpy(), images.numpy())
    assert images.dtype.name == "float32" and images.shape == (len(files), 28, 28, 3)
    assert list(got_labels.numpy()) == [0] * len(files)
    for f, img in zip(files, images.numpy()):
        ref = np.asarray(Image.open(f).convert("RGB").resize((28, 28), Image.BILINEAR), np.float32)
        assert np.abs(img - ref).mean() < 12, os.path.basename(f)  # same picture (resize filters differ)
        assert 0 <= img.min() and img.max() <= 255


def test_corrupt_files_are_skipped_counted_and_named(folder):
    bad = os.path.join(folder, "train", "a")
    good_jpeg = open(os.path.join(bad, "0.jpg"), "rb").read()
    with open(os.path.join(bad, "truncated.jpg"), "wb") as f:
        f.write(good_jpeg[: len(good_jpeg) // 2])
    open(os.path.join(bad, "empty.jpg"), "wb").close()
    with open(os.path.join(bad, "notes.jpg"), "w") as f:
        f.write("this is text, not an image")
    with open(os.path.join(bad, "readme.txt"), "w") as f:
        f.write("hello")
    splits = data.load_splits(folder)
    reasons = {os.path.basename(s.path): s.reason for s in splits.skipped}
    assert set(reasons) == {"truncated.jpg", "empty.jpg", "notes.jpg", "readme.txt"}
    assert "0 bytes" in reasons["empty.jpg"]
    assert all(os.path.isabs(s.path) or s.path.startswith(folder) for s in splits.skipped)
    assert len(splits.train_files) == 6 and len(splits.val_files) == 4
    ds = data.make_dataset(
        splits.train_files, splits.train_labels, image_size=32, batch_size=2, training=True, augment="basic"
    )
    assert sum(int(x.shape[0]) for x, _ in ds) == 6


@pytest.mark.parametrize(
    "mistake, message",
    [
        ("empty_class", "is empty"),
        ("no_images", "no decodable image"),
        ("class_mismatch", "different class folders"),
        ("no_val", "no 'val' folder"),
        ("no_classes", "no class folders"),
        ("missing_dir", "is not a directory"),
    ],
)
def test_bad_folders_raise_clear_errors(folder, mistake, message):
    if mistake == "empty_class":
        os.makedirs(os.path.join(folder, "train", "c"))
        os.makedirs(os.path.join(folder, "val", "c"))
    elif mistake == "no_images":
        os.makedirs(os.path.join(folder, "train", "c"))
        with open(os.path.join(folder, "train", "c", "x.jpg"), "w") as f:
            f.write("text")
    elif mistake == "class_mismatch":
        _write_split(folder, "val", ["z"])
    elif mistake == "no_val":
        import shutil

        shutil.rmtree(os.path.join(folder, "val"))
    elif mistake == "no_classes":
        import shutil

        shutil.rmtree(os.path.join(folder, "train"))
        os.makedirs(os.path.join(folder, "train"))
    elif mistake == "missing_dir":
        folder = folder + "_nope"
    with pytest.raises(ValueError, match=message):
        data.load_splits(folder)


def test_mismatch_names_the_classes(folder):
    _write_split(folder, "val", ["z"])
    with pytest.raises(ValueError, match=r"only in val: \['z'\]"):
        data.load_splits(folder)


def test_training_pipeline_is_deterministic_and_seed_dependent(folder):
    splits = data.load_splits(folder)

    def epoch(seed, start_epoch=0):
        ds = data.make_dataset(
            splits.train_files,
            splits.train_labels,
            image_size=32,
            batch_size=3,
            training=True,
            augment="basic",
            seed=seed,
            start_epoch=start_epoch,
        )
        return [(x.numpy(), y.numpy()) for x, y in ds]

    a, b, c = epoch(0), epoch(0), epoch(1)
    assert len(a) == 2 and a[0][0].shape == (3, 32, 32, 3)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not all(np.array_equal(xa, xc) for (xa, _), (xc, _) in zip(a, c))
    assert not all(np.array_equal(xa, xc) for (xa, _), (xc, _) in zip(a, epoch(0, start_epoch=1)))


def test_repeat_reshuffles_each_epoch_and_cache_gives_same_eval(folder):
    splits = data.load_splits(folder)
    ds = data.make_dataset(
        splits.train_files,
        splits.train_labels,
        image_size=32,
        batch_size=6,
        training=True,
        augment="none",
        repeat=True,
        seed=3,
    )
    it = iter(ds)
    e1, e2 = next(it)[1].numpy(), next(it)[1].numpy()
    assert sorted(e1) == sorted(e2) == [0, 0, 0, 1, 1, 1]
    plain = data.make_dataset(
        splits.val_files, splits.val_labels, image_size=32, batch_size=3, training=False, augment="none"
    )
    cached = data.make_dataset(
        splits.val_files, splits.val_labels, image_size=32, batch_size=3, training=False, augment="none", cache=True
    )
    for _ in range(2):
        for (x1, _y1), (x2, _y2) in zip(plain, cached):
            np.testing.assert_array_equal(x1.numpy(), x2.numpy())
    assert [int(x.shape[0]) for x, _ in plain] == [3, 1]  # eval keeps the remainder


@pytest.mark.parametrize("cache", [False, True])  # True: the in-memory path, whose crop window is a tensor
def test_randaugment_pipeline_runs(folder, cache):
    splits = data.load_splits(folder)
    ds = data.make_dataset(
        splits.train_files,
        splits.train_labels,
        image_size=32,
        batch_size=3,
        training=True,
        augment="randaugment",
        cache=cache,
    )
    x, y = next(iter(ds))
    assert x.shape == (3, 32, 32, 3) and float(x.numpy().min()) >= 0 and float(x.numpy().max()) <= 255


@pytest.mark.parametrize(
    "kw, name",
    [
        ({"augment": "heavy"}, "augment"),
        ({"image_size": 0}, "image_size"),
        ({"batch_size": 100}, "batch_size"),
    ],
)
def test_make_dataset_bad_arguments(folder, kw, name):
    splits = data.load_splits(folder)
    args = dict(image_size=32, batch_size=2, training=True, augment="basic")
    args.update(kw)
    with pytest.raises(ValueError, match=name):
        data.make_dataset(splits.train_files, splits.train_labels, **args)


def test_representative_images(folder):
    x = data.representative_images(folder, 4, 32)
    assert x.shape == (4, 32, 32, 3) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 255
    assert data.representative_images(folder, 100, 32).shape[0] == 6
    # From the scanned Splits (what the exporter passes): the same images as from the folder.
    np.testing.assert_array_equal(data.representative_images(data.load_splits(folder), 4, 32), x)
    with pytest.raises(ValueError, match="n must be"):
        data.representative_images(folder, 0, 32)


def test_decode_check_is_cached_by_path_size_and_mtime(folder, monkeypatch):
    """A second scan decodes nothing; a changed, added or damaged file is checked again; the cache is one atomic JSON."""
    calls = []
    real = data.check_image
    monkeypatch.setattr(data, "check_image", lambda path: calls.append(os.path.basename(path)) or real(path))
    train = os.path.join(folder, "train")
    first = data.scan_folder(train)
    assert len(calls) == 6 and os.path.exists(os.path.join(train, data.SCAN_CACHE))
    assert oct(os.stat(os.path.join(train, data.SCAN_CACHE)).st_mode & 0o777) != "0o600"
    calls.clear()
    assert data.scan_folder(train) == first and calls == []
    # A file rewritten (new size and mtime) as a broken one is decoded again and now skipped.
    target = os.path.join(train, "a", "1.jpg")
    with open(target, "wb") as f:
        f.write(b"no longer an image")
    os.utime(target, ns=(1, 1))
    split = data.scan_folder(train)
    files, skipped = split.files, split.skipped
    assert calls == ["1.jpg"] and [os.path.basename(s.path) for s in skipped] == ["1.jpg"] and target not in files
    calls.clear()
    _image(9).save(os.path.join(train, "b", "new.jpg"))
    data.scan_folder(train)
    assert calls == ["new.jpg"]
    calls.clear()
    with open(os.path.join(train, data.SCAN_CACHE), "w") as f:
        f.write("{damaged")
    assert len(data.scan_folder(train).files) == 6 and len(calls) == 7
    calls.clear()
    data.scan_folder(train, cache=False)
    assert len(calls) == 7


def test_decode_check_cache_on_a_read_only_folder(folder):
    train = os.path.join(folder, "train")
    os.chmod(train, 0o555)
    try:
        if os.access(train, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        assert len(data.scan_folder(train).files) == 6 and not os.path.exists(os.path.join(train, data.SCAN_CACHE))
    finally:
        os.chmod(train, 0o755)


def test_in_memory_cache_of_decoded_images_crops_and_flips_only(folder):
    """Augmenting from the uint8 cache at the training size: deterministic, a different crop each epoch, same labels."""
    splits = data.load_splits(folder)
    assert data.fits_in_memory(len(splits.train_files), 32) and not data.fits_in_memory(10**9, 224)

    def run(seed):
        ds = data.make_dataset(
            splits.train_files,
            splits.train_labels,
            image_size=32,
            batch_size=3,
            training=True,
            augment="basic",
            seed=seed,
            cache=True,
            repeat=True,
            crop_area=(0.3, 1.0),
        )
        it = iter(ds)
        return [next(it) for _ in range(4)]

    a, b = run(0), run(0)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa.numpy(), xb.numpy())
        np.testing.assert_array_equal(ya.numpy(), yb.numpy())
    x = np.concatenate([x.numpy() for x, _ in a])
    assert x.shape == (12, 32, 32, 3) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 255
    assert sorted(np.concatenate([y.numpy() for _, y in a[:2]])) == [0, 0, 0, 1, 1, 1]
    # Epoch 2 sees the same 6 images cropped differently.
    assert not np.array_equal(np.sort(x[:6].reshape(6, -1).mean(1)), np.sort(x[6:].reshape(6, -1).mean(1)))
    # With crop area 1 every cached image comes back whole, perhaps mirrored.
    ds = data.make_dataset(
        splits.train_files,
        splits.train_labels,
        image_size=32,
        batch_size=6,
        training=True,
        augment="basic",
        cache=True,
        crop_area=(1.0, 1.0),
    )
    eval_ds = data.make_dataset(splits.train_files, splits.train_labels, image_size=32, batch_size=6, training=False)
    xs, _ = next(iter(ds))
    ref = next(iter(eval_ds))[0].numpy()
    for img in xs.numpy():
        diffs = [min(np.abs(img - r).mean(), np.abs(img[:, ::-1] - r).mean()) for r in ref]
        assert min(diffs) < 1.0


def test_round_robin_spreads_every_prefix_over_the_classes():
    assert data.round_robin([1, 0, 1, 1, 2, 0]) == [1, 0, 4, 5, 2, 3]
    assert data.round_robin([]) == []


def test_named_steps_decode_one_element(folder):
    """The pipeline's steps are plain functions: eval decode, and the seeded crop of the cached uint8 image."""
    import tensorflow as tf

    split = data.scan_folder(os.path.join(folder, "train"))
    path, raw, label, pil = decode.read_file(tf.constant(split.files[0]), 1, tf.constant(False))
    image, got = decode.decode_eval(path, raw, label, pil, size=20)
    assert image.shape == (20, 20, 3) and got == 1 and 0 <= float(tf.reduce_min(image))
    whole = tf.cast(tf.round(image), tf.uint8)
    a, _ = decode.crop_cached(
        tf.constant(3, tf.int64), (whole, 1), size=20, seed=0, start_epoch=0, crop_area=(1.0, 1.0)
    )
    b, _ = decode.crop_cached(
        tf.constant(3, tf.int64), (whole, 1), size=20, seed=0, start_epoch=0, crop_area=(1.0, 1.0)
    )
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    flat = whole.numpy().astype(np.float32)
    assert min(np.abs(a.numpy() - flat).max(), np.abs(a.numpy() - flat[:, ::-1]).max()) == 0
