"""`python -m training.predict --model=PATH.keras IMAGE...`: the top-5 labels with probabilities (issue 3).

Images go through the same decode-and-resize as evaluation; the class names
come from labels.txt beside the model.
"""

from __future__ import annotations

import sys

from training import data as data_lib
from training.evaluate import load_labels, load_model


def predict(model_path: str, images, *, top_k: int = 5) -> list[list[tuple[str, float]]]:
    """For each image path, the `top_k` (label, probability) pairs, most probable first."""
    import numpy as np

    images = list(images)
    if not images:
        raise ValueError("images: give at least one image file.")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be an integer >= 1, got {top_k!r}.")
    for path in images:
        reason = data_lib.check_image(path) if isinstance(path, str) else "not a path"
        if reason:
            raise ValueError(f"image {path!r} cannot be read: {reason}.")
    model = load_model(model_path)
    names = load_labels(model_path, int(model.output_shape[-1]))
    size = model.input_shape[1] or 224
    ds = data_lib.make_dataset(images, [0] * len(images), image_size=size, batch_size=32, training=False, augment="none")
    probs = np.concatenate([model(x, training=False).numpy() for x, _ in ds])
    k = min(top_k, probs.shape[1])
    return [[(names[i], float(p[i])) for i in np.argsort(-p)[:k]] for p in probs]


def main(argv):
    from absl import flags

    paths = argv[1:]
    if not paths:
        print("usage: python -m training.predict --model=PATH.keras IMAGE...", file=sys.stderr)
        return 2
    for path, top in zip(paths, predict(flags.FLAGS.model, paths, top_k=flags.FLAGS.top_k)):
        print(path)
        for name, p in top:
            print(f"  {p:.4f}  {name}")
    return 0


if __name__ == "__main__":
    from absl import app

    from training import flags as flags_lib

    flags_lib.define_predict_flags()
    app.run(lambda argv: sys.exit(main(argv)))
