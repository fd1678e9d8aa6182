"""Published GPU figures, beside the study's own: what the same question gets on a GPU. Not measured here.

Each row names its source; the numbers are copied from it as published, for the reader to compare with
this machine's answer until a GPU run of the study exists.
"""

from __future__ import annotations

from common import markdown

NVIDIA_TF2_V1 = (
    "NVIDIA DeepLearningExamples, TensorFlow2/Classification/ConvNets/efficientnet_v1 README "
    "(github.com/NVIDIA/DeepLearningExamples)"
)
NVIDIA_TF2_V2 = (
    "NVIDIA DeepLearningExamples, TensorFlow2/Classification/ConvNets/efficientnet_v2 README "
    "(github.com/NVIDIA/DeepLearningExamples)"
)
NVIDIA_PT = (
    "NVIDIA DeepLearningExamples, PyTorch/Classification/ConvNets (efficientnet and resnet50v1.5 "
    "READMEs, github.com/NVIDIA/DeepLearningExamples)"
)
TIMM = "timm benchmark CSVs, results/ folder of github.com/huggingface/pytorch-image-models"

# (what, hardware and settings, model A, A img/s, model B, B img/s, source)
ROWS = (
    ("training", "A100-80GB, TF2 + XLA + AMP, batch 1024", "B0 @224", 3454, None, None, NVIDIA_TF2_V1),
    ("training", "A100-80GB, TF2 + XLA, TF32, batch 1024", "B0 @224", 1209, None, None, NVIDIA_TF2_V1),
    ("training", "A100, PyTorch, AMP", "B0 @224", 2489, "ResNet-50 @224", 2470, NVIDIA_PT),
    ("training", "RTX 3090, PyTorch, AMP", "B0 @224", 1752, "ResNet-50 @224", 1218, TIMM),
    ("training", "RTX 3090, PyTorch, AMP", "V2-S @300", 488, "B4 @380", 242, TIMM),
    ("training", "A100, TF2, AMP", "V2-S", 950, "B4", 470, NVIDIA_TF2_V2),
    ("inference", "RTX 4090, PyTorch, AMP, NHWC, batch 512", "V2-B0 @224", 13704, "B0 @224", 9832, TIMM),
    ("inference", "RTX 4090, PyTorch, AMP, NHWC, batch 512", "V2-S @384", 1634, "B5 @456", 518, TIMM),
)


def table() -> str:
    header = ["what", "hardware, settings", "model", "img/s", "compared with", "img/s", "ratio", "source"]
    rows = [
        [
            what,
            hw,
            a,
            f"{a_rate:,}",
            b or "—",
            "—" if b_rate is None else f"{b_rate:,}",
            f"{a_rate / b_rate:.2f}×" if b_rate else "—",
            source,
        ]
        for what, hw, a, a_rate, b, b_rate, source in ROWS
    ]
    return markdown.table(header, rows)
