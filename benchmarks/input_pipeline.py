"""`python -m benchmarks.input_pipeline`: the input pipeline alone, and the up-front decode check cold and warm.

1. Throughput of `training.data.make_dataset` with the in-memory cache: images
   decoded once at the output size, then every step crops (random-resized-crop)
   and flips each uint8 image, resizes it back (the one float pass), batches
   and casts. Measured after the cache is filled,
   with tf.data limited to 1 thread and then to all cores, so the figure per core
   is read directly. No model runs.
2. `training.data.scan_folder` over a folder of small JPEG files: cold (no
   cache file: every image opened and fully decoded) and warm (the cache file
   vouches for every file by size and mtime).
3. With `--shards` (default): the same source images written as ImageNet-format
   TFRecord shards (training/make_shards.py), read by `training.shards.make_dataset`
   (shards interleaved, records shuffled, random-resized-crop decoding only the
   JPEG crop window, flip, batch), beside the folder pipeline without the
   in-memory cache (one file read and one decode-and-crop per image per step),
   the like-for-like comparison: both decode every image every step. Each on
   1 thread and on all cores.

Prints one JSON object; `--markdown` prints table rows for docs/measurements/benchmarks.md.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time

import numpy as np

from common import cli, markdown


@dataclasses.dataclass(frozen=True)
class PipelineBenchConfig:
    image_size: int = cli.flag(224, "Output size of the pipeline.", group="pipeline")
    source_size: int = cli.flag(320, "Side of the generated source JPEGs.", group="pipeline")
    num_images: int = cli.flag(512, "Source images for the pipeline measurement.", group="pipeline")
    batch_size: int = cli.flag(64, "Batch size.", group="pipeline")
    batches: int = cli.flag(40, "Batches timed (after one warm-up pass).", group="pipeline")
    scan_images: int = cli.flag(10_000, "Small JPEGs for the scan measurement.", group="scan")
    scan_size: int = cli.flag(64, "Side of the small JPEGs.", group="scan")
    workdir: str | None = cli.flag(
        None, "Where to write the generated images (none: a temporary folder, removed).", group="output"
    )
    shards: bool = cli.flag(
        True, "Also time the same images from TFRecord shards and from the files without the cache.", group="pipeline"
    )
    num_shards: int = cli.flag(8, "Shards the source images are written to.", group="pipeline")
    markdown: bool = cli.flag(
        False, "Print table rows for docs/measurements/benchmarks.md instead of JSON.", group="output"
    )


def _write_jpegs(root: str, n: int, size: int, classes: int = 10) -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    from PIL import Image

    for i in range(n):
        folder = os.path.join(root, f"c{i % classes}")
        os.makedirs(folder, exist_ok=True)
        # A smooth picture plus a little noise: JPEG sizes like a photo's, not like white noise.
        shifted = np.roll(base, (i * 7) % size, axis=0)
        Image.fromarray(shifted).resize((size, size), Image.BILINEAR).save(
            os.path.join(folder, f"{i:06d}.jpg"), quality=90
        )


def measure_pipeline(split, *, image_size, batch_size, batches, threads, cache=True, shard_set=None):
    """img/s of the training pipeline: the folder one over `split` (a `data.Split`; `cache` or not) or, given
    `shard_set`, the shard one."""
    import tensorflow as tf

    from training import data, shards

    if shard_set is not None:
        ds = shards.make_dataset(
            shard_set, image_size=image_size, batch_size=batch_size, training=True, repeat=True, crop_area=(0.08, 1.0)
        )
    else:
        ds = data.make_dataset(
            split.files,
            split.labels,
            image_size=image_size,
            batch_size=batch_size,
            training=True,
            augment="basic",
            cache=cache,
            repeat=True,
            crop_area=(0.08, 1.0),
            pil_files=split.pil_files,
        )
    options = tf.data.Options()
    if threads:
        options.threading.private_threadpool_size = threads
        options.threading.max_intra_op_parallelism = 1
    it = iter(ds.with_options(options))
    for _ in range(max(2, len(split.files) // batch_size)):
        next(it)  # warm-up: fills the prefetch buffer, traces the maps
    start = time.perf_counter()
    for _ in range(batches):
        x, _ = next(it)
    x[0].numpy() if isinstance(x, tuple) else x.numpy()
    seconds = time.perf_counter() - start
    return batches * batch_size / seconds


def bench(config: PipelineBenchConfig) -> int:
    import tensorflow as tf

    for name in (
        "image_size",
        "source_size",
        "num_images",
        "batch_size",
        "batches",
        "scan_images",
        "scan_size",
        "num_shards",
    ):
        cli.positive(name, getattr(config, name))
    work = config.workdir or tempfile.mkdtemp(prefix="pipeline-bench-")
    try:
        pipeline = measure_cached_and_shards(config, work)
        scan = measure_scan(config, work)
    finally:
        if not config.workdir:
            shutil.rmtree(work, ignore_errors=True)
    result = {
        "tensorflow": tf.__version__,
        "cpu_count": os.cpu_count() or 1,
        "load_average": os.getloadavg(),
        "pipeline": pipeline,
        "scan": scan,
    }
    if config.markdown:
        print("\n".join(markdown_rows(result, config.num_shards)))
    else:
        print(json.dumps(result, indent=1))
    return 0


def measure_cached_and_shards(config: PipelineBenchConfig, work: str) -> dict:
    """img/s of the in-memory path on 1 and on every thread and, with --shards, of the uncached folder and the
    shard paths on the same images; and the seconds to fill the cache."""
    from training import data

    cores = os.cpu_count() or 1
    src = os.path.join(work, "pipeline", "train")
    _write_jpegs(src, config.num_images, config.source_size)
    split = data.scan_folder(src)
    decode_start = time.perf_counter()
    data.decoded_images(split.files, config.image_size, pil_files=split.pil_files)
    decode_seconds = time.perf_counter() - decode_start
    sizes = {"image_size": config.image_size, "batch_size": config.batch_size, "batches": config.batches}
    one = measure_pipeline(split, threads=1, **sizes)
    every = measure_pipeline(split, threads=0, **sizes)
    sharded = {}
    if config.shards:
        from training import make_shards, shards

        _write_jpegs(os.path.join(work, "pipeline", "val"), 10, config.source_size)
        shard_dir = os.path.join(work, "shards")
        make_shards.write_shards(
            make_shards.ShardsConfig(
                data_dir=os.path.dirname(src), out=shard_dir, train_shards=config.num_shards, val_shards=1
            ),
            log=lambda *a: None,
        )
        shard_set = shards.load_shards(shard_dir).train_files
        for name, kwargs in (("files_no_cache", {"cache": False}), ("shards", {"shard_set": shard_set})):
            for threads in (1, 0):
                sharded[f"{name}_images_per_sec_{threads or cores}_threads"] = measure_pipeline(
                    split, threads=threads, **sizes, **kwargs
                )
    return {
        "image_size": config.image_size,
        "source_size": config.source_size,
        "images": config.num_images,
        "batch_size": config.batch_size,
        "fill_cache_seconds": decode_seconds,
        "images_per_sec_1_thread": one,
        f"images_per_sec_{cores}_threads": every,
        **sharded,
    }


def measure_scan(config: PipelineBenchConfig, work: str) -> dict:
    """Seconds of the decode check over --scan_images JPEGs, cold (every file opened) and warm (the cache)."""
    from training import data

    scan_dir = os.path.join(work, "scan")
    _write_jpegs(scan_dir, config.scan_images, config.scan_size)
    start = time.perf_counter()
    data.scan_folder(scan_dir)
    cold = time.perf_counter() - start
    start = time.perf_counter()
    data.scan_folder(scan_dir)
    warm = time.perf_counter() - start
    return {"images": config.scan_images, "size": config.scan_size, "cold_seconds": cold, "warm_seconds": warm}


def markdown_rows(result: dict, num_shards: int) -> list[str]:
    """The docs' table rows (no header): each path's img/s on 1 thread and on every core, and the decode check."""
    p, s, cores = result["pipeline"], result["scan"], result["cpu_count"]
    rows = [
        [
            f"pipeline from the in-memory cache, {p['image_size']} px out (random-resized-crop + flip + batch)",
            f"{p['images_per_sec_1_thread']:,.0f} img/s on 1 thread",
            f"{p[f'images_per_sec_{cores}_threads']:,.0f} img/s on {cores}",
        ]
    ]
    for name, what in (
        ("files_no_cache", "folder, files read and decoded every step (no cache)"),
        ("shards", f"TFRecord shards ({num_shards}), records decoded every step"),
    ):
        if f"{name}_images_per_sec_1_threads" in p:
            rows.append(
                [
                    f"pipeline from the {what}, {p['image_size']} px out",
                    f"{p[f'{name}_images_per_sec_1_threads']:,.0f} img/s on 1 thread",
                    f"{p[f'{name}_images_per_sec_{cores}_threads']:,.0f} img/s on {cores}",
                ]
            )
    rows.append(
        [
            f"decode check of {s['images']:,} JPEGs ({s['size']} px)",
            f"cold {s['cold_seconds']:.1f} s",
            f"warm {s['warm_seconds']:.2f} s",
        ]
    )
    return [markdown.row(r) for r in rows]


def main(argv=None) -> int:
    return cli.main(
        PipelineBenchConfig,
        bench,
        argv,
        prog="keras-effnet-bench-pipeline",
        description="Input pipeline throughput from the in-memory cache, from the files and from TFRecord "
        "shards, and the decode check cold and warm.",
    )


if __name__ == "__main__":
    cli.run_main(main)
