"""training.train, training.evaluate and training.predict on bad input: one line `error: ...` naming the
flag and the value, exit code 2, no traceback, nothing written. Called in-process through `main(argv)`."""

import os
import zipfile

import numpy as np
import pytest
from PIL import Image

from training import evaluate, predict, train


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_inputs")
    (root / "empty").mkdir()
    (root / "text.keras").write_text("this is not a model\n")
    with zipfile.ZipFile(root / "zip.keras", "w") as z:
        z.writestr("hello.txt", "a zip archive, but not a Keras model")
    (root / "a_file").write_text("x")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "image.png")
    (root / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    return root


CASES = [
    # (command, arguments, words the one line must contain)
    ("train", ["--batch_size=0"], ["--batch_size=0", "integer >= 1"]),
    ("train", ["--optimizer=adam"], ["--optimizer=adam", "adamw"]),
    ("train", ["--phi=-1"], ["--phi=-1"]),
    ("train", ["--epochs=two"], ["--epochs", "two"]),
    ("train", ["--data_dir={root}/missing"], ["--data_dir=", "missing", "does not exist"]),
    ("train", ["--data_dir={root}/empty"], ["--data_dir=", "empty", "has no class folders"]),
    ("train", ["--out={root}/a_file", "--data_dir={root}/empty"], ["--out=", "a_file"]),
    ("train", ["--init_from={root}/missing.keras"], ["--init_from=", "missing.keras"]),
    ("train", ["positional"], ["positional"]),
    ("evaluate", ["--data_dir={root}/empty"], ["--model is required"]),
    ("evaluate", ["--model={root}/missing.keras", "--data_dir={root}/empty"], ["--model=", "does not exist"]),
    ("evaluate", ["--model={root}/text.keras", "--data_dir={root}/empty"], ["--model=", "not a Keras model"]),
    ("evaluate", ["--model={root}/zip.keras", "--data_dir={root}/empty"], ["--model=", "not a loadable Keras model"]),
    ("evaluate", ["--model={root}/text.keras", "--data_dir={root}/missing"], ["--data_dir=", "does not exist"]),
    ("evaluate", ["--model={root}/text.keras", "--data_dir={root}", "--batch_size=0"], ["--batch_size=0", "positive"]),
    ("predict", ["--model={root}/text.keras"], ["--images is required"]),
    ("predict", ["--model={root}/text.keras", "--images={root}/missing.jpg"], ["--images=", "missing.jpg"]),
    ("predict", ["--model={root}/text.keras", "--images={root}/broken.jpg"], ["--images=", "broken.jpg", "decodable"]),
    ("predict", ["--model={root}/text.keras", "--images={root}/image.png"], ["--model=", "not a Keras model"]),
    ("predict", ["--model={root}/text.keras", "--images={root}/image.png", "--top_k=0"], ["--top_k=0", "positive"]),
]
MAINS = {"train": train.main, "evaluate": evaluate.main, "predict": predict.main}


@pytest.mark.parametrize("command, args, words", CASES, ids=[f"{c}:{' '.join(a)}" for c, a, _ in CASES])
def test_bad_input_is_one_line_and_exit_2(command, args, words, files, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default --out is relative: it must not appear
    argv = [a.format(root=files) for a in args]
    if command == "train" and not any(a.startswith("--out") for a in argv):
        argv.append(f"--out={tmp_path / 'run'}")
    before = sorted(os.listdir(files))
    code = MAINS[command](argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert not os.path.exists(tmp_path / "run") and os.listdir(tmp_path) == []
    assert sorted(os.listdir(files)) == before
