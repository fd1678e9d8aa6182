"""Count what a model costs: parameters, multiply-adds, activations.

`macs` are multiply-accumulates of convolutions and dense layers for one image
at the model's input size: what the paper calls "FLOPs" (Tan & Le 2019,
Table 2); `flops` = 2 * macs. `activations` is the number of elements written
by every conv and dense layer for one image: Radosavovic et al. (pycls, "Designing
Network Design Spaces", 2020) showed it predicts GPU time better than FLOPs,
because EfficientNet's depthwise layers are memory-bound.

Works on any Keras 3 or tf_keras functional model (ResNet50 for the study too).
"""

from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class Profile:
    params: int
    trainable_params: int
    macs: int
    activations: int
    input_shape: tuple

    @property
    def flops(self) -> int:
        return 2 * self.macs

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["flops"] = self.flops
        d["input_shape"] = list(self.input_shape)
        return d


def _layer_cost(layer) -> tuple[int, int]:
    """(MACs, output elements) of one layer for batch size 1; (0, 0) if it is not conv/dense."""
    kind = type(layer).__name__
    if kind not in ("Conv2D", "DepthwiseConv2D", "Dense", "SeparableConv2D"):
        return 0, 0
    out_shape = tuple(layer.output.shape[1:])
    in_shape = tuple(layer.input.shape[1:])
    if any(d is None for d in out_shape + in_shape):
        raise ValueError(
            f"profile: layer {layer.name!r} has an unknown size {layer.output.shape}; "
            "build the model with a fixed input_shape (height and width) to profile it."
        )
    out_elems = math.prod(out_shape)
    if kind == "Dense":
        return in_shape[-1] * out_shape[-1] * math.prod(out_shape[:-1]), out_elems
    kh, kw = layer.kernel_size
    if kind == "DepthwiseConv2D":
        return out_elems * kh * kw, out_elems
    groups = getattr(layer, "groups", 1) or 1
    if kind == "SeparableConv2D":
        depth = math.prod(out_shape[:-1]) * in_shape[-1] * layer.depth_multiplier
        return depth * kh * kw + math.prod(out_shape[:-1]) * in_shape[-1] * layer.depth_multiplier * out_shape[
            -1
        ], out_elems
    return out_elems * kh * kw * in_shape[-1] // groups, out_elems


def profile(model) -> Profile:
    """Parameters, trainable parameters, MACs, FLOPs and activations of `model`."""
    macs = acts = 0
    for layer in _all_layers(model):
        m, a = _layer_cost(layer)
        macs += m
        acts += a
    trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
    return Profile(
        params=int(model.count_params()),
        trainable_params=int(trainable),
        macs=int(macs),
        activations=int(acts),
        input_shape=tuple(model.input_shape[1:]),
    )


def _all_layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers and type(layer).__name__ in ("Functional", "Model", "Sequential"):
            yield from _all_layers(layer)
        else:
            yield layer
