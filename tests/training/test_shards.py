"""training.shards and training.make_shards: ImageNet-format TFRecords written, checked and read, in one process.

Foreign shard sets (no index, labels from 1, synsets) are written here record by record the way tensorflow/tpu's
imagenet_to_gcs.py lays them out; keras-effnet-shards' own sets come from a small generated folder.
"""

import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from training import make_shards, shard_check, shard_format, shards, synthetic

TF_CPP = {"TF_CPP_MIN_LOG_LEVEL": "2"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return synthetic.generate(
        str(tmp_path_factory.mktemp("src") / "data"), train_per_class=4, val_per_class=1, image_size=40, seed=0
    )


@pytest.fixture(scope="module")
def written(folder, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("shards") / "set")
    make_shards.write_shards(
        make_shards.ShardsConfig(data_dir=folder, out=out, train_shards=4, val_shards=2), log=lambda *a: None
    )
    return out


def _jpeg(seed, size=24):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def _imagenet_record(image: bytes, label: int, synset: str, filename: str) -> bytes:
    import tensorflow as tf

    def b(v):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))

    return tf.train.Example(
        features=tf.train.Features(
            feature={
                "image/encoded": b(image),
                "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
                "image/class/synset": b(synset.encode()),
                "image/filename": b(filename.encode()),
                "image/format": b(b"JPEG"),
            }
        )
    ).SerializeToString()


def _foreign(root, train, val):
    """A shard set as imagenet_to_gcs writes it: {shard name: [(image bytes, label, synset, filename), ...]}."""
    import tensorflow as tf

    os.makedirs(root, exist_ok=True)
    for name, records in {**train, **val}.items():
        with tf.io.TFRecordWriter(os.path.join(root, name)) as w:
            for r in records:
                w.write(_imagenet_record(*r))
    return root


def _ids(shard_set, **kwargs):
    ds = shards.make_dataset(shard_set, image_size=16, batch_size=4, training=True, with_ids=True, **kwargs)
    return [i.decode() for _, _, ids in ds for i in ids.numpy()]


def test_a_folder_written_as_shards_reads_back_with_its_classes_labels_and_an_index_that_checks(folder, written):
    from training import data

    index = json.load(open(os.path.join(written, shard_format.INDEX)))
    splits = data.load_splits(folder)
    assert index["complete"] and index["label_offset"] == 1 and index["classes"] == list(splits.class_names)
    assert sorted(index["splits"]["train"]["shards"]) == [f"train-{i:05d}-of-00004" for i in range(4)]
    assert sum(s["count"] for s in index["splits"]["train"]["shards"].values()) == 40
    assert set(index["splits"]["validation"]["class_counts"].values()) == {1}
    for name, entry in index["splits"]["train"]["shards"].items():
        assert entry["sha256"] == shard_format.check_shard(os.path.join(written, name)).sha256
    assert not [n for n in os.listdir(written) if n.startswith(".") and n != shard_check.CHECK_CACHE]

    loaded = shards.load_shards(written)
    assert loaded.class_names == splits.class_names and len(loaded.train_files) == 40 and len(loaded.val_files) == 10
    # Every example comes back once, with the label of its class folder (the record holds label + 1).
    ds = shards.make_dataset(loaded.val_files, image_size=16, batch_size=3, training=False, with_ids=True)
    seen = {i.decode(): int(y) for _, labels, ids in ds for y, i in zip(labels.numpy(), ids.numpy())}
    expected = {os.path.relpath(f, folder): y for f, y in zip(splits.val_files, splits.val_labels)}
    assert seen == expected


def test_the_writer_resumes_and_never_leaves_half_a_shard(folder, tmp_path, monkeypatch):
    out = str(tmp_path / "set")
    config = make_shards.ShardsConfig(data_dir=folder, out=out, train_shards=4, val_shards=2)
    real = make_shards.write_shard
    calls = []

    def dies_in_the_third(path, examples):
        calls.append(path)
        if len(calls) == 3:
            next(iter(examples))
            raise KeyboardInterrupt  # a kill while the third shard is being written
        return real(path, examples)

    monkeypatch.setattr(make_shards, "write_shard", dies_in_the_third)
    with pytest.raises(KeyboardInterrupt):
        make_shards.write_shards(config, log=lambda *a: None)
    index = json.load(open(os.path.join(out, shard_format.INDEX)))
    assert not index["complete"] and sorted(index["splits"]["train"]["shards"]) == [
        "train-00000-of-00004",
        "train-00001-of-00004",
    ]
    assert sorted(os.listdir(out)) == ["index.json", "train-00000-of-00004", "train-00001-of-00004"]
    with pytest.raises(shard_format.ShardError, match="writing was interrupted"):
        shards.load_shards(out)
    first = os.stat(os.path.join(out, "train-00000-of-00004")).st_mtime_ns

    monkeypatch.setattr(make_shards, "write_shard", real)
    logs = []
    make_shards.write_shards(config, log=logs.append)
    assert "wrote 4 shard(s) now" in logs[-1]
    assert os.stat(os.path.join(out, "train-00000-of-00004")).st_mtime_ns == first
    assert json.load(open(os.path.join(out, shard_format.INDEX)))["complete"]
    assert len(shards.load_shards(out).train_files) == 40

    with pytest.raises(make_shards.cli.UsageError, match="other images or with other flags"):
        make_shards.write_shards(
            make_shards.ShardsConfig(data_dir=folder, out=out, train_shards=5), log=lambda *a: None
        )


def test_imagenet_shards_from_elsewhere_train_as_they_are_and_corrupt_records_are_skipped_and_reported(tmp_path):
    """No index: classes are the synsets in label order, labels count from 1; a record whose image does not decode
    and a shard whose TFRecord data is cut short are reported, and the pipeline never yields them."""
    syn = ["n01440764", "n01443537", "n01484850"]
    train = {
        f"train-{s:05d}-of-00002": [(_jpeg(10 * s + i), 1 + (i % 3), syn[i % 3], f"t{s}_{i}.JPEG") for i in range(6)]
        for s in range(2)
    }
    train["train-00001-of-00002"][4] = (b"\xff\xd8 not really a jpeg", 2, syn[1], "broken.JPEG")
    val = {"validation-00000-of-00001": [(_jpeg(100 + i), 1 + i, syn[i], f"v{i}.JPEG") for i in range(3)]}
    root = _foreign(str(tmp_path / "imagenet"), train, val)
    damaged = os.path.join(root, "train-00000-of-00002")
    data = open(damaged, "rb").read()
    cut = data.rindex(_imagenet_record(*train["train-00000-of-00002"][5])) + 40  # inside the last record
    open(damaged, "wb").write(data[:cut])

    loaded = shards.load_shards(root)
    assert loaded.class_names == tuple(syn) and loaded.label_offset == 1
    assert loaded.train_files.counts == (5, 6) and len(loaded.train_files) == 10
    assert len(loaded.skipped) == 2
    assert loaded.skipped[0].startswith(
        "train-00000-of-00002: corrupt TFRecord data after record 5 (truncated record at "
    )
    assert loaded.skipped[0].endswith("Read less bytes than requested); the records after it are not read")
    assert loaded.skipped[1].startswith("train-00001-of-00002 record 4: not a decodable image")
    ids = _ids(loaded.train_files, repeat=False, drop_remainder=False)
    assert sorted(ids) == sorted(f"t{s}_{i}.JPEG" for s in range(2) for i in range(6) if (s, i) not in {(0, 5), (1, 4)})
    ds = shards.make_dataset(loaded.val_files, image_size=16, batch_size=3, training=False)
    assert [int(y) for y in next(iter(ds))[1]] == [0, 1, 2]
    # The verdicts are cached: a second load reads no record (the shard is not even opened by TensorFlow).
    cache = json.load(open(os.path.join(root, shard_check.CHECK_CACHE)))
    assert set(cache["shards"]) == set(train) | set(val)
    assert shards.load_shards(root).skipped == loaded.skipped


def test_broken_shard_sets_stop_before_training_in_one_line(written, tmp_path):
    import shutil

    from training import train

    def refused(root, *extra):
        out = tmp_path / "run"
        code = train.main([f"--data_dir={root}", f"--out={out}", "--image_size=32", "--batch_size=8", *extra])
        assert code == 2 and not out.exists()

    missing = shutil.copytree(written, tmp_path / "missing")
    os.remove(missing / "train-00002-of-00004")
    with pytest.raises(shard_format.ShardError, match=r"all 4 train shards.*missing 1: train-00002-of-00004"):
        shards.load_shards(str(missing))
    refused(missing)

    disagrees = shutil.copytree(written, tmp_path / "disagrees")
    shutil.copy(disagrees / "train-00000-of-00004", disagrees / "train-00001-of-00004")
    with pytest.raises(shard_format.ShardError, match="shards that match index.json.*train-00001-of-00004"):
        shards.load_shards(str(disagrees))

    syn = ["n0", "n1"]
    gap = _foreign(
        str(tmp_path / "gap"),
        {"train-00000-of-00001": [(_jpeg(1), 1, syn[0], "a"), (_jpeg(2), 3, syn[1], "b")]},
        {"validation-00000-of-00001": [(_jpeg(3), 1, syn[0], "c")]},
    )
    with pytest.raises(shard_format.ShardError, match=r"labels in 0\.\.1 after subtracting label_offset=1 .*label 3"):
        shards.load_shards(gap)
    refused(gap)
    with pytest.raises(shard_format.ShardError, match=r"label_offset=2 .*label 1"):
        shards.load_shards(gap, label_offset=2)


def test_shards_split_by_file_when_they_divide_evenly_else_by_data_and_each_example_goes_to_one_worker(
    written, tmp_path
):
    loaded = shards.load_shards(written)
    plan = shards.split_plan(loaded.train_files, 2)
    assert plan.by == "file" and plan.per_worker == (20, 20) and "by file" in plan.describe(4)
    assert shards.split_plan(loaded.train_files, 3).by == "data"  # 4 shards of 10 over 3 workers: 20, 10, 10
    assert shards.split_plan(loaded.val_files, 3) == shards.SplitPlan("data", 3, (4, 3, 3))  # 2 shards, 3 workers
    assert (
        shards.steps_per_epoch(loaded.train_files, 8, 2) == 5 and shards.steps_per_epoch(loaded.train_files, 9, 3) == 4
    )
    everything = set(_ids(loaded.train_files))
    for workers in (2, 3):
        parts = [_ids(loaded.train_files, worker=w, workers=workers, drop_remainder=False) for w in range(workers)]
        assert sorted(sum(parts, [])) == sorted(everything) and len(everything) == 40
    # The same (seed, epoch) gives the same order (a resumed epoch skips the steps done and continues it);
    # the next epoch another one.
    again = _ids(loaded.train_files, worker=1, workers=2)
    assert again == _ids(loaded.train_files, worker=1, workers=2)
    assert again != _ids(loaded.train_files, worker=1, workers=2, start_epoch=1)


def test_the_shard_command_refuses_bad_input_in_one_line(folder, tmp_path, capsys):
    for argv, fragment in (
        ([f"--data_dir={tmp_path / 'nope'}", f"--out={tmp_path / 'o'}"], "--data_dir="),
        ([f"--data_dir={folder}", f"--out={tmp_path / 'o'}", "--train_shards=0"], "--train_shards=0"),
        ([f"--data_dir={folder}", f"--out={tmp_path / 'o'}", "--val_shards=11"], "11 shards for 10"),
    ):
        assert make_shards.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and fragment in err[0], err
    assert not (tmp_path / "o").exists()


def _tiny_cnn(config, num_classes, *, image_size=None):
    """Three strided conv + BN layers: trains in seconds, so the comparison below can run for several epochs."""
    from keras_effnet import keras_versions

    keras = keras_versions.keras3()
    layers = keras.layers
    x = inputs = keras.Input((image_size, image_size, 3))
    x = layers.Rescaling(1 / 127.5, offset=-1)(x)
    for filters in (16, 32, 64):
        x = layers.ReLU()(
            layers.BatchNormalization()(layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False)(x))
        )
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(num_classes, activation="softmax")(x))


def test_the_same_images_train_to_the_same_accuracy_from_the_folder_and_from_its_shards(tmp_path):
    """Same seed, same recipe, 8 epochs of a small CNN on 300 synthetic images (chance: 0.10). The pipelines differ in
    order (shards shuffle shards, then records) and in when the crop happens (the folder crops its in-memory
    resized images), so the two accuracies agree within the spread between seeds (0.09 to 0.10 when measured)."""
    from training import evaluate, loop
    from training.config import TrainConfig

    folder = synthetic.generate(str(tmp_path / "folder"), train_per_class=30, val_per_class=10, image_size=48, seed=0)
    shard_dir = str(tmp_path / "shards")
    make_shards.write_shards(
        make_shards.ShardsConfig(data_dir=folder, out=shard_dir, train_shards=3, val_shards=1), log=lambda *a: None
    )
    accuracy = {}
    for name, data_dir in (("folder", folder), ("shards", shard_dir)):
        config = TrainConfig(
            data_dir=data_dir,
            out=str(tmp_path / f"run_{name}"),
            image_size=32,
            batch_size=30,
            epochs=8,
            seed=1,
            learning_rate=0.05,
            strategy="one_device",
            verbose=0,
            tensorboard=False,
        )
        result = loop.run(config, log=lambda *a: None, model_fn=_tiny_cnn)
        assert result["num_train"] == 300 and result["num_val"] == 100
        accuracy[name] = result["final"]["val_accuracy"]
    assert min(accuracy.values()) >= 0.25 and abs(accuracy["folder"] - accuracy["shards"]) <= 0.12, accuracy
    # keras-effnet-evaluate reads the shards' validation split as the folder's val/: the same images, the same result
    model = str(tmp_path / "run_folder" / "model.keras")
    on_folder, on_shards = evaluate.evaluate(model, folder), evaluate.evaluate(model, shard_dir)
    assert on_folder["num_images"] == on_shards["num_images"] == 100
    assert on_shards["top1"] == pytest.approx(on_folder["top1"], abs=0.011) and on_shards["top1"] >= 0.25
    assert on_shards["per_class"].keys() == on_folder["per_class"].keys()


def test_record_ids_needs_shards(folder, tmp_path, capsys):
    from training import train

    code = train.main(
        [
            f"--data_dir={folder}",
            f"--record_ids={tmp_path / 'ids'}",
            f"--out={tmp_path / 'run'}",
            "--image_size=32",
            "--batch_size=8",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: --record_ids=") and "TFRecord shards" in err[0], (
        err
    )
    assert not (tmp_path / "run").exists() and not (tmp_path / "ids").exists()
