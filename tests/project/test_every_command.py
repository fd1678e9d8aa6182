"""Every command, every expected bad input: one line on stderr, exit code 2, no traceback, nothing written.

The commands are called in-process through their `main(argv)` (the function their console script calls), so
TensorFlow is imported once for the whole table. Ctrl-C is tested on real processes beside the commands that
resume (tests/training/test_train_e2e.py, tests/study/).
"""

from __future__ import annotations

import importlib
import os

import pytest
from PIL import Image

# Placeholders in argv, filled per test from a fresh folder:
#   {out}       a folder that does not exist yet (where a command would write)
#   {missing}   a path that does not exist
#   {empty}     an empty folder
#   {file}      a regular file (so {file}/x cannot be created)
#   {notmodel}  a .keras file that is not a model
#   {notimage}  a .jpg file that is not an image
#   {text}      a text file
#   {image}     a real 8x8 PNG
CASES = [
    # (command module, argv, a fragment the one line must contain)
    ("keras_effnet.__main__", ["--family=nope"], "--family"),
    ("keras_effnet.__main__", ["--resolution=16"], "--resolution"),
    ("keras_effnet.__main__", ["--bogus"], "--bogus"),
    ("training.train", ["--data_dir={missing}", "--out={out}"], "--data_dir"),
    ("training.train", ["--data_dir={empty}", "--out={out}"], "--data_dir"),
    ("training.train", ["--phi=-1", "--out={out}"], "phi"),
    ("training.train", ["--batch_size=0", "--out={out}"], "batch_size"),
    ("training.train", ["--family=nope", "--out={out}"], "--family"),
    ("training.train", ["--epochs=x", "--out={out}"], "--epochs"),
    ("training.train", ["--out={file}/run"], "--out"),
    ("training.evaluate", ["--model={notmodel}", "--data_dir={empty}"], "--model"),
    ("training.evaluate", ["--model={missing}", "--data_dir={empty}"], "--model"),
    ("training.evaluate", ["--data_dir={empty}"], "--model"),
    ("training.predict", ["--model={notmodel}", "--images={notimage}"], "--images"),
    ("training.predict", ["--model={notmodel}", "--images={image}"], "--model"),
    ("training.predict", ["--model={notmodel}"], "--images"),
    ("training.train", ["--cluster=slurm", "--out={out}"], "SLURM_PROCID"),
    ("training.train", ["--cluster=nope", "--out={out}"], "--cluster"),
    ("training.make_shards", ["--data_dir={missing}", "--out={out}"], "--data_dir"),
    ("training.make_shards", ["--data_dir={empty}", "--out={out}"], "--data_dir"),
    ("training.make_shards", ["--data_dir={empty}", "--out={out}", "--train_shards=0"], "--train_shards"),
    ("training.make_shards", ["--data_dir={empty}", "--out={file}/shards"], "--out"),
    ("training.demo", ["--epochs=0", "--out={out}"], "--epochs"),
    ("training.demo", ["--out={file}/demo"], "--out"),
    ("edge.export", ["--model={notmodel}", "--out={out}"], "--model"),
    ("edge.export", ["--model={missing}", "--out={out}"], "--model"),
    ("edge.export", ["--model={notmodel}", "--formats=float32,bogus", "--out={out}"], "--formats"),
    ("edge.export", ["--model={notmodel}", "--out={file}/edge"], "--out"),
    ("edge.qat", ["--model={notmodel}", "--data_dir={empty}", "--out={out}"], "--"),
    ("edge.qat", ["--model={notmodel}", "--data_dir={missing}", "--out={out}"], "--data_dir"),
    ("edge.benchmark", ["--model={missing}"], "--model"),
    ("edge.benchmark", ["--model={text}"], "--model"),
    ("edge.benchmark", ["--model={text}", "--threads=0"], "--threads"),
    ("edge.android", ["--parse={missing}"], "--parse"),
    ("edge.android", ["--model={text}", "--threads=0", "--out={out}/run.sh"], "--threads"),
    ("study.__main__", ["--members=b0,b99", "--measure_only", "--out={out}"], "--members"),
    ("study.__main__", ["--dataset=folder", "--data_dir={empty}", "--out={out}"], "data_dir"),
    ("study.__main__", ["--measure_only", "--out={file}/study"], "--out"),
    ("study.__main__", ["--rounds=0", "--measure_only", "--out={out}"], "--rounds"),
]


@pytest.fixture
def places(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "a_file").write_text("not a folder\n")
    (tmp_path / "not_a_model.keras").write_text("this is not a Keras model\n")
    (tmp_path / "not_an_image.jpg").write_text("this is not an image\n")
    (tmp_path / "notes.txt").write_text("cat\ndog\n")
    Image.new("RGB", (8, 8), (200, 40, 40)).save(tmp_path / "red.png")
    return {
        "out": str(tmp_path / "out"),
        "missing": str(tmp_path / "missing"),
        "empty": str(tmp_path / "empty"),
        "file": str(tmp_path / "a_file"),
        "notmodel": str(tmp_path / "not_a_model.keras"),
        "notimage": str(tmp_path / "not_an_image.jpg"),
        "text": str(tmp_path / "notes.txt"),
        "image": str(tmp_path / "red.png"),
    }


def _tree(root):
    found = set()
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            found.add(os.path.relpath(os.path.join(folder, name), root))
    return found


@pytest.mark.parametrize("module, argv, fragment", CASES, ids=[f"{m}:{' '.join(a)}" for m, a, _ in CASES])
def test_bad_input_gets_one_line_and_exit_2(module, argv, fragment, places, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    before = _tree(tmp_path)
    argv = [a.format(**places) for a in argv]
    code = importlib.import_module(module).main(argv)
    captured = capsys.readouterr()
    assert code == 2, (code, captured.err)
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: ") and fragment in lines[0], lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert _tree(tmp_path) == before, "a command wrote files although its input was refused"


COMMANDS = sorted({module for module, _, _ in CASES})


@pytest.mark.parametrize("module", COMMANDS)
def test_help_explains_every_flag(module, capsys):
    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(module).main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: keras-effnet")
    flags = [line.split()[0] for line in out.splitlines() if line.startswith("  --")]
    assert len(flags) >= 2, out
    assert out.count("(default:") + out.count("(required)") == len(flags), out  # each flag shows its default
    assert "\n\n" in out.split("options:")[-1], "flags are grouped"


def _console_scripts():
    from importlib.metadata import entry_points

    return sorted(
        (ep for ep in entry_points(group="console_scripts") if ep.name.startswith("keras-effnet")),
        key=lambda ep: ep.name,
    )


def test_every_console_script_names_a_main_that_takes_argv():
    import inspect

    scripts = _console_scripts()
    assert len(scripts) == 11, [ep.name for ep in scripts]
    for ep in scripts:
        main = ep.load()
        assert list(inspect.signature(main).parameters) == ["argv"], ep.value


def test_a_console_script_runs_from_any_directory(tmp_path):
    import shutil
    import subprocess
    import sys

    script = shutil.which("keras-effnet-evaluate", path=os.path.dirname(sys.executable))
    assert script, "keras-effnet-evaluate is not installed beside this Python"
    done = subprocess.run(
        [script, "--model=missing.keras", f"--data_dir={tmp_path}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: --model=missing.keras"), done.stderr
    assert "Traceback" not in done.stderr


def test_every_console_script_refuses_a_bad_flag_in_one_line_before_tensorflow_starts(tmp_path):
    """A refused command line is checked before TensorFlow is imported, so TensorFlow's C++ start-up logging
    (printed whatever TF_CPP_MIN_LOG_LEVEL the user has) never surrounds the one error line."""
    import shutil
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    for ep in _console_scripts():
        script = shutil.which(ep.name, path=os.path.dirname(sys.executable))
        assert script, f"{ep.name} is not installed beside this Python"
        done = subprocess.run(
            [script, "--no_such_flag=1"], cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env
        )
        assert done.returncode == 2, (ep.name, done.stderr)
        assert done.stderr.splitlines() == ["error: unrecognized arguments: --no_such_flag=1"], (ep.name, done.stderr)
        assert "tensorflow" not in done.stdout.lower(), (ep.name, done.stdout)


def test_the_commands_are_the_installed_packages():
    """No test folder shadows a package: pytest puts each test folder on sys.path, and a folder named like a
    package (tests/edge, tests/training) would be imported as an empty namespace package in its place."""
    from pathlib import Path

    for name in ("keras_effnet", "training", "edge", "study"):
        package = importlib.import_module(name)
        assert package.__file__ and (Path(package.__file__).parent / "__init__.py").is_file(), name
        assert "tests" not in Path(package.__file__).parts, package.__file__
