"""Every command that owns an output folder refuses to write into one that another process holds.

A real process holds the folder's lock (as a running trainer, exporter, QAT run or study does); each command,
started as users start it, must stop in one line naming the folder and the holder's pid and host, with exit
code 2, and leave the folder exactly as it was. The trainer's own test runs two real trainers on one folder
(tests/training/test_train_e2e.py).
"""

import os
import signal
import socket
import subprocess
import sys

import pytest

KERAS_FREE = True
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOLD = """
import sys, time
from common import lock
with lock.exclusive(sys.argv[1], command="holder"):
    open(sys.argv[1] + "/partial.ckpt", "w").write("the holder's work")
    print("held", flush=True)
    time.sleep(600)
"""


def _inputs(tmp_path):
    model = tmp_path / "model.keras"
    model.write_bytes(b"not read: the folder is checked first")
    data = tmp_path / "data"
    for split in ("train", "val"):
        (data / split / "a").mkdir(parents=True)
    return str(model), str(data)


COMMANDS = {
    "edge.export": lambda m, d: [f"--model={m}", f"--data_dir={d}"],
    "edge.qat": lambda m, d: [f"--model={m}", f"--data_dir={d}"],
    "study": lambda m, d: ["--measure_only"],
    "training.train": lambda m, d: [f"--data_dir={d}", "--image_size=32", "--epochs=1"],
}


@pytest.mark.parametrize("module", sorted(COMMANDS))
def test_a_command_on_a_held_folder_stops_in_one_line_and_writes_nothing(tmp_path, module):
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(out)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=REPO),
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        before = {n: (out / n).read_bytes() for n in os.listdir(out)}
        proc = subprocess.run(
            [sys.executable, "-m", module, f"--out={out}", *COMMANDS[module](*_inputs(tmp_path))],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        )
        after = {n: (out / n).read_bytes() for n in os.listdir(out)}
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        f"error: --out={out}: the folder is in use by pid {holder.pid} on host {socket.gethostname()} "
        "(holder); wait for it to end (a killed process releases it by itself) or give another "
        "folder"
    ], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert after == before
