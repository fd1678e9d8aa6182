"""`python -m training.predict --model=PATH.keras --images=a.jpg,b.png`: the top-k labels with probabilities.

Images go through the same decode-and-resize as evaluation; the class names
come from labels.txt beside the model.
"""

from __future__ import annotations

import dataclasses

from common import cli
from training import data as data_lib
from training.evaluate import load_labels, load_model


@dataclasses.dataclass(frozen=True)
class PredictConfig:
    model: str | None = cli.flag(
        None,
        "A model.keras written by training.train (labels.txt beside it names the classes).",
        group="input",
        required=True,
    )
    images: tuple[str, ...] = cli.flag((), "Image files, comma-separated.", group="input", required=True)
    top_k: int = cli.flag(5, "How many labels to print per image.", group="output")

    def __post_init__(self):
        cli.positive("top_k", self.top_k)


def predict(model_path: str, images, *, top_k: int = 5) -> list[list[tuple[str, float]]]:
    """For each image path, the `top_k` (label, probability) pairs, most probable first."""
    import numpy as np

    images = list(images)
    if not images:
        raise cli.UsageError("--images is required (one or more image files, comma-separated)")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise cli.UsageError("top_k", top_k, "a positive integer")
    for path in images:
        reason = data_lib.check_image(path) if isinstance(path, str) else "not a path"
        if reason:
            raise cli.UsageError("images", path, f"image files that can be read ({reason})")
    model = load_model(model_path)
    names = load_labels(model_path, int(model.output_shape[-1]))
    size = model.input_shape[1] or 224
    ds = data_lib.make_dataset(
        images, [0] * len(images), image_size=size, batch_size=32, training=False, augment="none"
    )
    probs = np.concatenate([model(x, training=False).numpy() for x, _ in ds])
    k = min(top_k, probs.shape[1])
    return [[(names[i], float(p[i])) for i in np.argsort(-p)[:k]] for p in probs]


def _command(config: PredictConfig) -> int:
    for path, top in zip(config.images, predict(config.model, config.images, top_k=config.top_k)):
        print(path)
        for name, p in top:
            print(f"  {p:.4f}  {name}")
    return 0


def main(argv=None) -> int:
    return cli.main(
        PredictConfig,
        _command,
        argv,
        prog="keras-effnet-predict",
        description="The most probable labels of each image, by a trained model.",
    )


if __name__ == "__main__":
    cli.run_main(main)
