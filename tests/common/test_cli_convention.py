"""common.cli: the command-line convention every entry point uses."""

from __future__ import annotations

import dataclasses
import errno
import os

import pytest

from common import cli


@dataclasses.dataclass(frozen=True)
class _Config:
    model: str | None = cli.flag(None, "A model file.", group="input", required=True)
    threads: tuple[int, ...] = cli.flag((1,), "Thread counts, comma-separated.", group="timing")
    fmt: str = cli.flag("a", "Format.", choices=("a", "b"))
    rate: float | None = cli.flag(None, "A rate.")
    verbose: bool = cli.flag(False, "Talk.")
    internal: int = 3  # not a flag

    def __post_init__(self):
        cli.positive("threads", min(self.threads) if self.threads else 0)


def _run(argv, run=lambda c: 0):
    seen = []

    def wrapped(config):
        seen.append(config)
        return run(config)

    code = cli.main(_Config, wrapped, argv, prog="t", description="A test command.")
    return code, (seen[0] if seen else None)


def test_flags_become_a_typed_config():
    code, config = _run(["--model=m.keras", "--threads", "1,2", "--verbose", "--rate=0.5", "--fmt=b"])
    assert code == 0
    assert config == _Config(model="m.keras", threads=(1, 2), fmt="b", rate=0.5, verbose=True)
    code, config = _run(["--model=m", "--noverbose"])
    assert config.verbose is False and config.threads == (1,) and config.internal == 3


@pytest.mark.parametrize(
    "argv, fragment",
    [
        ([], "--model is required"),
        (["--model=m", "--fmt=c"], "--fmt=c: expected one of a, b"),
        (["--model=m", "--threads=0"], "--threads=0: expected a positive integer"),
        (["--model=m", "--threads=x"], "--threads"),
        (["--model=m", "--rate=fast"], "--rate"),
        (["--model=m", "--bogus=1"], "--bogus=1"),
        (["--model=m", "extra"], "extra"),
        (["--model=m", "--internal=4"], "--internal=4"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, fragment, capsys):
    code, config = _run(argv)
    err = capsys.readouterr().err
    assert code == cli.EXIT_USAGE and config is None
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert fragment in err and "Traceback" not in err


def test_help_groups_flags_and_shows_defaults(capsys):
    with pytest.raises(SystemExit) as exit_info:
        _run(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "A test command." in out
    for group in ("input:", "timing:", "general:"):
        assert group in out
    assert "(default: 1)" in out and "One of: a, b." in out and "(required)" in out
    assert "--internal" not in out


def test_expected_errors_raised_by_the_command(capsys):
    def fail(config):
        raise cli.UsageError("model", config.model, "a .keras file")

    code, _ = _run(["--model=x.txt"], fail)
    assert code == 2 and capsys.readouterr().err == "error: --model=x.txt: expected a .keras file\n"

    def disk_full(config):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "out/model.keras")

    code, _ = _run(["--model=m"], disk_full)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "out/model.keras" in err


def test_interrupt_exits_130_with_the_resume_line(capsys):
    def interrupted(config):
        raise KeyboardInterrupt

    assert cli.main(_Config, interrupted, ["--model=m"], prog="t", description="", resumable=True) == 130
    assert capsys.readouterr().err == cli.RESUME_HINT + "\n"
    assert cli.main(_Config, interrupted, ["--model=m"], prog="t", description="") == 130
    assert capsys.readouterr().err == "interrupted\n"


def test_unexpected_errors_keep_their_traceback():
    def bug(config):
        raise ZeroDivisionError("a bug")

    with pytest.raises(ZeroDivisionError):
        _run(["--model=m"], bug)


def test_path_checks(tmp_path):
    with pytest.raises(cli.UsageError, match="does not exist"):
        cli.require_dir("data_dir", str(tmp_path / "missing"))
    (tmp_path / "f").write_text("x")
    with pytest.raises(cli.UsageError, match="not a folder"):
        cli.require_dir("data_dir", str(tmp_path / "f"))
    with pytest.raises(cli.UsageError, match="not a file"):
        cli.require_file("model", str(tmp_path))
    assert cli.require_writable_dir("out", str(tmp_path / "new" / "deeper")) == str(tmp_path / "new" / "deeper")
    assert not (tmp_path / "new").exists()  # checked, not created
    with pytest.raises(cli.UsageError, match="a file of that name exists"):
        cli.require_writable_dir("out", str(tmp_path / "f"))
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if not os.access(locked, os.W_OK):  # root ignores permission bits
            with pytest.raises(cli.UsageError, match="no write permission"):
                cli.require_writable_dir("out", str(locked / "sub"))
    finally:
        locked.chmod(0o700)
