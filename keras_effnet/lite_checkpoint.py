"""The official EfficientNet-Lite checkpoints, loaded by their variable names.

EfficientNet-Lite0..4 are the mobile variants of EfficientNet (Tan & Le,
"EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks",
ICML 2019, https://arxiv.org/abs/1905.11946) that the authors published in
March 2020 ("Higher accuracy on vision models with EfficientNet-Lite", TensorFlow
blog): no squeeze-excitation, ReLU6 instead of swish, stem and head not scaled,
so that they quantize well to int8. Their ImageNet checkpoints come from
https://github.com/tensorflow/tpu/tree/master/models/official/efficientnet/lite
as `efficientnet-lite{N}.tar.gz` under `OFFICIAL_URL`, each a TensorFlow 1
checkpoint `efficientnet-lite{N}/model.ckpt.*` written by that code
(`efficientnet_lite_builder.py` around `efficientnet_model.py`).

The names are those TF1 gives layers inside `tf.variable_scope`, numbered in
call order within each scope, so they are derived here rather than listed:

    efficientnet-lite0/stem/conv2d/kernel
    efficientnet-lite0/stem/tpu_batch_normalization/{gamma,beta,moving_mean,moving_variance}
    efficientnet-lite0/blocks_{i}/conv2d/kernel                          1x1 expansion
    efficientnet-lite0/blocks_{i}/tpu_batch_normalization/...
    efficientnet-lite0/blocks_{i}/depthwise_conv2d/depthwise_kernel
    efficientnet-lite0/blocks_{i}/tpu_batch_normalization_1/...
    efficientnet-lite0/blocks_{i}/conv2d_1/kernel                        1x1 projection
    efficientnet-lite0/blocks_{i}/tpu_batch_normalization_2/...
    efficientnet-lite0/head/conv2d/kernel, head/tpu_batch_normalization/...
    efficientnet-lite0/head/dense/{kernel,bias}

Blocks are numbered over the whole network in build order (`blocks_0` is
Keras' `block1a`). A block with expand ratio 1 has no expansion, so its
depthwise BN is `tpu_batch_normalization` and its projection `conv2d`. Kernels
have Keras' layout already (HWIO; depthwise H W C 1; dense in x out). The
preprocessing, (x - 127) / 128 on RGB in [0, 255], is outside the official
graph and inside ours (the `normalization` layer, not in the checkpoint).

The training code keeps an exponential moving average of every trainable
variable and of the BN statistics, stored as `<name>/ExponentialMovingAverage`,
and evaluates with those averages: the published accuracies are the EMA
weights', so `load` takes the EMA copy and falls back to the raw variable only
where a checkpoint has none.
"""

from __future__ import annotations

import os
import re
import tarfile
import tempfile

from keras_effnet import architecture, families

OFFICIAL_URL = "https://storage.googleapis.com/cloud-tpu-checkpoints/efficientnet/lite/"
EMA_SUFFIX = "/ExponentialMovingAverage"
CLASSES = 1000
BN_WEIGHTS = ("gamma", "beta", "moving_mean", "moving_variance")  # Keras BatchNormalization's weight order
SCOPE_PATTERN = re.compile(r"^(efficientnet-lite(\d+))/")
# A block's layers in call order, with the kind of TF1 layer each one was in the official graph.
BLOCK_OPS = (
    ("expand_conv", "conv2d"),
    ("expand_bn", "tpu_batch_normalization"),
    ("dwconv", "depthwise_conv2d"),
    ("bn", "tpu_batch_normalization"),
    ("project_conv", "conv2d"),
    ("project_bn", "tpu_batch_normalization"),
)
_BLOCK_LAYER = re.compile(r"^block(\d+)([a-z]+)_(" + "|".join(op for op, _ in BLOCK_OPS) + r")$")
_FIXED = {
    "stem_conv": ("stem", "conv2d"),
    "stem_bn": ("stem", "tpu_batch_normalization"),
    "top_conv": ("head", "conv2d"),
    "top_bn": ("head", "tpu_batch_normalization"),
    "predictions": ("head", "dense"),
}
PREPROCESSING_LAYERS = ("normalization",)  # weights of ours the official graph has not


def scope_name(phi: int) -> str:
    """The variable scope (and file name) of EfficientNet-Lite`phi`: "efficientnet-lite0"."""
    return f"efficientnet-lite{int(phi)}"


def tarball_url(phi: int) -> str:
    return f"{OFFICIAL_URL}{scope_name(phi)}.tar.gz"


def download_hint(phi: int) -> str:
    """One sentence telling the user where the official checkpoint is and how to pass it."""
    return (
        f"For EfficientNet-Lite{int(phi)} download the official checkpoint {tarball_url(phi)} "
        f"and pass its path as weights= (the .tar.gz, the unpacked folder or its model.ckpt prefix)."
    )


def _weight_names(kind: str) -> list[str]:
    if kind == "tpu_batch_normalization":
        return list(BN_WEIGHTS)
    if kind == "depthwise_conv2d":
        return ["depthwise_kernel"]
    if kind == "dense":
        return ["kernel", "bias"]
    return ["kernel"]


def variable_map(model, scope: str | None = None) -> list[tuple[str, int, str]]:
    """(Keras layer name, weight index, official variable name without the EMA suffix) for every weight.

    `scope` is the checkpoint's top scope, "efficientnet-lite{N}"; None takes
    the model's own variant (`model_variant`). The in-model preprocessing
    (`normalization`) is not in the official graph and is left out. Raises
    ValueError for a weighted layer that has no counterpart in the official
    EfficientNet-Lite graph (squeeze-excitation, for instance).
    """
    if scope is None:
        phi = model_variant(model)
        if phi is None:
            raise ValueError(f"model {model.name!r} is not an EfficientNet-Lite0..4 network; pass scope= explicitly.")
        scope = scope_name(phi)
    layers = [layer for layer in model.layers if layer.weights and layer.name not in PREPROCESSING_LAYERS]
    blocks = {}  # (stage, letter count, letters), which sorts in build order -> {op: layer}
    for layer in layers:
        match = _BLOCK_LAYER.match(layer.name)
        if match:
            blocks.setdefault((int(match.group(1)), len(match.group(2)), match.group(2)), {})[match.group(3)] = layer
        elif layer.name not in _FIXED:
            raise ValueError(
                f"layer {layer.name!r} of model {model.name!r} has no counterpart in the official "
                "EfficientNet-Lite graph (expected stem_conv, stem_bn, block*_{expand_conv,expand_bn,dwconv,bn,"
                "project_conv,project_bn}, top_conv, top_bn, predictions)."
            )
    by_layer = {}
    for layer_name, (where, kind) in _FIXED.items():
        by_layer[layer_name] = (f"{scope}/{where}/{kind}", kind)
    for index, key in enumerate(sorted(blocks)):
        ops = blocks[key]
        used: dict[str, int] = {}
        for op, kind in BLOCK_OPS:
            if op not in ops:
                continue
            count = used.get(kind, 0)
            used[kind] = count + 1
            tf_layer = kind if count == 0 else f"{kind}_{count}"
            by_layer[ops[op].name] = (f"{scope}/blocks_{index}/{tf_layer}", kind)
    out = []
    for layer in layers:
        prefix, kind = by_layer[layer.name]
        names = _weight_names(kind)
        if len(names) != len(layer.weights):
            raise ValueError(
                f"layer {layer.name!r} has {len(layer.weights)} weights, the official {kind} has {len(names)} "
                f"({', '.join(names)})."
            )
        out.extend((layer.name, i, f"{prefix}/{name}") for i, name in enumerate(names))
    return out


def model_variant(model) -> int | None:
    """N when `model` has the blocks (names, depthwise and projection shapes) of EfficientNet-LiteN, else None."""
    shapes = {layer.name: tuple(int(d) for d in layer.weights[0].shape) for layer in model.layers if layer.weights}
    for phi in sorted(families.PRESETS["lite"]):
        spec = architecture.model_spec(architecture.coefficients(phi, family="lite"))
        expected = {}
        for block in spec.blocks:
            channels = block.filters_in * block.expand_ratio
            expected[block.name + "dwconv"] = (block.kernel_size, block.kernel_size, channels, 1)
            expected[block.name + "project_conv"] = (1, 1, channels, block.filters_out)
        found = {
            name: shape
            for name, shape in shapes.items()
            if name.startswith("block") and name.endswith(("_dwconv", "_project_conv"))
        }
        if found == expected and shapes.get("top_conv", (0, 0, 0))[-1] == spec.head_filters:
            return phi
    return None


# ----------------------------------------------------------------------------
# Finding and reading the checkpoint.


def is_checkpoint(path) -> bool:
    """Whether `path` looks like an official checkpoint: a .tar.gz/.tgz, a checkpoint prefix, or a folder holding one."""
    path = os.fspath(path)
    if os.path.isfile(path) and path.endswith((".tar.gz", ".tgz")):
        return True
    if os.path.isfile(path + ".index"):
        return True
    return os.path.isdir(path) and bool(_index_files(path))


def _index_files(folder: str, depth: int = 2) -> list[str]:
    """The `*.index` files in `folder` and its subfolders down to `depth` levels (the tarball's own folder)."""
    found = []
    for root, dirs, files in os.walk(folder):
        if os.path.relpath(root, folder).count(os.sep) + (root != folder) >= depth:
            dirs[:] = []
        found.extend(os.path.join(root, f) for f in files if f.endswith(".index"))
    return sorted(found)


def _safe_extract(archive: str, folder: str) -> None:
    """Unpack a tarball, refusing absolute paths, `..`, links and devices before writing anything."""
    try:
        tar = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError) as exc:
        raise ValueError(f"weights: {archive!r} is not a readable tar archive: {exc}") from None
    with tar:
        members = tar.getmembers()
        for member in members:
            name = member.name
            parts = name.replace("\\", "/").split("/")
            if os.path.isabs(name) or name.startswith(("/", "\\")) or ".." in parts or re.match(r"^[A-Za-z]:", name):
                raise ValueError(
                    f"weights: archive {archive!r} has an unsafe member {name!r} (absolute path or '..'); "
                    "refusing to unpack it."
                )
            if not (member.isfile() or member.isdir()):
                raise ValueError(
                    f"weights: archive {archive!r} has member {name!r} that is not a regular file or folder "
                    "(a link or device); refusing to unpack it."
                )
        if hasattr(tarfile, "data_filter"):
            tar.extractall(folder, members=members, filter="data")
        else:  # pragma: no cover - Python without extraction filters; members were checked above
            tar.extractall(folder, members=members)


def _prefix_in_folder(folder: str, what: str) -> str:
    """The checkpoint prefix in `folder`: its `checkpoint` state file's, else the single `*.index` under it."""
    import tensorflow as tf

    latest = tf.train.latest_checkpoint(folder)
    if latest and os.path.isfile(latest + ".index"):
        return latest
    found = [f[: -len(".index")] for f in _index_files(folder)]
    if len(found) == 1:
        return found[0]
    if not found:
        raise ValueError(f"weights: {what} holds no TensorFlow checkpoint (no *.index file).")
    names = ", ".join(os.path.relpath(p, folder) for p in found)
    raise ValueError(f"weights: {what} holds several checkpoints ({names}); pass one prefix.")


def _resolve(path: str, tmp: str) -> str:
    if os.path.isfile(path) and (path.endswith((".tar.gz", ".tgz")) or tarfile.is_tarfile(path)):
        _safe_extract(path, tmp)
        return _prefix_in_folder(tmp, f"archive {path!r}")
    if os.path.isfile(path + ".index"):
        return path
    if os.path.isdir(path):
        return _prefix_in_folder(path, f"folder {path!r}")
    raise FileNotFoundError(
        f"weights: {path!r} is neither a .tar.gz, a checkpoint prefix ({path!r}.index does not exist) "
        "nor a folder holding a checkpoint."
    )


def checkpoint_scope(names, where: str) -> str:
    """The single "efficientnet-liteN" scope of the variable `names`; ValueError otherwise."""
    scopes = sorted({m.group(1) for m in map(SCOPE_PATTERN.match, names) if m})
    if len(scopes) != 1:
        got = "none" if not scopes else ", ".join(scopes)
        raise ValueError(
            f"weights: {where} must hold the variables of one EfficientNet-Lite network "
            f"(names efficientnet-liteN/...), found scopes: {got}."
        )
    return scopes[0]


def load(model, path) -> None:
    """Load an official EfficientNet-Lite checkpoint into `model` (built by `build(N, family="lite")`).

    `path`: the downloaded `efficientnet-liteN.tar.gz`, a folder holding the
    checkpoint, or its prefix (`.../model.ckpt`). Each weight takes
    `<name>/ExponentialMovingAverage` when the checkpoint has it, else `<name>`.
    Everything is checked before any weight is set: the checkpoint's variant
    against the model's, the head (1000 classes, or include_top=False), every
    variable's presence and shape. A refusal leaves the model as it was.
    """
    import tensorflow as tf

    path = os.fspath(path)
    phi = model_variant(model)
    if phi is None:
        raise ValueError(
            f"weights: model {model.name!r} is not an EfficientNet-Lite0..4 network (build it with "
            "keras_effnet.build(N, family='lite'), without fused_stages), so the official checkpoint "
            f"{path!r} does not fit it."
        )
    names = {layer.name for layer in model.layers}
    if "predictions" in names:
        units = int(model.get_layer("predictions").weights[0].shape[-1])
        if units != CLASSES:
            raise ValueError(
                f"weights: the official EfficientNet-Lite checkpoints have a {CLASSES}-class head; with "
                f"include_top=True the model needs classes={CLASSES}, got classes={units}. "
                "Use include_top=False and add your own head."
            )
    with tempfile.TemporaryDirectory(prefix="keras_effnet_lite_") as tmp:
        prefix = _resolve(path, tmp)
        reader = tf.train.load_checkpoint(prefix)
        shapes = reader.get_variable_to_shape_map()
        scope = checkpoint_scope(shapes, f"checkpoint {path!r}")
        expected = scope_name(phi)
        if scope != expected:
            raise ValueError(
                f"weights: checkpoint {path!r} is {scope} but the model is {expected}; "
                f"pass {expected}.tar.gz or build the model with phi={scope[len('efficientnet-lite') :]}."
            )
        values = {}  # layer name -> {index: array}
        layers = {layer.name: layer for layer in model.layers}
        for layer_name, index, name in variable_map(model, scope):
            source = name + EMA_SUFFIX if name + EMA_SUFFIX in shapes else name
            if source not in shapes:
                raise ValueError(
                    f"weights: checkpoint {path!r} has no variable {name!r} (nor {name + EMA_SUFFIX!r}) "
                    f"for layer {layer_name!r}; it is not an official {expected} checkpoint."
                )
            want = tuple(int(d) for d in layers[layer_name].weights[index].shape)
            have = tuple(int(d) for d in shapes[source])
            if want != have:
                raise ValueError(
                    f"weights: layer {layer_name!r} weight {index} has shape {want} in the model but "
                    f"{source!r} has shape {have} in checkpoint {path!r}."
                )
            values.setdefault(layer_name, {})[index] = reader.get_tensor(source)
    for layer_name, arrays in values.items():
        layers[layer_name].set_weights([arrays[i] for i in range(len(arrays))])
