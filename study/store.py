"""The study folder on disk: its configuration, one file per finished step, the merged results.

Resume: every finished step is one JSON file under `S/steps/`, written
atomically, so a study interrupted and rerun skips what is done. The folder's
`study.json` pins the settings and hardware the results depend on; a rerun with
different ones is refused with the differences listed, never mixed in or
overwritten.
"""

from __future__ import annotations

import csv
import io
import json
import os

from common import cli, files

STUDY_FILE = "study.json"
STEPS_DIR = "steps"


def write_json(path: str, obj) -> None:
    """Study files are JSON with sorted keys; numpy scalars are written as numbers."""
    files.write_json(path, obj, sort_keys=True, default=_jsonable)


def _jsonable(value):
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serializable: {value!r}")


def open_study(out: str, fingerprint: dict) -> None:
    """Create `out/study.json`, or check that the one there has the same fingerprint.

    Raises cli.UsageError naming every differing key when `out` holds a study made
    with other settings or on other hardware, or holds unrelated files.
    """
    path = os.path.join(out, STUDY_FILE)
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        old = _flat(old)
        new = _flat(json.loads(json.dumps(fingerprint, default=_jsonable)))
        diffs = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        if diffs:
            lines = "; ".join(f"{k}: folder has {old.get(k)!r}, this run has {new.get(k)!r}" for k in diffs)
            raise cli.UsageError(
                f"--out={out}: holds a study made with another configuration ({lines}); its results are kept: "
                "pass a new --out, or rerun with the same settings to resume"
            )
        return
    if os.path.isdir(out) and [n for n in os.listdir(out) if not n.startswith(".")]:
        raise cli.UsageError(
            "out", out, f"a new or empty folder, or a study folder (this one is not empty and has no {STUDY_FILE})"
        )
    write_json(path, fingerprint)


def _flat(d: dict, prefix: str = "") -> dict:
    """{"settings": {"epochs": 1}} -> {"epochs": 1}; {"hardware": {"gpu": ..}} -> {"hardware.gpu": ..}."""
    flat = {}
    for k, v in d.items():
        name = k if prefix in ("", "settings.") else prefix + k
        if isinstance(v, dict) and k in ("settings", "hardware", "libraries"):
            flat.update(_flat(v, "" if k == "settings" else f"{prefix}{k}."))
        else:
            flat[name] = v
    return flat


def step_path(out: str, step_id: str) -> str:
    return os.path.join(out, STEPS_DIR, step_id + ".json")


def load_step(out: str, step_id: str):
    path = step_path(out, step_id)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def save_step(out: str, step_id: str, record: dict) -> None:
    write_json(step_path(out, step_id), record)


def all_steps(out: str) -> list[dict]:
    """Every finished step's record, in file-name order."""
    folder = os.path.join(out, STEPS_DIR)
    names = sorted(n for n in os.listdir(folder) if n.endswith(".json")) if os.path.isdir(folder) else []
    records = []
    for name in names:
        with open(os.path.join(folder, name)) as f:
            records.append(json.load(f))
    return records


def write_csv(path: str, rows: list[dict], columns: list[str]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    files.atomic_write(path, buf.getvalue())
