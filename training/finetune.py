"""Fine-tuning a pretrained EfficientNet: where the weights come from, and the two-stage recipe.

The recipe users know (keras-io, "Transfer learning & fine-tuning" and
"Image classification via fine-tuning with EfficientNet"; Kornblith, Shlens &
Le, CVPR 2019: fine-tuning beats fixed features) and what goes wrong without
it: on a few images per class, training every layer from the first step with
BatchNorm in training mode re-estimates the pretrained statistics from small
new batches and wrecks the features they normalise (keras-team/keras#9214,
#9965). So, whenever a run starts from pretrained weights:

  1. **head stage** (`head_epochs`): the backbone is frozen (Keras 3: a layer
     with `trainable=False`; a frozen BatchNormalization runs in inference
     mode), only the new classifier trains, at `head_lr_scale` times the
     trainer's (from-scratch) learning rate: a linear layer on fixed features
     takes a larger rate (keras-io: Adam 1e-2) and a short stage needs it;
  2. **backbone stage**: the top `unfreeze` blocks (or all) train as well, at
     `lr_scale` times the trainer's rate, warm-up + cosine again; BatchNorm stays in
     inference mode with the pretrained statistics (and its gamma and beta
     frozen, as keras-io does) unless `bn_trainable`.

The pretrained weights stay whatever the training contract says
(training.contract): its BatchNorm momentum (0.9, for statistics estimated
from scratch) is not applied to a pretrained start, and the zero head is set
before the weights are copied, so it cannot overwrite a copied layer.

Sources, one flag for every family (`source_kind`): "imagenet" is
keras.applications' MD5-checked files for B0..B7 and EfficientNetV2 (their
Lite counterparts were never published by Keras); Lite takes the official
tensorflow/tpu tarball, its folder or its checkpoint prefix
(keras_effnet.lite_checkpoint); any family takes a .keras model or a
.weights.h5 file. Every backbone layer of the model must find a layer of the
same name and shapes in the source, so a source of another family or variant
is refused before anything is written.

Defaults (`HEAD_FRACTION`, `HEAD_LR_SCALE`, `LR_SCALE`) were chosen by benchmarks/finetune.py;
the figures are in docs/finetune.md.
"""

from __future__ import annotations

import dataclasses
import math
import re

from training import contract
from training.config import ConfigError

HEAD_FRACTION = 0.2  # head_epochs = max(1, round(HEAD_FRACTION * epochs))
HEAD_LR_SCALE = 10.0  # the head stage's peak rate, a multiple of the trainer's (from-scratch) rate
LR_SCALE = 1.0  # the backbone stage's peak rate, a multiple of the trainer's rate
HEAD, BACKBONE = "head", "backbone"
_BLOCK = re.compile(r"^(block\d+[a-z]+)_")
SOURCE_WHAT = (
    "'imagenet' (B0-B7, V2), the official Lite .tar.gz, its folder or checkpoint prefix (Lite), "
    "a .keras model or a .weights.h5 file"
)


@dataclasses.dataclass(frozen=True)
class Plan:
    """The stages of a fine-tuning run."""

    head_epochs: int
    unfreeze: str  # "all" or a number of top blocks
    bn_trainable: bool
    lr_scale: float
    head_lr_scale: float = HEAD_LR_SCALE

    def learning_rate(self, stage: str, base: float) -> float:
        """The peak rate of `stage` for the trainer's rate `base`."""
        return base * (self.head_lr_scale if stage == HEAD else self.lr_scale)

    def stage(self, epoch: int) -> str:
        """The stage of 1-based `epoch`."""
        return HEAD if epoch <= self.head_epochs else BACKBONE

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def plan(config) -> Plan | None:
    """The recipe of `config` (validated), or None when the run trains every layer from the first step."""
    if not config.init_from or config.finetune == "off":
        return None
    head = config.head_epochs if config.head_epochs is not None else max(1, round(HEAD_FRACTION * config.epochs))
    if head > config.epochs:
        raise ConfigError("head_epochs", head, f"at most --epochs ({config.epochs})")
    if config.ema_decay:
        raise ConfigError(
            "ema_decay",
            config.ema_decay,
            "0 with the fine-tuning recipe (or --finetune=off): the weight average covers one set of trainable weights",
        )
    scale = config.finetune_lr_scale if config.finetune_lr_scale is not None else LR_SCALE
    head_scale = config.head_lr_scale if config.head_lr_scale is not None else HEAD_LR_SCALE
    return Plan(
        head_epochs=int(head),
        unfreeze=str(config.unfreeze),
        bn_trainable=bool(config.bn_trainable),
        lr_scale=float(scale),
        head_lr_scale=float(head_scale),
    )


def stage_steps(plan_: Plan | None, epoch: int, epochs: int, steps_per_epoch: int) -> tuple[int, int]:
    """(first global step, number of steps) of the stage `epoch` is in; the whole run without a plan."""
    if plan_ is None:
        return 0, epochs * steps_per_epoch
    if plan_.stage(epoch) == HEAD:
        return 0, plan_.head_epochs * steps_per_epoch
    return plan_.head_epochs * steps_per_epoch, (epochs - plan_.head_epochs) * steps_per_epoch


# ----------------------------------------------------------------------------
# Freezing.


def block_names(model) -> list[str]:
    """The MBConv blocks of `model` in build order ("block1a", "block2a", ...), from the stable layer names."""
    seen = []
    for layer in model.layers:
        m = _BLOCK.match(layer.name)
        if m and m.group(1) not in seen:
            seen.append(m.group(1))
    return seen


def trainable_in_stage(model, stage: str, plan_: Plan) -> set[str]:
    """Names of the layers that train in `stage`: the classifier; in the backbone stage also the unfrozen layers.

    "all" unfreezes every layer; N unfreezes the last N blocks and every layer
    after them (the head convolution). BatchNormalization layers are left out
    unless `bn_trainable`.
    """
    head = contract.classifier(model)
    names = {head.name} if head is not None else set()
    if stage == HEAD or plan_.unfreeze == "0":
        return names
    layers = list(model.layers)
    if plan_.unfreeze == "all":
        chosen = layers
    else:
        blocks = block_names(model)
        top = blocks[-int(plan_.unfreeze) :]
        first = (
            next(
                i
                for i, layer in enumerate(layers)
                if _BLOCK.match(layer.name) and _BLOCK.match(layer.name).group(1) == top[0]
            )
            if top
            else len(layers)
        )
        chosen = layers[first:]
    for layer in chosen:
        if not layer.weights or type(layer).__name__ == "Normalization":
            continue
        if type(layer).__name__ == "BatchNormalization" and not plan_.bn_trainable:
            continue
        names.add(layer.name)
    return names


def set_stage(model, stage: str, plan_: Plan) -> int:
    """Set every layer's `trainable` for `stage`; returns the number of trainable parameters."""
    names = trainable_in_stage(model, stage, plan_)
    model.trainable = True
    for layer in model.layers:
        layer.trainable = layer.name in names
    return int(sum(math.prod(v.shape) for v in model.trainable_variables))


# ----------------------------------------------------------------------------
# The pretrained source.


def source_kind(source: str) -> str:
    """ "imagenet", "lite_checkpoint", "keras" or "weights"."""
    from keras_effnet import lite_checkpoint

    if source == "imagenet":
        return "imagenet"
    if source.endswith(".keras"):
        return "keras"
    if lite_checkpoint.is_checkpoint(source):
        return "lite_checkpoint"
    return "weights"


def load_source(config):
    """The pretrained network of `config.init_from` as a Keras model; ConfigError (exit 2) for a source that cannot be one."""
    import keras_effnet
    from keras_effnet import keras_versions
    from keras_effnet import weights as weights_lib

    keras = keras_versions.keras3()
    source = config.init_from
    kind = source_kind(source)
    family, phi = config.family, config.phi
    try:
        name = keras_effnet.coefficients(phi, family=family).name
    except (ValueError, TypeError):
        name = f"{family} phi={phi}"
    if kind == "imagenet":
        if not (isinstance(phi, int) and weights_lib.has_imagenet(name)):
            hint = (
                " For Lite pass the official tarball (keras_effnet.lite_checkpoint.tarball_url)."
                if family == "lite"
                else ""
            )
            raise ConfigError(
                "init_from", source, f"weights published for {weights_lib.IMAGENET_MEMBERS}; {name} has none.{hint}"
            )
        return keras_effnet.build(
            phi, family=family, include_top=False, weights="imagenet", input_shape=(None, None, 3)
        )
    if kind == "lite_checkpoint":
        if family != "lite":
            raise ConfigError(
                "init_from",
                source,
                f"weights of the {family} family (this is an EfficientNet-Lite checkpoint; pass --family=lite)",
            )
        try:
            return keras_effnet.build(
                phi, family="lite", include_top=False, weights=source, input_shape=(None, None, 3)
            )
        except (ValueError, OSError) as e:
            raise ConfigError(
                "init_from", source, f"a readable official EfficientNet-Lite{phi} checkpoint ({_reason(e)})"
            ) from None
    if kind == "keras":
        try:
            return keras.saving.load_model(source, compile=False, safe_mode=True)
        except Exception as e:  # noqa: BLE001 - Keras raises many types for a file that is not a model
            raise ConfigError(
                "init_from", source, f"a loadable .keras model ({type(e).__name__}: {_reason(e)})"
            ) from None
    src = keras_effnet.build(phi, family=family, include_top=False, input_shape=(None, None, 3))
    try:
        src.load_weights(source, skip_mismatch=True)
    except Exception as e:  # noqa: BLE001 - h5py and Keras raise many types for a file that is not a weights file
        raise ConfigError(
            "init_from", source, f"a .weights.h5 file of {name} ({type(e).__name__}: {_reason(e)})"
        ) from None
    return src


def _reason(e) -> str:
    text = " ".join(str(e).split())
    return text[:300] + ("..." if len(text) > 300 else "")


def check_fits(model, source, config) -> None:
    """Raise ConfigError unless `model`'s backbone layers and `source`'s match one to one by name and shapes.

    The classifier is new (sized for the user's classes) and is not compared.
    """
    head = contract.classifier(model)
    by_name = {layer.name: layer for layer in source.layers}
    for layer in model.layers:
        if not layer.weights or (head is not None and layer.name == head.name):
            continue
        other = by_name.get(layer.name)
        mine = [tuple(w.shape) for w in layer.weights]
        theirs = None if other is None else [tuple(w.shape) for w in other.weights]
        if theirs != mine:
            found = "no such layer" if other is None else f"weights {theirs}"
            raise ConfigError(
                "init_from",
                config.init_from,
                f"weights of the model being trained (--family={config.family} --phi={config.phi}): its "
                f"layer {layer.name!r} has weights {mine}, the source has {found}; a source of another "
                "family or variant does not fit",
            )
    # The other way round too: a source with weighted layers the model has not (B0's squeeze-excitation in a
    # Lite0, whose every layer B0 also has) is another architecture. Dense layers are heads, not backbone.
    mine = {layer.name for layer in model.layers}
    for layer in source.layers:
        if layer.weights and layer.name not in mine and type(layer).__name__ != "Dense":
            raise ConfigError(
                "init_from",
                config.init_from,
                f"weights of the model being trained (--family={config.family} --phi={config.phi}): the "
                f"source has a layer {layer.name!r} the model has not; a source of another family or "
                "variant does not fit",
            )


def copy_weights(model, source) -> list[str]:
    """Copy every layer's weights from `source` by name where the shapes match; returns the copied layer names."""
    from keras_effnet import keras_versions

    keras = keras_versions.keras3()
    by_name = {layer.name: layer for layer in source.layers}
    copied = []
    for layer in model.layers:
        other = by_name.get(layer.name)
        if other is None or not layer.weights:
            continue
        theirs = other.get_weights()
        if len(theirs) == len(layer.weights) and all(tuple(w.shape) == t.shape for w, t in zip(layer.weights, theirs)):
            layer.set_weights(theirs)
            if isinstance(layer, keras.layers.Normalization):
                layer.finalize_state()
            copied.append(layer.name)
    return copied
