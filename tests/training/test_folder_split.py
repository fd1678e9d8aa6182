"""training.folder_split: one folder of class subfolders, split once (stratified, deterministic), recorded, reused."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from training import evaluate, folder_split, train
from training.config import ConfigError


def _write(root, counts):
    """counts: {class: number of images}; tiny PNGs, each a different colour."""
    for c, n in counts.items():
        os.makedirs(os.path.join(root, c), exist_ok=True)
        for i in range(n):
            Image.fromarray(np.full((8, 8, 3), (i * 7) % 256, np.uint8)).save(os.path.join(root, c, f"{i:03d}.png"))
    return root


def test_the_split_is_stratified_and_a_function_of_the_seed():
    files = [f"{c}/{i:03d}.jpg" for c in "abc" for i in range({"a": 50, "b": 10, "c": 3}[c])]
    labels = [{"a": 0, "b": 1, "c": 2}[f[0]] for f in files]
    train_idx, val_idx = folder_split.stratified_split(files, labels, val_split=0.2, seed=0, class_names="abc")
    assert sorted(train_idx + val_idx) == list(range(len(files)))  # a partition
    val_per_class = np.bincount(np.asarray(labels)[val_idx], minlength=3).tolist()
    assert val_per_class == [10, 2, 1]  # round(n * 0.2), at least 1, at most n - 1
    again = folder_split.stratified_split(files, labels, val_split=0.2, seed=0, class_names="abc")
    assert again == (train_idx, val_idx)
    other = folder_split.stratified_split(files, labels, val_split=0.2, seed=1, class_names="abc")
    assert other[1] != val_idx and np.bincount(np.asarray(labels)[other[1]], minlength=3).tolist() == [10, 2, 1]
    # A class's split depends on its own name and files only: dropping class "a" leaves "b"'s split as it was.
    keep = [i for i, y in enumerate(labels) if y != 0]
    sub = folder_split.stratified_split(
        [files[i] for i in keep], [labels[i] - 1 for i in keep], val_split=0.2, seed=0, class_names="bc"
    )
    assert sorted(files[keep[i]] for i in sub[1]) == sorted(files[i] for i in val_idx if labels[i] != 0)
    assert [folder_split.val_count(n, 0.5) for n in (2, 3, 10)] == [1, 2, 5]
    with pytest.raises(ValueError, match="'c' has 1 image"):
        folder_split.stratified_split(files[:61], labels[:61], val_split=0.2, seed=0, class_names="abc")


def test_the_split_is_recorded_reused_and_a_changed_one_refused(tmp_path):
    data = _write(str(tmp_path / "photos"), {"cat": 6, "dog": 4})
    out = str(tmp_path / "run")
    splits, record = folder_split.for_run(data, out, val_split=0.25, seed=3)
    assert len(splits.val_files) == 3 and len(splits.train_files) == 7
    assert set(splits.val_files).isdisjoint(splits.train_files)
    os.makedirs(out)
    folder_split.write(out, record)
    assert json.load(open(os.path.join(out, folder_split.SPLIT_FILE)))["val"] == [
        os.path.relpath(f, data) for f in splits.val_files
    ]
    # A new image after the split: the resumed run keeps the recorded lists.
    _write(data, {"cat": 7})
    again, _ = folder_split.for_run(data, out, val_split=0.25, seed=3)
    assert again.val_files == splits.val_files and again.train_files == splits.train_files
    assert again.val_labels == splits.val_labels
    assert splits.pil_files == again.pil_files == frozenset()  # plain RGB PNGs: TensorFlow decodes them
    with pytest.raises(ConfigError, match=r"seed \(3 there, 4 now\)"):
        folder_split.for_run(data, out, val_split=0.25, seed=4)
    with pytest.raises(ConfigError, match=r"val_split \(0.25 there, 0.5 now\)"):
        folder_split.for_run(data, out, val_split=0.5, seed=3)
    fresh, _ = folder_split.for_run(data, out, val_split=0.5, seed=3, overwrite=True)
    assert len(fresh.val_files) == 4 + 2
    os.remove(splits.val_files[0])
    with pytest.raises(ValueError, match="no longer holds 1 image"):
        folder_split.for_run(data, out, val_split=0.25, seed=3)


def test_a_resumed_split_knows_which_files_need_the_pil_decoder(tmp_path):
    data = _write(str(tmp_path / "photos"), {"cat": 4, "dog": 4})
    Image.fromarray(np.full((8, 8), 300, np.uint16)).save(os.path.join(data, "dog", "deep.png"))  # 16-bit
    out = str(tmp_path / "run")
    splits, record = folder_split.for_run(data, out, val_split=0.25, seed=0)
    os.makedirs(out)
    folder_split.write(out, record)
    resumed, _ = folder_split.for_run(data, out, val_split=0.25, seed=0)
    assert resumed.pil_files == splits.pil_files == frozenset({os.path.join(data, "dog", "deep.png")})


@pytest.mark.parametrize("case", ["one_image_class", "val_split_0.0", "val_split_1.5"])
def test_bad_one_folder_input_is_one_line_exit_2_and_nothing_written(case, tmp_path, capsys):
    data = _write(str(tmp_path / "photos"), {"cat": 3, "dog": 1 if case == "one_image_class" else 3})
    out = tmp_path / "run"
    argv = [f"--data_dir={data}", f"--out={out}", "--image_size=32", "--epochs=1", "--batch_size=2"]
    if case.startswith("val_split"):
        argv.append(f"--val_split={case.split('_')[-1]}")
    assert train.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --")
    if case == "one_image_class":
        assert err[0].startswith(f"error: --data_dir={data}: expected") and "'dog' has 1 image" in err[0]
    else:
        assert err[0].startswith(f"error: --val_split={case.split('_')[-1]}: expected a number > 0 and < 1")
    assert not out.exists()


def test_evaluate_run_uses_exactly_the_recorded_validation_images(tmp_path):
    data = _write(str(tmp_path / "photos"), {"cat": 5, "dog": 5})
    run = str(tmp_path / "run")
    splits, record = folder_split.for_run(data, run, val_split=0.4, seed=0)
    os.makedirs(run)
    folder_split.write(run, record)
    split, where = evaluate.run_images(run)
    assert split.files == splits.val_files and split.labels == splits.val_labels
    assert split.class_names == ("cat", "dog")
    assert where.endswith(folder_split.SPLIT_FILE)
