"""B0 at 224 px, bf16 + XLA, from cached data, on one GPU and on all GPUs: `python benchmarks/gpu.py`.

    python benchmarks/gpu.py                    # on a GPU machine: appends its rows to docs/measurements/benchmarks.md
    python benchmarks/gpu.py --input=shards     # the same images as TFRecord shards (decoded every step)
    python benchmarks/gpu.py --data_dir=SHARDS  # ImageNet-format shards already written
    python benchmarks/gpu.py --image_size=32 --steps=3 --per_class=4 --out=/tmp/x.md   # the logic, on CPU

Each configuration is one `training.loop.run` of the trainer's GPU recipe
(mixed_bfloat16, XLA, steps_per_loop so the host is not in the step loop,
`--cache` so JPEG decoding runs once and every later epoch reads decoded
images from memory, no augmentation): epoch 1 warms up (tracing, XLA
compilation, filling the cache) and the steady-state rate of epoch 2 is
reported, in images per second over all devices and per device. Data: the
synthetic set (generated locally; no download), decoded at --image_size, or
with `--input=shards` the same set written as ImageNet-format TFRecord shards
(training/make_shards.py) and read through the shard pipeline, which decodes
every image every step (no in-memory cache): the input path of ImageNet-sized
sets. A `--data_dir` holding shards is read as shards.

Rows are appended to `--out` (default docs/measurements/benchmarks.md) under "GPU
throughput", with the device name, TensorFlow version, date and load
average. Without a GPU the rows say "CPU (smoke run)" and are not GPU
figures: that mode only checks the logic, with a tiny size.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import tempfile
import time

from common import cli, markdown
from common.files import atomic_write

DEFAULT_OUT = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "measurements", "benchmarks.md"
)
HEADER = "## GPU throughput"
COLUMNS = (
    "date",
    "device",
    "devices",
    "input",
    "image size",
    "global batch",
    "precision",
    "XLA",
    "steps/loop",
    "images/s",
    "images/s per device",
    "load avg",
    "TF",
)
TABLE = "\n".join(markdown.table_lines(COLUMNS, [])) + "\n"


def measure(
    data_dir, work, *, devices: int, image_size: int, batch_per_device: int, steps: int, gpu: bool, model_fn=None
) -> dict:
    """One run of the recipe on `devices` devices; `model_fn` (default: B0) is for the CPU smoke test."""
    from training import loop, shards
    from training.config import TrainConfig

    config = TrainConfig(
        phi=0,
        data_dir=data_dir,
        out=os.path.join(work, f"run{devices}"),
        image_size=image_size,
        batch_size=batch_per_device * devices,
        epochs=2,
        steps_per_epoch=steps,
        augment="none",
        cache=True,
        mixed_precision="bf16",
        jit_compile="on",
        strategy="mirrored" if devices > 1 else "one_device",
        num_gpus=devices if gpu else None,
        cpu_replicas=1,
        steps_per_loop=None,
        tensorboard=False,
        verbose=0,
        overwrite=True,
        warmup_epochs=0.0,
    )
    result = loop.run(config, log=lambda *a, **k: None, model_fn=model_fn)
    steady = result["epochs"][-1]["images_per_sec"]
    return {
        "devices": devices,
        "input": "shards" if shards.is_shard_dir(data_dir) else "folder",
        "global_batch": config.batch_size,
        "images_per_sec": steady,
        "per_device": steady / devices,
        "dtype_policy": result["dtype_policy"],
        "jit": result["jit_compile"],
    }


def device_name(gpu: bool) -> str:
    import tensorflow as tf

    if not gpu:
        return f"CPU (smoke run, not a GPU figure; {platform.processor() or platform.machine()})"
    details = tf.config.experimental.get_device_details(tf.config.list_physical_devices("GPU")[0])
    return details.get("device_name", "GPU")


def append_rows(path: str, rows: list[dict], *, device: str, image_size: int, steps_per_loop: str) -> None:
    import tensorflow as tf

    text = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    load = os.getloadavg()[0]
    lines = "".join(
        markdown.row(
            [
                time.strftime("%Y-%m-%d"),
                device,
                r["devices"],
                r.get("input", "folder"),
                image_size,
                r["global_batch"],
                r["dtype_policy"],
                "on" if r["jit"] else "off",
                steps_per_loop,
                f"{r['images_per_sec']:,.0f}",
                f"{r['per_device']:,.0f}",
                f"{load:.2f}",
                tf.__version__,
            ]
        )
        + "\n"
        for r in rows
    )
    if HEADER not in text:
        text = (
            text.rstrip("\n")
            + f"\n\n{HEADER}\n\n`python benchmarks/gpu.py`: EfficientNet-B0, bf16 + XLA, decoded images "
            "cached in memory (input folder) or decoded every step (input shards), no augmentation; steady-state "
            "images/s of epoch 2 over all devices.\n\n" + TABLE + lines
        )
    else:
        head, tail = text.split(HEADER, 1)
        # Rows go at the end of this section's table (the first blank line after it, or the next section).
        cut = tail.find("\n## ")
        section, rest = (tail, "") if cut < 0 else (tail[:cut], tail[cut:])
        text = head + HEADER + section.rstrip("\n") + "\n" + lines + ("\n" + rest.lstrip("\n") if rest else "")
    atomic_write(path, text)


@dataclasses.dataclass(frozen=True)
class GpuBenchConfig:
    image_size: int = cli.flag(224, "Image size.", group="run")
    batch_per_device: int = cli.flag(256, "Batch per device (the global batch is this times the devices).", group="run")
    steps: int = cli.flag(60, "Steps per epoch; epoch 2 is timed.", group="run")
    per_class: int = cli.flag(0, "Synthetic images per class (0: enough for the steps).", group="data")
    data_dir: str | None = cli.flag(
        None, "A folder of images or TFRecord shards (default: the synthetic set, generated).", group="data"
    )
    input: str = cli.flag(
        "folder",
        "shards: write the images as TFRecord shards first and train from them.",
        group="data",
        choices=("folder", "shards"),
    )
    out: str = cli.flag(DEFAULT_OUT, "Markdown file the rows are appended to.", group="output")


def main(argv=None) -> int:
    return cli.main(GpuBenchConfig, bench, argv, prog="benchmarks/gpu.py", description=__doc__.splitlines()[0])


def bench(args: GpuBenchConfig) -> int:
    import tensorflow as tf

    from training import make_shards, shards, synthetic

    gpus = tf.config.list_physical_devices("GPU")
    work = tempfile.mkdtemp(prefix="gpu_bench-")
    per_class = args.per_class or max(1, -(-args.steps * args.batch_per_device * max(1, len(gpus)) // 10))
    data_dir = args.data_dir or synthetic.generate(
        os.path.join(work, "data"), train_per_class=per_class, val_per_class=1, image_size=args.image_size, seed=0
    )
    if args.input == "shards" and not shards.is_shard_dir(data_dir):
        shard_dir = os.path.join(work, "shards")
        make_shards.write_shards(make_shards.ShardsConfig(data_dir=data_dir, out=shard_dir), log=lambda *a: None)
        data_dir = shard_dir
    counts = [1] + ([len(gpus)] if len(gpus) > 1 else [])
    rows = []
    for devices in counts:
        row = measure(
            data_dir,
            work,
            devices=devices,
            image_size=args.image_size,
            batch_per_device=args.batch_per_device,
            steps=args.steps,
            gpu=bool(gpus),
        )
        print(
            f"{devices} device(s), {row['input']}: {row['images_per_sec']:,.0f} images/s ({row['per_device']:,.0f} per "
            "device)",
            flush=True,
        )
        rows.append(row)
    append_rows(args.out, rows, device=device_name(bool(gpus)), image_size=args.image_size, steps_per_loop="auto")
    print(f"appended {len(rows)} row(s) to {args.out}")
    return 0


if __name__ == "__main__":
    cli.run_main(main)
