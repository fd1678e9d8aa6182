"""The embedded default dataset: ten procedurally drawn classes written as JPEG folders.

It exists so `make demo` trains end to end on a fresh machine with no download,
through the same folder loader as Imagenette (`root/train/<class>/*.jpg`,
`root/val/<class>/*.jpg`). Every image has a random background colour, a random
foreground colour (kept apart from the background), a random position, scale
and rotation, smooth background shading and pixel noise, so no class is
recognisable from colour alone; the classes differ in shape or texture only.
The dataset is a pure function of its arguments: the same seed gives the same
bytes.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile

import numpy as np
from PIL import Image, ImageDraw

CLASSES = (
    "circle",
    "square",
    "triangle",
    "ring",
    "cross",
    "hstripes",
    "vstripes",
    "checker",
    "dots",
    "diagonal",
)
MANIFEST = "synthetic.json"
FORMAT_VERSION = 3


def generate(
    root: str,
    *,
    num_classes: int = 10,
    train_per_class: int = 100,
    val_per_class: int = 30,
    image_size: int = 64,
    seed: int = 0,
) -> str:
    """Write the dataset under `root` (if a complete one with these arguments is not there) and return `root`.

    The files are drawn into a temporary directory next to `root` and renamed
    into place, so an interrupted run never leaves a half-written dataset; a
    manifest written last marks it complete.
    """
    _check_int("num_classes", num_classes, 2, len(CLASSES))
    _check_int("train_per_class", train_per_class, 1)
    _check_int("val_per_class", val_per_class, 1)
    _check_int("image_size", image_size, 16)
    _check_int("seed", seed, 0)
    root = os.path.abspath(os.fspath(root))
    spec = {
        "format_version": FORMAT_VERSION,
        "num_classes": num_classes,
        "train_per_class": train_per_class,
        "val_per_class": val_per_class,
        "image_size": image_size,
        "seed": seed,
    }
    if _complete(root, spec):
        return root
    if os.path.exists(root) and os.listdir(root):
        if not os.path.exists(os.path.join(root, MANIFEST)):
            raise ValueError(
                f"root: {root!r} exists, is not empty and is not a synthetic dataset (no {MANIFEST}); "
                "pass an empty or new directory."
            )
    parent = os.path.dirname(root)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".synthetic-", dir=parent)
    try:
        for split, per_class, split_id in (("train", train_per_class, 0), ("val", val_per_class, 1)):
            for label in range(num_classes):
                folder = os.path.join(tmp, split, CLASSES[label])
                os.makedirs(folder)
                for i in range(per_class):
                    rng = np.random.default_rng([seed, split_id, label, i])
                    image = draw(label, image_size, rng)
                    image.save(os.path.join(folder, f"{CLASSES[label]}_{i:05d}.jpg"), quality=92)
        with open(os.path.join(tmp, MANIFEST), "w") as f:
            json.dump(spec, f, indent=1)
        if os.path.exists(root):
            old = root + ".old-" + os.path.basename(tmp)
            os.replace(root, old)
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.replace(tmp, root)
        except OSError:
            if not _complete(root, spec):  # another process finished the same dataset first: keep its copy
                raise
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def _complete(root: str, spec: dict) -> bool:
    try:
        with open(os.path.join(root, MANIFEST)) as f:
            return json.load(f) == spec
    except (OSError, ValueError):
        return False


def _check_int(name, value, low, high=None):
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or value < low
        or (high is not None and value > high)
    ):
        allowed = f"an integer >= {low}" + (f" and <= {high}" if high is not None else "")
        raise ValueError(f"{name} must be {allowed}, got {value!r}.")


def _colours(rng):
    """A background and a foreground colour at least 140 apart (L1 over RGB), both random."""
    bg = rng.integers(0, 256, size=3)
    while True:
        fg = rng.integers(0, 256, size=3)
        if np.abs(fg - bg).sum() >= 140:
            return tuple(int(c) for c in bg), tuple(int(c) for c in fg)


def draw(label: int, size: int, rng: np.random.Generator) -> Image.Image:
    """One image of class `label`: a shape or texture in random colours, place, scale and angle, plus noise."""
    scale = 4  # drawn at 4x and downsampled: anti-aliased edges
    big = size * scale
    bg, fg = _colours(rng)
    image = Image.new("RGB", (big, big), bg)
    d = ImageDraw.Draw(image)
    name = CLASSES[label]
    radius = big * rng.uniform(0.3, 0.42)
    cx = big * rng.uniform(0.5 - 0.08, 0.5 + 0.08)
    cy = big * rng.uniform(0.5 - 0.08, 0.5 + 0.08)
    angle = rng.uniform(0, 2 * math.pi)
    width = max(2, int(radius * rng.uniform(0.25, 0.4)))
    period = big * rng.uniform(0.18, 0.26)

    if name == "circle":
        d.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=fg)
    elif name == "ring":
        d.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], outline=fg, width=width)
    elif name == "square":
        d.polygon(_regular(cx, cy, radius * 1.15, 4, angle), fill=fg)
    elif name == "triangle":
        d.polygon(_regular(cx, cy, radius * 1.2, 3, angle), fill=fg)
    elif name == "cross":
        for a in (angle, angle + math.pi / 2):
            dx, dy = math.cos(a) * radius, math.sin(a) * radius
            d.line([cx - dx, cy - dy, cx + dx, cy + dy], fill=fg, width=width)
    elif name in ("hstripes", "vstripes", "diagonal"):
        base = {"hstripes": 0.0, "vstripes": math.pi / 2, "diagonal": math.pi / 4}[name]
        if name == "diagonal" and rng.random() < 0.5:
            base = -math.pi / 4
        a = base + rng.uniform(-0.15, 0.15)
        _stripes(d, big, a, period, fg, rng)
    elif name == "checker":
        cell = period * 1.25
        off_x, off_y = rng.uniform(0, cell, size=2)
        n = int(big / cell) + 2
        for i in range(-1, n):
            for j in range(-1, n):
                if (i + j) % 2 == 0:
                    x0, y0 = off_x + i * cell - cell, off_y + j * cell - cell
                    d.rectangle([x0, y0, x0 + cell, y0 + cell], fill=fg)
    elif name == "dots":
        step = period
        dot = step * rng.uniform(0.2, 0.3)
        off_x, off_y = rng.uniform(0, step, size=2)
        n = int(big / step) + 2
        for i in range(-1, n):
            for j in range(-1, n):
                x, y = off_x + i * step, off_y + j * step
                d.ellipse([x - dot, y - dot, x + dot, y + dot], fill=fg)
    else:  # pragma: no cover - CLASSES and the branches are kept in step by a test
        raise ValueError(f"label must be in 0..{len(CLASSES) - 1}, got {label!r}.")

    image = image.resize((size, size), Image.BILINEAR)
    pixels = np.asarray(image, dtype=np.float32)
    yy, xx = np.mgrid[0:size, 0:size] / size
    shade = rng.uniform(-30, 30) * (xx - 0.5) + rng.uniform(-30, 30) * (yy - 0.5)
    pixels = pixels + shade[..., None] + rng.normal(0.0, 8.0, size=pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _regular(cx, cy, r, sides, angle):
    return [
        (cx + r * math.cos(angle + 2 * math.pi * k / sides), cy + r * math.sin(angle + 2 * math.pi * k / sides))
        for k in range(sides)
    ]


def _stripes(d, big, angle, period, fg, rng):
    """Parallel bands of width period/2 across the whole image, at `angle`."""
    nx, ny = -math.sin(angle), math.cos(angle)  # band normal
    tx, ty = math.cos(angle), math.sin(angle)
    c = big / 2
    offset = rng.uniform(0, period)
    length = big * 1.5
    k = -int(big / period) - 2
    while k * period < big:
        s = k * period + offset
        p0 = (c + nx * s, c + ny * s)
        p1 = (c + nx * (s + period / 2), c + ny * (s + period / 2))
        d.polygon(
            [
                (p0[0] - tx * length, p0[1] - ty * length),
                (p0[0] + tx * length, p0[1] + ty * length),
                (p1[0] + tx * length, p1[1] + ty * length),
                (p1[0] - tx * length, p1[1] - ty * length),
            ],
            fill=fg,
        )
        k += 1


def load_pixels(root: str, split: str, image_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(x float32 [N, image_size**2 * 3] in 0..1, y int [N]) of one split, resized with PIL's bilinear filter."""
    split_dir = os.path.join(os.fspath(root), split)
    names = sorted(n for n in os.listdir(split_dir) if os.path.isdir(os.path.join(split_dir, n)))
    xs, ys = [], []
    for label, name in enumerate(names):
        folder = os.path.join(split_dir, name)
        for f in sorted(os.listdir(folder)):
            with Image.open(os.path.join(folder, f)) as im:
                xs.append(
                    np.asarray(im.convert("RGB").resize((image_size, image_size), Image.BILINEAR), np.float32).ravel()
                    / 255.0
                )
            ys.append(label)
    return np.stack(xs), np.asarray(ys)


def linear_probe(root: str, image_size: int = 32, *, l2=(1e-4, 1e-3, 1e-2, 1e-1), steps: int = 300) -> dict:
    """The dataset's difficulty: val top-1 of a linear classifier (softmax regression) on raw pixels.

    Pixels are standardised with the train set's per-pixel mean and deviation;
    the classifier is trained by full-batch gradient descent with Nesterov
    momentum for each L2 strength in `l2`, and the best val top-1 over them is
    reported (generous to the linear model: the choice is made on val). Pure
    numpy, so it runs without TensorFlow.
    """
    x, y = load_pixels(root, "train", image_size)
    xv, yv = load_pixels(root, "val", image_size)
    mean, std = x.mean(0), x.std(0) + 1e-3
    x, xv = (x - mean) / std, (xv - mean) / std
    k = int(y.max()) + 1
    onehot = np.eye(k, dtype=np.float32)[y]
    results = {}
    for lam in l2:
        w = np.zeros((x.shape[1], k), np.float32)
        b = np.zeros(k, np.float32)
        vw, vb = np.zeros_like(w), np.zeros_like(b)
        lr = 0.5 / x.shape[1] ** 0.5
        for _ in range(steps):
            logits = (x @ (w + 0.9 * vw)) + (b + 0.9 * vb)
            p = np.exp(logits - logits.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            g = (p - onehot) / len(x)
            vw = 0.9 * vw - lr * (x.T @ g + lam * (w + 0.9 * vw))
            vb = 0.9 * vb - lr * g.sum(0)
            w, b = w + vw, b + vb
        results[lam] = {
            "train_top1": float(((x @ w + b).argmax(1) == y).mean()),
            "val_top1": float(((xv @ w + b).argmax(1) == yv).mean()),
        }
    best = max(results, key=lambda lam: results[lam]["val_top1"])
    return {
        "image_size": image_size,
        "num_train": len(x),
        "num_val": len(xv),
        "chance": 1 / k,
        "l2": best,
        **results[best],
        "all": results,
    }
