"""`python -m training.evaluate --model=PATH.keras --data_dir=DIR [--json]` (issue 3).

Top-1, top-5 and per-class accuracy of a saved model on a folder of images,
read by the same loader and eval pipeline as training. The class order is
the model's `labels.txt` (written beside `model.keras` by training.train);
the folder's class names must be among them.
"""

from __future__ import annotations

import json
import os
import sys

from training import data as data_lib


def load_labels(model_path: str, num_outputs: int) -> list[str]:
    """Class names from labels.txt beside the model, or "0".."n-1" when there is none."""
    path = os.path.join(os.path.dirname(os.path.abspath(model_path)), "labels.txt")
    if not os.path.exists(path):
        return [str(i) for i in range(num_outputs)]
    with open(path) as f:
        names = [line.strip() for line in f if line.strip()]
    if len(names) != num_outputs:
        raise ValueError(f"{path!r} lists {len(names)} classes but the model {model_path!r} has {num_outputs} outputs.")
    return names


def load_model(model_path: str):
    from keras_effnet import flavours

    keras = flavours.keras3()
    if not os.path.exists(model_path):
        raise ValueError(f"model: {model_path!r} does not exist (expected a model.keras written by training.train).")
    return keras.saving.load_model(model_path, compile=False, safe_mode=True)


def evaluate(model_path: str, data_dir: str, *, batch_size: int = 64) -> dict:
    """{"top1", "top5", "num_images", "per_class": {name: accuracy}, "skipped": [...]} on DIR/val (or DIR)."""
    import numpy as np

    model = load_model(model_path)
    names = load_labels(model_path, int(model.output_shape[-1]))
    split_dir = os.path.join(data_dir, "val") if os.path.isdir(os.path.join(data_dir, "val")) else data_dir
    files, labels, class_names, skipped = data_lib.scan_folder(split_dir)
    unknown = sorted(set(class_names) - set(names))
    if unknown:
        raise ValueError(f"data_dir: {split_dir!r} has class folders the model does not know: {unknown} (model classes: {names}).")
    index = {n: i for i, n in enumerate(names)}
    targets = np.array([index[class_names[y]] for y in labels])
    size = model.input_shape[1] or 224
    ds = data_lib.make_dataset(files, targets, image_size=size, batch_size=batch_size, training=False, augment="none")
    probs = np.concatenate([model(x, training=False).numpy() for x, _ in ds])
    top5 = np.argsort(-probs, axis=1)[:, :5]
    hit1 = top5[:, 0] == targets
    hit5 = (top5 == targets[:, None]).any(axis=1)
    per_class = {class_names[c]: float(hit1[np.array(labels) == c].mean()) for c in range(len(class_names))}
    return {"top1": float(hit1.mean()), "top5": float(hit5.mean()), "num_images": int(len(files)),
            "per_class": per_class, "skipped": [str(s) for s in skipped], "model": model_path, "data_dir": split_dir}


def main(argv):
    from absl import flags

    del argv
    FLAGS = flags.FLAGS
    result = evaluate(FLAGS.model, FLAGS.data_dir, batch_size=FLAGS.batch_size)
    for s in result["skipped"]:
        print(f"skipped: {s}")
    print(f"{result['num_images']} images: top-1 {result['top1']:.4f}, top-5 {result['top5']:.4f}")
    for name, acc in result["per_class"].items():
        print(f"  {name}: {acc:.4f}")
    if FLAGS.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    from absl import app

    from training import flags as flags_lib

    flags_lib.define_evaluate_flags()
    app.run(lambda argv: sys.exit(main(argv)))
