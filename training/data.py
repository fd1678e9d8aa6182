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
import functools
import os

import numpy as np
from PIL import Image

from training import augment as augment_lib
from training import check_cache
from training import decode as decode_lib

FORMATS = ("JPEG", "PNG", "BMP", "GIF")
SCAN_CACHE = ".decode_check.json"  # hidden: _list_files skips it, like every dot file
SCAN_CACHE_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Skipped:
    path: str
    reason: str

    def __str__(self):
        return f"{self.path}: {self.reason}"


@dataclasses.dataclass(frozen=True)
class Split:
    """One split folder as scanned: its decodable images in class order, their labels, the files it skipped,
    and `pil_files`: the images TensorFlow's decoders would not turn into PIL's RGB (`decode.needs_pil`), which the
    pipeline decodes with PIL. A value: nothing is remembered elsewhere about the files it lists."""

    files: tuple[str, ...]
    labels: tuple[int, ...]
    class_names: tuple[str, ...]
    skipped: tuple[Skipped, ...]
    pil_files: frozenset[str] | None  # None: not known (the pipeline decides each file from its header)


@dataclasses.dataclass(frozen=True)
class Splits:
    """The train and val file lists of one dataset directory, with one class list for both.

    `pil_files`: the images of either list that the pipeline decodes with PIL (`Split.pil_files`);
    pass it to `make_dataset` so that no file is opened again to decide.
    """

    data_dir: str
    class_names: tuple[str, ...]
    train_files: tuple[str, ...]
    train_labels: tuple[int, ...]
    val_files: tuple[str, ...]
    val_labels: tuple[int, ...]
    skipped: tuple[Skipped, ...]
    pil_files: frozenset[str] | None = None  # None: not known (decided from each file's header)

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


def scan_folder(split_dir: str, *, workers: int | None = None, cache: bool = True) -> Split:
    """The `Split` of one split directory `split_dir/<class>/*`.

    Classes are the sub-folders, sorted by name. Raises ValueError for a
    missing directory, no class folders, a class folder with no files or no
    decodable image, or no images at all. With `cache`, the verdicts are
    kept in `split_dir/SCAN_CACHE` (see `_checked`).
    """
    split_dir = os.fspath(split_dir)
    class_names, per_class = _class_folders(split_dir)
    verdicts = _checked(split_dir, [f for files in per_class for f in files], workers=workers, use_cache=cache)
    files, labels, skipped = [], [], []
    for label, (name, class_files) in enumerate(zip(class_names, per_class)):
        good = [f for f in class_files if verdicts[f][0] is None]
        skipped.extend(Skipped(f, verdicts[f][0]) for f in class_files if verdicts[f][0] is not None)
        if not good:
            raise ValueError(
                f"class folder {os.path.join(split_dir, name)!r} has {len(class_files)} file(s) and no decodable image "
                f"(first: {Skipped(class_files[0], verdicts[class_files[0]][0])})."
            )
        files.extend(good)
        labels.extend([label] * len(good))
    return Split(
        files=tuple(files),
        labels=tuple(labels),
        class_names=tuple(class_names),
        skipped=tuple(skipped),
        pil_files=frozenset(f for f in files if verdicts[f][1]),
    )


def _class_folders(split_dir: str) -> tuple[list[str], list[list[str]]]:
    """(class names, the files of each class) of `split_dir/<class>/*`; ValueError for a folder mistake."""
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
    return class_names, per_class


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
    if train.class_names != val.class_names:
        only_train = sorted(set(train.class_names) - set(val.class_names))
        only_val = sorted(set(val.class_names) - set(train.class_names))
        raise ValueError(
            f"data_dir: {data_dir!r}: train and val have different class folders "
            f"(only in train: {only_train or 'none'}; only in val: {only_val or 'none'})."
        )
    return Splits(
        data_dir=data_dir,
        class_names=train.class_names,
        train_files=train.files,
        train_labels=train.labels,
        val_files=val.files,
        val_labels=val.labels,
        skipped=train.skipped + val.skipped,
        pil_files=train.pil_files | val.pil_files,
    )


def _check_one(path: str) -> tuple[str | None, bool]:
    """(check_image's verdict, needs_pil) of one file, from one open of it."""
    reason = check_image(path)
    return reason, True if reason else decode_lib.needs_pil(path)


def _checked(
    split_dir: str, files: list[str], *, workers: int | None, use_cache: bool
) -> dict[str, tuple[str | None, bool]]:
    """{path: (None or the reason it is not an image, needs_pil)} for `files`, decoding only what the cache does
    not vouch for.

    The decode check opens and fully decodes every file, which over Imagenette's
    13k images costs a minute on two cores. Its verdicts are kept in
    `split_dir/SCAN_CACHE` (training.check_cache), keyed by the path
    relative to `split_dir` and valid while the file's size and mtime (ns) are
    unchanged: a resumed or second run decodes only new or changed files.
    """
    cache_path = os.path.join(split_dir, SCAN_CACHE)
    entries = check_cache.load(cache_path, SCAN_CACHE_VERSION, "files") if use_cache else {}
    stats, todo, verdicts = {}, [], {}
    for path in files:
        rel = os.path.relpath(path, split_dir)
        try:
            stats[path] = [rel, *check_cache.stamp(path)]
        except OSError:
            stats[path] = None
        entry = entries.get(rel)
        if stats[path] and isinstance(entry, list) and len(entry) == 4 and entry[:2] == stats[path][1:]:
            verdicts[path] = (entry[2], bool(entry[3]))
        else:
            todo.append(path)
    if todo:
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers or min(16, (os.cpu_count() or 1) * 2)) as pool:
            verdicts.update(zip(todo, pool.map(_check_one, todo)))
    if use_cache and (todo or len(entries) != len(files)):
        fresh = {stats[p][0]: [*stats[p][1:], *verdicts[p]] for p in files if stats[p]}
        check_cache.save(cache_path, SCAN_CACHE_VERSION, "files", fresh)
    return {path: verdicts[path] for path in files}


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
    crop_area=augment_lib.CROP_AREA,
    randaugment_magnitude: float = 10.0,
    pil_files=None,
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
    `pil_files`: the files to decode with PIL, as the scan found them (`Split.pil_files`); None decides
    each file from its header (`decode.needs_pil`).
    """
    files = [os.fspath(f) for f in files]
    labels = [int(x) for x in labels]
    if drop_remainder is None:
        drop_remainder = training
    check_arguments(
        files, labels, image_size=image_size, batch_size=batch_size, augment=augment, drop_remainder=drop_remainder
    )
    size = int(image_size)
    order = dict(seed=seed, start_epoch=start_epoch, repeat=repeat)
    if not (training and augment != "none"):
        ds = _eval_images(files, labels, pil_files, size, cache=cache, shuffle=training, **order)
    elif cache and fits_in_memory(len(files), size):
        ds = _cached_train_images(files, labels, pil_files, size, crop_area, **order)
    else:
        ds = _streamed_train_images(files, labels, pil_files, size, crop_area, cache=cache, **order)
    ds = _batched(ds, batch_size, drop_remainder)
    if training and augment == "randaugment":
        ds = ds.map(augment_lib.randaugment(seed, start_epoch, randaugment_magnitude), num_parallel_calls=None)
    return finish_pipeline(ds, "DATA")


def check_arguments(files, labels, *, image_size, batch_size, augment, drop_remainder) -> None:
    """ValueError, naming the argument, for what `make_dataset` cannot build a pipeline from."""
    if len(files) != len(labels):
        raise ValueError(f"files and labels must have the same length, got {len(files)} and {len(labels)}.")
    if not files:
        raise ValueError("files is empty: nothing to load.")
    if augment not in augment_lib.AUGMENTS:
        raise ValueError(f"augment must be one of {augment_lib.AUGMENTS}, got {augment!r}.")
    for name, value, low in (("image_size", image_size, 1), ("batch_size", batch_size, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")
    if drop_remainder and len(files) < batch_size:
        raise ValueError(
            f"batch_size {batch_size} is larger than the {len(files)} images available and drop_remainder is on: "
            "no batch would be produced. Lower batch_size."
        )


def pil_flags(files, pil_files=None) -> list[bool]:
    """For each file, whether the pipeline decodes it with PIL: membership of `pil_files` (the scan's
    verdicts) when given, else `decode.needs_pil` on its header."""
    if pil_files is None:
        return [decode_lib.needs_pil(f) for f in files]
    return [f in pil_files for f in files]


def _file_dataset(files, labels, pil_files):
    """(path, file bytes, label, pil) elements, in the order of `files`."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((files, labels, pil_flags(files, pil_files)))
    return ds.map(decode_lib.read_file, num_parallel_calls=tf.data.AUTOTUNE)


def _ordered(ds, n, *, shuffle, seed, start_epoch, repeat):
    """`ds` reshuffled each epoch (seeded by seed and start_epoch) when `shuffle`, repeated forever when `repeat`."""
    if shuffle:
        ds = ds.shuffle(n, seed=augment_lib.shuffle_seed(seed, start_epoch), reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    return ds


def _eval_images(files, labels, pil_files, size, *, cache, shuffle, **order):
    """Whole images resized to size x size; kept after the first pass with `cache`."""
    import tensorflow as tf

    ds = _file_dataset(files, labels, pil_files).map(
        functools.partial(decode_lib.decode_eval, size=size), num_parallel_calls=tf.data.AUTOTUNE
    )
    if cache:
        ds = ds.cache()
    return _ordered(ds, len(files), shuffle=shuffle, **order)


def _cached_train_images(files, labels, pil_files, size, crop_area, **order):
    """Decoded once per process at the training size, kept as uint8; each step only crops, resizes back and flips."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((decoded_images(files, size, pil_files=pil_files), labels))
    ds = _ordered(ds, len(files), shuffle=True, **order)
    crop = functools.partial(
        decode_lib.crop_cached, size=size, seed=order["seed"], start_epoch=order["start_epoch"], crop_area=crop_area
    )
    return ds.enumerate().map(crop, num_parallel_calls=tf.data.AUTOTUNE)


def _streamed_train_images(files, labels, pil_files, size, crop_area, *, cache, **order):
    """Random-resized-crop and flip from the files (their bytes kept in memory with `cache`)."""
    import tensorflow as tf

    ds = _file_dataset(files, labels, pil_files)
    if cache:
        ds = ds.cache()
    ds = _ordered(ds, len(files), shuffle=True, **order)
    crop = functools.partial(
        decode_lib.decode_train, size=size, seed=order["seed"], start_epoch=order["start_epoch"], crop_area=crop_area
    )
    return ds.enumerate().map(crop, num_parallel_calls=tf.data.AUTOTUNE)


def _batched(ds, batch_size, drop_remainder):
    """Batches of float32 images and int32 labels."""
    import tensorflow as tf

    ds = ds.batch(batch_size, drop_remainder=drop_remainder, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.map(lambda x, y: (tf.cast(x, tf.float32), tf.cast(y, tf.int32)))


def finish_pipeline(ds, auto_shard: str):
    """`ds` with deterministic order and the given auto-shard policy, prefetching."""
    import tensorflow as tf

    options = tf.data.Options()
    options.deterministic = True
    options.experimental_distribute.auto_shard_policy = getattr(tf.data.experimental.AutoShardPolicy, auto_shard)
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


_DECODED: dict = {}  # (files, size) -> uint8 array; the last two kept (a trainer builds one pipeline per epoch)


def decoded_images(files, image_size: int, *, pil_files=None):
    """Every file decoded and resized to `image_size` (antialiased), as one uint8 tensor [N, S, S, 3], kept in memory.

    Kept per process and reused by every later pipeline over the same files
    and size: the trainer makes a new pipeline each epoch (and each stage of
    progressive resizing), and tf.data's own `cache()` lives and dies with one.
    """
    import tensorflow as tf

    key = (tuple(os.fspath(f) for f in files), int(image_size))
    if key not in _DECODED:
        ds = make_dataset(
            list(key[0]),
            [0] * len(key[0]),
            image_size=image_size,
            batch_size=256,
            training=False,
            augment="none",
            pil_files=pil_files,
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


def representative_images(source, n: int, image_size: int, *, seed: int = 0) -> np.ndarray:
    """`n` train images (float32, N x S x S x 3, 0..255, resized like eval) for TFLite int8 calibration.

    `source`: the `Splits` of a dataset already scanned (its train files), or a dataset folder (its train/ is
    scanned here). Drawn in a seeded order across all classes, so any `n` sees every class once `n` is at least
    the number of classes.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}.")
    if isinstance(source, Splits):
        split = Split(source.train_files, source.train_labels, source.class_names, (), source.pil_files)
    else:
        split = scan_folder(os.path.join(os.fspath(source), "train"))
    rng = np.random.default_rng(seed)
    shuffled = []  # the indices of each class in a seeded order, class after class
    for label in sorted(set(split.labels)):
        members = [i for i, y in enumerate(split.labels) if y == label]
        shuffled.extend(rng.permutation(members)[::-1].tolist())
    order = [split.files[shuffled[i]] for i in round_robin([split.labels[j] for j in shuffled])[:n]]
    ds = make_dataset(
        order,
        [0] * len(order),
        image_size=image_size,
        batch_size=len(order),
        training=False,
        augment="none",
        pil_files=split.pil_files,
    )
    return next(iter(ds))[0].numpy()


def round_robin(labels) -> list[int]:
    """The indices of `labels` taking one of each class in turn (classes in label order, each class's indices in
    their order), so that any prefix spreads over the classes: every class appears before any appears twice."""
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(int(y), []).append(i)
    queues = [list(v) for _, v in sorted(by_class.items())]
    order = []
    while any(queues):
        for q in queues:
            if q:
                order.append(q.pop(0))
    return order
