"""`python -m keras_effnet`: the family table, measured."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", "keras_effnet", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def test_family_table_json():
    out = _run("--family", "lite", "--resolution", "64", "--formula_phis", "", "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout.strip().splitlines()[-1])
    assert [r["variant"] for r in rows] == [f"efficientnetlite{i}" for i in range(5)]
    assert rows[0]["trainable_params"] == 4_652_008
    assert all(r["resolution"] == 64 for r in rows)


def test_family_table_markdown_and_bad_flag():
    out = _run("--family", "efficientnet", "--resolution", "32", "--formula_phis", "3")
    assert out.returncode == 0, out.stderr
    assert "| efficientnetb7 | 7 |" in out.stdout and "66,658,687" in out.stdout and "3 (formula)" in out.stdout
    bad = _run("--resolution", "16")
    assert bad.returncode != 0 and "--resolution must be 'native' or an integer >= 32, got '16'" in bad.stderr
