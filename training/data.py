"""The folder loader and the tf.data input pipeline.

Layout: `DIR/train/<class>/*` and `DIR/val/<class>/*` (Imagenette's own layout,
wnid folders). JPEG, PNG, BMP and GIF are read whatever their extension;
grayscale, CMYK, palette and alpha images become RGB.

Every file is opened with PIL and fully decoded once, up front, by
`scan_folder`: a file that is not a decodable image (truncated, zero bytes,
text, an unsupported format) is skipped, counted and reported with its path,
and training goes on. Folder mistakes (an empty class folder, no images at all,
train and val with different class sets) raise a ValueError before any
training starts.

The pipeline is tf.data: parallel decode, decode-and-crop for the JPEG
random-resized-crop (only the crop window is decoded), an optional cache,
prefetch. It is deterministic for a given `seed`: the shuffle is seeded and
every random augmentation uses stateless ops seeded by (seed, element index).
With `cache` and a training set that fits in memory, images are decoded once,
at the training size, and kept in memory as uint8: after the first epoch the
per-step CPU work is a crop, a resize and a flip.
Images come out as float32 RGB in [0, 255], because the models normalise
inside (keras_effnet.build).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os

import numpy as np
from PIL import Image

FORMATS = ("JPEG", "PNG", "BMP", "GIF")
AUGMENTS = ("none", "basic", "randaugment")
# (format, PIL mode) pairs that tf.io.decode_image turns into the same RGB as PIL
# (checked by tests/training/test_data.py); anything else is decoded by PIL in the pipeline.
TF_NATIVE = {
    "JPEG": {"L", "RGB", "CMYK"},
    "PNG": {"1", "L", "LA", "P", "RGB", "RGBA"},
    "GIF": {"L", "P"},
    "BMP": {"L", "RGB", "RGBA"},
}
CROP_AREA = (0.25, 1.0)
SCAN_CACHE = ".decode_check.json"  # hidden: _list_files skips it, like every dot file
SCAN_CACHE_VERSION = 1
CROP_ASPECT = (3 / 4, 4 / 3)


@dataclasses.dataclass(frozen=True)
class Skipped:
    path: str
    reason: str

    def __str__(self):
        return f"{self.path}: {self.reason}"


@dataclasses.dataclass(frozen=True)
class Splits:
    """The train and val file lists of one dataset directory, with one class list for both."""

    data_dir: str
    class_names: tuple[str, ...]
    train_files: tuple[str, ...]
    train_labels: tuple[int, ...]
    val_files: tuple[str, ...]
    val_labels: tuple[int, ...]
    skipped: tuple[Skipped, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def check_image(path: str) -> str | None:
    """None when `path` is a fully decodable JPEG/PNG/BMP/GIF, else the reason it is not."""
    try:
        if os.path.getsize(path) == 0:
            return "empty file (0 bytes)"
        with Image.open(path) as im:
            fmt = im.format
            if fmt not in FORMATS:
                return f"format {fmt} is not supported (allowed: {', '.join(FORMATS)})"
            im.load()
            if im.width < 1 or im.height < 1:
                return "image has no pixels"
    except Exception as e:  # noqa: BLE001 - PIL raises many types for broken files; each becomes a reason
        return f"not a decodable image ({type(e).__name__}: {e})"
    return None


def _list_files(folder):
    return sorted(
        os.path.join(folder, name)
        for name in os.listdir(folder)
        if not name.startswith(".") and os.path.isfile(os.path.join(folder, name))
    )


def scan_folder(split_dir: str, *, workers: int | None = None, cache: bool = True):
    """(files, labels, class_names, skipped) for one split directory `split_dir/<class>/*`.

    Classes are the sub-folders, sorted by name. Raises ValueError for a
    missing directory, no class folders, a class folder with no files or no
    decodable image, or no images at all. With `cache`, the verdicts are
    kept in `split_dir/SCAN_CACHE` (see `_checked`).
    """
    split_dir = os.fspath(split_dir)
    if not os.path.isdir(split_dir):
        raise ValueError(
            f"split_dir: {split_dir!r} is not a directory (expected <data_dir>/train or <data_dir>/val with one folder per class)."
        )
    class_names = sorted(
        n for n in os.listdir(split_dir) if not n.startswith(".") and os.path.isdir(os.path.join(split_dir, n))
    )
    if not class_names:
        raise ValueError(f"split_dir: {split_dir!r} has no class folders (expected {split_dir}/<class>/<image files>).")
    per_class = []
    for name in class_names:
        files = _list_files(os.path.join(split_dir, name))
        if not files:
            raise ValueError(
                f"class folder {os.path.join(split_dir, name)!r} is empty: every class needs at least one image."
            )
        per_class.append(files)
    all_files = [f for files in per_class for f in files]
    reasons = _checked(split_dir, all_files, workers=workers, use_cache=cache)
    files, labels, skipped = [], [], []
    for label, (name, class_files) in enumerate(zip(class_names, per_class)):
        good = [f for f in class_files if reasons[f] is None]
        skipped.extend(Skipped(f, reasons[f]) for f in class_files if reasons[f] is not None)
        if not good:
            raise ValueError(
                f"class folder {os.path.join(split_dir, name)!r} has {len(class_files)} file(s) and no decodable image "
                f"(first: {Skipped(class_files[0], reasons[class_files[0]])})."
            )
        files.extend(good)
        labels.extend([label] * len(good))
    return files, labels, class_names, skipped


def load_splits(data_dir: str) -> Splits:
    """Scan `data_dir/train` and `data_dir/val`; both must hold the same class folders."""
    data_dir = os.fspath(data_dir)
    if not os.path.isdir(data_dir):
        raise ValueError(
            f"data_dir: {data_dir!r} is not a directory (expected {data_dir}/train/<class>/* and {data_dir}/val/<class>/*)."
        )
    for split in ("train", "val"):
        if not os.path.isdir(os.path.join(data_dir, split)):
            raise ValueError(
                f"data_dir: {data_dir!r} has no {split!r} folder (expected {data_dir}/train/<class>/* and {data_dir}/val/<class>/*)."
            )
    train = scan_folder(os.path.join(data_dir, "train"))
    val = scan_folder(os.path.join(data_dir, "val"))
    if train[2] != val[2]:
        only_train = sorted(set(train[2]) - set(val[2]))
        only_val = sorted(set(val[2]) - set(train[2]))
        raise ValueError(
            f"data_dir: {data_dir!r}: train and val have different class folders "
            f"(only in train: {only_train or 'none'}; only in val: {only_val or 'none'})."
        )
    return Splits(
        data_dir=data_dir,
        class_names=tuple(train[2]),
        train_files=tuple(train[0]),
        train_labels=tuple(train[1]),
        val_files=tuple(val[0]),
        val_labels=tuple(val[1]),
        skipped=tuple(train[3]) + tuple(val[3]),
    )


def _check_one(path: str) -> tuple[str | None, bool]:
    """(check_image's verdict, needs_pil) of one file, from one open of it."""
    reason = check_image(path)
    return reason, True if reason else _needs_pil_uncached(path)


def _checked(split_dir: str, files: list[str], *, workers: int | None, use_cache: bool) -> dict[str, str | None]:
    """{path: None or the reason it is not an image} for `files`, decoding only what the cache does not vouch for.

    The decode check opens and fully decodes every file, which over Imagenette's
    13k images costs a minute on two cores. Its verdicts are kept in
    `split_dir/SCAN_CACHE` (JSON, written atomically), keyed by the path
    relative to `split_dir` and valid while the file's size and mtime (ns) are
    unchanged: a resumed or second run decodes only new or changed files. A
    folder that cannot be written is scanned in full every time (the write is
    skipped); a damaged cache file is ignored and rewritten.
    """
    from common import files as files_lib

    cache_path = os.path.join(split_dir, SCAN_CACHE)
    entries = {}
    if use_cache:
        try:
            with open(cache_path) as f:
                saved = json.load(f)
            if saved.get("version") == SCAN_CACHE_VERSION:
                entries = saved["files"]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            entries = {}
    stats, todo, verdicts = {}, [], {}
    for path in files:
        rel = os.path.relpath(path, split_dir)
        try:
            st = os.stat(path)
            stats[path] = (rel, st.st_size, st.st_mtime_ns)
        except OSError:
            stats[path] = None
        entry = entries.get(rel)
        if stats[path] and isinstance(entry, list) and len(entry) == 4 and entry[:2] == list(stats[path][1:]):
            verdicts[path] = (entry[2], bool(entry[3]))
        else:
            todo.append(path)
    if todo:
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers or min(16, (os.cpu_count() or 1) * 2)) as pool:
            verdicts.update(zip(todo, pool.map(_check_one, todo)))
    for path, (_, pil) in verdicts.items():
        _PIL_FLAGS[path] = pil
    if use_cache and (todo or len(entries) != len(files)):
        fresh = {stats[p][0]: [stats[p][1], stats[p][2], verdicts[p][0], verdicts[p][1]] for p in files if stats[p]}
        try:
            files_lib.atomic_write(cache_path, json.dumps({"version": SCAN_CACHE_VERSION, "files": fresh}))
        except OSError:
            pass  # a read-only dataset: correct, only slower next time
    return {path: verdicts[path][0] for path in files}


_PIL_FLAGS: dict[str, bool] = {}


def needs_pil(path: str) -> bool:
    """True when TensorFlow's decoders would not give PIL's RGB for this file (e.g. 16-bit PNG, palette BMP)."""
    flag = _PIL_FLAGS.get(path)
    if flag is None:
        flag = _PIL_FLAGS[path] = _needs_pil_uncached(path)
    return flag


def _needs_pil_uncached(path: str) -> bool:
    try:
        with Image.open(path) as im:
            return im.mode not in TF_NATIVE.get(im.format, ())
    except Exception:  # noqa: BLE001 - check_image has already reported it
        return True


def pil_rgb(path) -> np.ndarray:
    """Decode with PIL to uint8 RGB (H, W, 3); the first frame of an animation."""
    if isinstance(path, bytes):
        path = path.decode()
    elif hasattr(path, "numpy"):
        path = path.numpy().decode()
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def make_dataset(
    files,
    labels,
    *,
    image_size: int,
    batch_size: int,
    training: bool,
    augment: str = "basic",
    seed: int = 0,
    cache: bool = False,
    drop_remainder: bool | None = None,
    repeat: bool = False,
    start_epoch: int = 0,
    crop_area=CROP_AREA,
    randaugment_magnitude: float = 10.0,
):
    """A tf.data.Dataset of (images float32 [B, S, S, 3] in 0..255, labels int32 [B]).

    `training=True` shuffles the whole file list each epoch (seeded by `seed`
    and `start_epoch`, so a run resumed at epoch k is deterministic too) and
    applies `augment`: "basic" = random-resized-crop (area `crop_area`, aspect
    3/4..4/3; JPEGs are decoded only inside the crop window) + horizontal flip,
    "randaugment" = basic + RandAugment (N=2 at `randaugment_magnitude`
    of 30; training.regularization chooses both from the image and dataset size). Eval
    resizes the whole image to S x S. `drop_remainder` defaults to `training`:
    every replica then gets a full, equal share of each global batch
    (tensorflow/tensorflow#52986). `cache` keeps the decoded eval images in memory after the first pass;
    when augmenting, it keeps the images decoded at `image_size` (uint8) if
    they fit in a quarter of physical memory (`fits_in_memory`), so
    random-resized-crop then crops and flips the cached uint8 image and resizes it back, else
    the raw file bytes.
    `repeat=True` repeats forever (use a fixed number of steps per epoch).
    """
    import tensorflow as tf

    files = [os.fspath(f) for f in files]
    labels = [int(x) for x in labels]
    if len(files) != len(labels):
        raise ValueError(f"files and labels must have the same length, got {len(files)} and {len(labels)}.")
    if not files:
        raise ValueError("files is empty: nothing to load.")
    if augment not in AUGMENTS:
        raise ValueError(f"augment must be one of {AUGMENTS}, got {augment!r}.")
    for name, value, low in (("image_size", image_size, 1), ("batch_size", batch_size, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")
    if drop_remainder is None:
        drop_remainder = training
    if drop_remainder and len(files) < batch_size:
        raise ValueError(
            f"batch_size {batch_size} is larger than the {len(files)} images available and drop_remainder is on: "
            "no batch would be produced. Lower batch_size."
        )
    size = int(image_size)
    augmenting = training and augment != "none"
    pil_flags = [needs_pil(f) for f in files]
    n = len(files)

    ds = tf.data.Dataset.from_tensor_slices((files, labels, pil_flags))

    def decode_full(data, path, pil):
        def via_pil():
            image = tf.numpy_function(pil_rgb, [path], tf.uint8, stateful=False)
            return tf.reshape(image, tf.stack([tf.shape(image)[0], tf.shape(image)[1], 3]))

        image = tf.cond(pil, via_pil, lambda: tf.io.decode_image(data, channels=3, expand_animations=False))
        image.set_shape([None, None, 3])
        return image

    def read(path, label, pil):
        return path, tf.io.read_file(path), label, pil

    def decode_eval(path, data, label, pil):
        image = tf.image.resize(decode_full(data, path, pil), [size, size], antialias=True)
        return tf.clip_by_value(image, 0.0, 255.0), label

    def decode_train(index, element):
        path, data, label, pil = element
        element_seed = tf.stack([tf.cast(seed, tf.int64) * 1_000_003 + tf.cast(start_epoch, tf.int64), index])

        def window(shape):
            begin, extent, _ = tf.image.stateless_sample_distorted_bounding_box(
                tf.cast(shape, tf.int32),
                tf.zeros([1, 0, 4], tf.float32),
                seed=element_seed,
                min_object_covered=0.0,
                aspect_ratio_range=CROP_ASPECT,
                area_range=tuple(crop_area),
                max_attempts=10,
                use_image_if_no_bounding_boxes=True,
            )
            return begin, extent

        def jpeg_crop():
            begin, extent = window(tf.io.extract_jpeg_shape(data))
            crop = tf.stack([begin[0], begin[1], extent[0], extent[1]])
            return tf.image.decode_and_crop_jpeg(data, crop, channels=3)

        def other_crop():
            image = decode_full(data, path, pil)
            begin, extent = window(tf.shape(image))
            return tf.slice(image, begin, extent)

        image = tf.cond(tf.logical_and(tf.io.is_jpeg(data), tf.logical_not(pil)), jpeg_crop, other_crop)
        image.set_shape([None, None, 3])
        image = tf.image.resize(image, [size, size], antialias=True)
        image = tf.image.stateless_random_flip_left_right(image, seed=element_seed + 1)
        return tf.clip_by_value(image, 0.0, 255.0), label

    def crop_cached(index, element):
        image, label = element
        element_seed = tf.stack([tf.cast(seed, tf.int64) * 1_000_003 + tf.cast(start_epoch, tf.int64), index])
        begin, extent, _ = tf.image.stateless_sample_distorted_bounding_box(
            tf.shape(image),
            tf.zeros([1, 0, 4], tf.float32),
            seed=element_seed,
            min_object_covered=0.0,
            aspect_ratio_range=CROP_ASPECT,
            area_range=tuple(crop_area),
            max_attempts=10,
            use_image_if_no_bounding_boxes=True,
        )
        # Crop and flip the uint8 image, then one float pass: the resize. Bilinear interpolation without
        # antialiasing stays within the inputs' range, so no clip is needed.
        image = tf.image.stateless_random_flip_left_right(tf.slice(image, begin, extent), seed=element_seed + 1)
        return tf.image.resize(image, [size, size]), label

    options = tf.data.Options()
    options.deterministic = True
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA

    if not augmenting:
        ds = ds.map(read, num_parallel_calls=tf.data.AUTOTUNE).map(decode_eval, num_parallel_calls=tf.data.AUTOTUNE)
        if cache:
            ds = ds.cache()
        if training:
            ds = ds.shuffle(n, seed=_shuffle_seed(seed, start_epoch), reshuffle_each_iteration=True)
        if repeat:
            ds = ds.repeat()
    elif cache and fits_in_memory(n, size):
        # Decoded once per process at the training size, kept as uint8; each step only crops, resizes back and flips.
        ds = tf.data.Dataset.from_tensor_slices((decoded_images(files, size), labels))
        ds = ds.shuffle(n, seed=_shuffle_seed(seed, start_epoch), reshuffle_each_iteration=True)
        if repeat:
            ds = ds.repeat()
        ds = ds.enumerate().map(crop_cached, num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.map(read, num_parallel_calls=tf.data.AUTOTUNE)
        if cache:
            ds = ds.cache()
        ds = ds.shuffle(n, seed=_shuffle_seed(seed, start_epoch), reshuffle_each_iteration=True)
        if repeat:
            ds = ds.repeat()
        ds = ds.enumerate().map(decode_train, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), tf.cast(y, tf.int32)))
    if training and augment == "randaugment":
        ds = ds.map(_randaugment(seed, start_epoch, randaugment_magnitude), num_parallel_calls=None)
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


_DECODED: dict = {}  # (files, size) -> uint8 array; the last two kept (a trainer builds one pipeline per epoch)


def decoded_images(files, image_size: int):
    """Every file decoded and resized to `image_size` (antialiased), as one uint8 tensor [N, S, S, 3], kept in memory.

    Kept per process and reused by every later pipeline over the same files
    and size: the trainer makes a new pipeline each epoch (and each stage of
    progressive resizing), and tf.data's own `cache()` lives and dies with one.
    """
    import tensorflow as tf

    key = (tuple(os.fspath(f) for f in files), int(image_size))
    if key not in _DECODED:
        ds = make_dataset(
            list(key[0]), [0] * len(key[0]), image_size=image_size, batch_size=256, training=False, augment="none"
        )
        batches = [tf.cast(tf.round(x), tf.uint8) for x, _ in ds]
        while len(_DECODED) >= 2:
            _DECODED.pop(next(iter(_DECODED)))
        _DECODED[key] = tf.concat(batches, 0)
    return _DECODED[key]


def fits_in_memory(num_images: int, image_size: int, *, fraction: float = 0.25) -> bool:
    """True when `num_images` decoded uint8 images at `image_size` take at most `fraction` of physical memory
    and at most 2 GiB (a tf.data graph holding a larger constant cannot be serialised for distribution)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 << 30
    return num_images * image_size * image_size * 3 <= min(fraction * total, 2 << 30)


def _shuffle_seed(seed: int, start_epoch: int) -> int:
    return int(seed) * 7919 + int(start_epoch)


def _randaugment(seed, start_epoch, magnitude=10.0):
    """RandAugment (Cubuk et al. 2020) on a batch: N=2 ops at `magnitude` of 30 (EfficientNet's recipe: 10)."""
    from keras_effnet import flavours

    keras = flavours.keras3()
    layer = keras.layers.RandAugment(
        value_range=(0, 255), num_ops=2, factor=float(magnitude) / 30, seed=_shuffle_seed(seed, start_epoch)
    )

    def apply(images, labels):
        return layer(images, training=True), labels

    return apply


def representative_images(data_dir: str, n: int, image_size: int, *, seed: int = 0) -> np.ndarray:
    """`n` train images (float32, N x S x S x 3, 0..255, resized like eval) for TFLite int8 calibration.

    Drawn in a seeded order across all classes, so any `n` sees every class once
    `n` is at least the number of classes.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}.")
    files, labels, _, _ = scan_folder(os.path.join(os.fspath(data_dir), "train"))
    rng = np.random.default_rng(seed)
    by_class = {}
    for f, y in zip(files, labels):
        by_class.setdefault(y, []).append(f)
    queues = [list(rng.permutation(v)) for _, v in sorted(by_class.items())]
    order = []
    while len(order) < min(n, len(files)):
        for q in queues:
            if q and len(order) < n:
                order.append(q.pop())
    ds = make_dataset(
        order, [0] * len(order), image_size=image_size, batch_size=len(order), training=False, augment="none"
    )
    return next(iter(ds))[0].numpy()
