"""`python -m keras_effnet`: the family table, measured; the command-line convention."""

import json
import os
import subprocess
import sys

import pytest

from keras_effnet import __main__ as table


def _run(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(
        [sys.executable, "-m", "keras_effnet", *args], env=env, capture_output=True, text=True, timeout=600
    )


def test_family_table_json():
    out = _run("--family=lite", "--resolution=64", "--formula_phis=", "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout.strip().splitlines()[-1])
    assert [r["variant"] for r in rows] == [f"efficientnetlite{i}" for i in range(5)]
    assert rows[0]["trainable_params"] == 4_652_008
    assert all(r["resolution"] == 64 for r in rows)


def test_family_table_markdown(capsys):
    assert table.main(["--family=efficientnet", "--resolution=32", "--formula_phis=3"]) == 0
    out = capsys.readouterr().out
    assert "| efficientnetb7 | 7 |" in out and "66,658,687" in out and "3 (formula)" in out


def test_v2_rows_show_train_resolution_and_published_figures():
    rows = table.members("v2")
    assert [name for name, _ in rows] == [f"efficientnetv2-b{i}" for i in range(4)] + [
        "efficientnetv2-s",
        "efficientnetv2-m",
        "efficientnetv2-l",
    ]
    assert [(c.resolution, c.train_resolution) for _, c in rows] == [
        (224, 192),
        (240, 192),
        (260, 208),
        (300, 240),
        (384, 300),
        (480, 384),
        (480, 384),
    ]
    assert all(name in table.PAPER for name, _ in rows)
    line = table.format_table(
        [
            {
                "variant": "efficientnetv2-s",
                "family": "v2",
                "phi": None,
                "source": "preset",
                "width": 1.0,
                "depth": 1.0,
                "resolution": 384,
                "train_resolution": 300,
                "params": 21_612_360,
                "trainable_params": 21_458_488,
                "gmacs": 8.4,
                "activations_m": 1.0,
                "paper_params_m": 21.5,
                "paper_gflops": 8.4,
            }
        ]
    ).splitlines()[-1]
    assert (
        line.startswith("| efficientnetv2-s | — | 1.000 | 1.000 | 384 | 300 | 21,612,360 |")
        and "| 21.5M | 8.4B |" in line
    )


@pytest.mark.parametrize(
    "argv,fragment",
    [
        (["--resolution=16"], "--resolution=16: expected 'native' or an integer >= 32"),
        (["--family=v3"], "--family=v3: expected one of efficientnet, lite, v2, all"),
        (["--formula_phis=-1"], "--formula_phis=-1.0: expected numbers in 0..12"),
        (["--formula_phis=x"], "--formula_phis"),
    ],
)
def test_bad_flags_are_one_line_and_exit_2(argv, fragment, capsys):
    assert table.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and fragment in err, err
