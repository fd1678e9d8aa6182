"""common.lock: one writer per output folder, with real processes holding and losing the lock."""

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from common import lock

KERAS_FREE = True
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOLD = """
import sys, time
from common import lock
with lock.exclusive(sys.argv[1], command="holder", run=sys.argv[2]):
    print("held", flush=True)
    time.sleep(600)
"""


def _holder(folder, run=""):
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder), run],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=REPO),
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_process_is_refused_naming_the_holder_and_sigkill_releases_it(tmp_path):
    folder = tmp_path / "out"
    proc = _holder(folder)
    try:
        with pytest.raises(lock.FolderBusyError) as e:
            with lock.exclusive(str(folder), command="second"):
                raise AssertionError("the lock was taken twice")
        assert str(e.value) == (
            f"--out={folder}: the folder is in use by pid {proc.pid} on host "
            f"{socket.gethostname()} (holder); wait for it to end (a killed process releases "
            "it by itself) or give another folder"
        )
        assert os.listdir(folder) == [lock.LOCK_NAME]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with lock.exclusive(str(folder), command="after") as path:  # nothing to clean up by hand
        record = json.loads(open(path).read())
        assert record["pid"] == os.getpid() and record["command"] == "after"
        (folder / "result.txt").write_text("done")
    assert os.listdir(folder) == ["result.txt"]  # a finished run leaves its outputs alone


def test_a_failed_run_in_a_new_folder_leaves_no_trace(tmp_path):
    folder = tmp_path / "new"
    with pytest.raises(ValueError):
        with lock.exclusive(str(folder)):
            raise ValueError("bad input found after the lock was taken")
    assert not folder.exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    with pytest.raises(ValueError):
        with lock.exclusive(str(existing)):
            raise ValueError("bad input")
    assert existing.is_dir() and os.listdir(existing) == []


def test_a_failed_run_keeps_what_it_wrote(tmp_path):
    folder = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with lock.exclusive(str(folder)):
            (folder / "checkpoint").write_text("epoch 1")
            raise RuntimeError("crashed in epoch 2")
    assert os.listdir(folder) == ["checkpoint"]


def test_workers_share_the_chiefs_folder_and_a_worker_of_another_run_is_refused(tmp_path):
    folder = tmp_path / "shared"
    with pytest.raises(lock.FolderBusyError, match="no chief holds this folder"):
        lock.check_shared(str(folder), run="a:1,a:2")
    assert not folder.exists()  # a worker never creates the folder
    proc = _holder(folder, run="a:1,a:2")
    try:
        assert lock.check_shared(str(folder), run="a:1,a:2")["pid"] == proc.pid
        with pytest.raises(lock.FolderBusyError, match=f"in use by pid {proc.pid} .* for another run"):
            lock.check_shared(str(folder), run="b:1,b:2")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with pytest.raises(lock.FolderBusyError, match="no chief holds this folder"):
        lock.check_shared(str(folder), run="a:1,a:2")  # the chief was killed: the file it left does not count
    assert os.listdir(folder) == [lock.LOCK_NAME]


def test_the_refusal_is_one_line_and_exit_code_2_through_the_command_convention(tmp_path):
    folder = tmp_path / "out"
    proc = _holder(folder)
    try:
        code = """
import dataclasses, sys
from common import cli, lock

@dataclasses.dataclass(frozen=True)
class C:
    out: str = cli.flag(None, "output folder")

def run(c):
    with lock.exclusive(c.out):
        open(c.out + "/written", "w").close()

sys.exit(cli.main(C, run, sys.argv[1:], prog="probe", description="probe"))
"""
        done = subprocess.run(
            [sys.executable, "-c", code, f"--out={folder}"],
            cwd=REPO,
            capture_output=True,
            text=True,
            env=dict(os.environ, PYTHONPATH=REPO),
            timeout=120,
        )
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [
        f"error: --out={folder}: the folder is in use by pid {proc.pid} on host "
        f"{socket.gethostname()} (holder); wait for it to end (a killed process "
        "releases it by itself) or give another folder"
    ]
    assert os.listdir(folder) == [lock.LOCK_NAME]
