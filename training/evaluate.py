"""`python -m training.evaluate --model=PATH.keras --data_dir=DIR [--json]`: accuracy of a trained model.

Top-1, top-5 and per-class accuracy of a saved model on a folder of images,
read by the same loader and eval pipeline as training, with what a user can
act on (training.confusion): the confusion matrix (CSV and PNG, counts and
row-normalised), per-class precision, recall and F1 and the most confused
pairs, written to `--out` (default: `evaluation/` beside the model). The class
order is the model's `labels.txt` (written beside `model.keras` by
training.train); the folder's class names must be among them.

`--run=OUT` evaluates a training run's model on exactly its validation
images: the list in OUT/split.json for a one-folder dataset (the images the
run never trained on), else its data folder's val/.
"""

from __future__ import annotations

import dataclasses
import json
import os
import zipfile

from common import cli
from training import confusion, folder_split, shard_format
from training import data as data_lib
from training import shards as shards_lib

MODEL_WHAT = "a .keras model written by training.train"


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    model: str | None = cli.flag(
        None,
        "A model.keras written by training.train (labels.txt beside it names the classes); "
        "required unless --run is given.",
        group="input",
    )
    data_dir: str | None = cli.flag(
        None,
        "A folder of images: its val/<class>/* is evaluated (or DIR/<class>/* when there "
        "is no val/), or TFRecord shards (their validation-* shards); required unless "
        "--run is given.",
        group="input",
    )
    run: str | None = cli.flag(
        None,
        "A training run's --out folder: its model on exactly its validation images "
        "(OUT/split.json for a one-folder dataset, else the data folder's val/).",
        group="input",
    )
    out: str | None = cli.flag(
        None,
        "Where the confusion matrix (CSV, PNG) and report.txt go (none: evaluation/ beside the model).",
        group="output",
    )
    batch_size: int = cli.flag(64, "Batch size.", group="evaluation")
    json: bool = cli.flag(False, "Print one JSON object with the results as the last line of stdout.", group="output")

    def __post_init__(self):
        cli.positive("batch_size", self.batch_size)


def load_labels(model_path: str, num_outputs: int) -> list[str]:
    """Class names from labels.txt beside the model, or "0".."n-1" when there is none."""
    path = os.path.join(os.path.dirname(os.path.abspath(model_path)), "labels.txt")
    if not os.path.exists(path):
        return [str(i) for i in range(num_outputs)]
    with open(path) as f:
        names = [line.strip() for line in f if line.strip()]
    if len(names) != num_outputs:
        raise cli.UsageError(
            "model",
            model_path,
            f"a model with as many outputs as {path} lists classes ({len(names)} classes there, {num_outputs} outputs)",
        )
    return names


class NotAModelError(cli.UsageError, ValueError):
    """The file exists but is not a Keras model."""


def load_model(model_path: str):
    """The Keras 3 model in `model_path` (safe_mode); a missing file or a file that is not a model is a UsageError."""
    from keras_effnet import keras_versions

    keras = keras_versions.keras3()
    cli.require_file("model", model_path, what=MODEL_WHAT)
    if not zipfile.is_zipfile(model_path):
        raise NotAModelError(
            "model", model_path, f"{MODEL_WHAT} (this file is not a Keras model: not a .keras archive)"
        )
    try:
        return keras.saving.load_model(model_path, compile=False, safe_mode=True)
    except (ValueError, KeyError, OSError, TypeError, zipfile.BadZipFile) as e:
        reason = " ".join(str(e).split())[:200]
        raise NotAModelError(
            "model", model_path, f"{MODEL_WHAT} (this file is not a loadable Keras model: {type(e).__name__}: {reason})"
        ) from None


def run_images(run: str, data_dir: str | None = None) -> tuple[data_lib.Split | None, str]:
    """(the run's validation images as a `data.Split`, where they are listed) for a one-folder run, else
    (None, the run's data folder); `data_dir` overrides the recorded one."""
    from training import checkpoints

    cli.require_dir("run", run, what="a training run's --out folder")
    record = folder_split.read(run)
    if record is not None:
        try:
            splits = folder_split.from_record(record, data_dir)
        except ValueError as e:
            raise cli.UsageError("run", run, f"a run whose validation images are still there ({e})") from None
        split = data_lib.Split(
            files=splits.val_files,
            labels=splits.val_labels,
            class_names=splits.class_names,
            skipped=(),
            pil_files=None,  # the record lists the files only: the pipeline reads each one's header
        )
        return split, os.path.join(run, folder_split.SPLIT_FILE)
    saved = (checkpoints.read_json(os.path.join(run, checkpoints.RUN)) or {}).get("config") or {}
    folder = data_dir or saved.get("data_dir")
    if not folder or not os.path.isdir(os.path.join(folder, "val")):
        raise cli.UsageError(
            "run", run, "a run folder with split.json, or a run whose data folder has val/ (give --data_dir)"
        )
    return None, folder


def evaluate(
    model_path: str | None,
    data_dir: str | None,
    *,
    batch_size: int = 64,
    run: str | None = None,
    out: str | None = None,
    write: bool = True,
) -> dict:
    """{"top1", "top5", "num_images", "per_class": {name: accuracy}, "skipped": [...]} and training.confusion's
    summary on DIR/val (or DIR), or on a run's validation images; files written to `out` when `write`."""
    split = None
    if run is not None:
        model_path = model_path or os.path.join(run, "model.keras")
        split, where = run_images(run, data_dir)
        if split is None:
            data_dir = where
    if model_path is None:
        raise cli.UsageError("--model is required (or --run)")
    if split is None and data_dir is None:
        raise cli.UsageError("--data_dir is required (or --run)")
    if split is None:
        cli.require_dir("data_dir", data_dir, what="a folder of images (val/<class>/* or <class>/*)")
    model = load_model(model_path)
    names = load_labels(model_path, int(model.output_shape[-1]))
    if split is None and shards_lib.is_shard_dir(data_dir):  # TFRecord shards: their validation split
        return {**evaluate_shards(model, names, data_dir, batch_size=batch_size), "model": model_path}
    if split is None:
        where = os.path.join(data_dir, "val") if os.path.isdir(os.path.join(data_dir, "val")) else data_dir
        try:
            split = data_lib.scan_folder(where)
        except ValueError as e:
            raise cli.UsageError("data_dir", data_dir, f"a folder of images ({e})") from None
    targets, top5 = predict_split(model, names, split, where, batch_size=batch_size)
    result = {
        **scores(top5, targets, names, split.class_names),
        "skipped": [str(s) for s in split.skipped],
        "model": model_path,
        "data_dir": where,
        **confusion.summary(targets, top5[:, 0], names),
    }
    if write:
        folder = out or os.path.join(os.path.dirname(os.path.abspath(model_path)), "evaluation")
        result["files"] = confusion.write(folder, result)
    return result


def predict_split(model, names: list[str], split: data_lib.Split, where: str, *, batch_size: int):
    """(true classes, five best classes best first), both as model indices, of the images of `split` (read from
    `where`); UsageError when the split has a class the model does not know."""
    import numpy as np

    unknown = sorted(set(split.class_names) - set(names))
    if unknown:
        raise cli.UsageError("data_dir", where, f"class folders the model knows ({names}); unknown: {unknown}")
    index = {n: i for i, n in enumerate(names)}
    targets = np.array([index[split.class_names[y]] for y in split.labels])
    ds = data_lib.make_dataset(
        split.files,
        targets,
        image_size=model.input_shape[1] or 224,
        batch_size=batch_size,
        training=False,
        augment="none",
        pil_files=split.pil_files,
    )
    top5 = np.argsort(-np.concatenate([model(x, training=False).numpy() for x, _ in ds]), axis=1)[:, :5]
    return targets, top5


def scores(top5, targets, names, class_names) -> dict:
    """{"top1", "top5", "num_images", "per_class"} from each image's five best classes `top5` (model indices,
    best first) and its true class `targets` (a model index); `per_class` over the data's `class_names` that
    have images, in their order."""
    hit1 = top5[:, 0] == targets
    hit5 = (top5 == targets[:, None]).any(axis=1)
    per_class = {
        name: float(hit1[targets == names.index(name)].mean())
        for name in class_names
        if (targets == names.index(name)).any()
    }
    return {
        "top1": float(hit1.mean()),
        "top5": float(hit5.mean()),
        "num_images": int(len(targets)),
        "per_class": per_class,
    }


def evaluate_shards(model, names: list[str], data_dir: str, *, batch_size: int = 64) -> dict:
    """`evaluate` on the validation shards of `data_dir`: the same dict, for a model whose classes are `names`
    (the shards' classes must be among them)."""
    import numpy as np

    splits = shards_lib.load_shards(data_dir)
    unknown = sorted(set(splits.class_names) - set(names))
    if unknown:
        raise shard_format.ShardError(
            "data_dir", data_dir, f"shards of classes the model knows ({names}); unknown: {unknown}"
        )
    to_model = np.array([names.index(n) for n in splits.class_names])
    ds = shards_lib.make_dataset(
        splits.val_files,
        image_size=model.input_shape[1] or 224,
        batch_size=batch_size,
        training=False,
        label_offset=splits.label_offset,
    )
    probs, targets = [], []
    for x, y in ds:
        probs.append(model(x, training=False).numpy())
        targets.append(to_model[y.numpy()])
    probs, targets = np.concatenate(probs), np.concatenate(targets)
    top5 = np.argsort(-probs, axis=1)[:, :5]
    return {
        **scores(top5, targets, names, splits.class_names),
        "skipped": list(splits.skipped),
        "data_dir": data_dir,
    }


def _command(config: EvaluateConfig) -> int:
    if config.out:
        cli.require_writable_dir("out", config.out)
    result = evaluate(config.model, config.data_dir, batch_size=config.batch_size, run=config.run, out=config.out)
    for s in result["skipped"]:
        print(f"skipped: {s}")
    print(f"{result['num_images']} images: top-1 {result['top1']:.4f}, top-5 {result['top5']:.4f}")
    print(confusion.report(result), end="")
    print(f"confusion matrix: {result['files']['counts_csv']}, {result['files']['png']}")
    if config.json:
        print(json.dumps(result))
    return 0


def main(argv=None) -> int:
    return cli.main(
        EvaluateConfig,
        _command,
        argv,
        prog="keras-effnet-evaluate",
        description="Top-1, top-5, the confusion matrix and per-class precision, recall and F1 of a trained "
        "model on a folder of images or a run's validation split.",
    )


if __name__ == "__main__":
    cli.run_main(main)
