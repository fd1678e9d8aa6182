"""The efficiency study: does EfficientNet's MAC saving become wall-clock time on *this* machine?

EfficientNet wins on MACs per accuracy (Tan & Le 2019), but MACs are not time: B0 has 10x fewer MACs than
ResNet-50 yet trains only 1.0-1.4x faster on GPUs, because its depthwise and squeeze-excitation layers are
memory-bound (Radosavovic et al. 2020 found activations predict GPU time better). EfficientNetV2 (Tan & Le
2021) answers with Fused-MBConv in the early stages. The study measures each member and a ResNet-50
baseline -- parameters, MACs, activations, layers; Keras latency at batch 1 and per image at a larger
batch; LiteRT float32 and int8 latency; and, unless measure-only, accuracy against training time -- then
fits what predicts the time.

The package sits above the others: it imports `keras_effnet`, `training` and `edge`; nothing imports it.
`python -m study` (or `keras-effnet-study`) is the command; `study.run.run_study(config)` the library call.
"""
