"""The export's output folder: which entries an export owns and what an earlier export left to remove.

Its files are written by `common.files` (atomically, with the mode of any file the user creates), as the
trainer's and the study's are.

An export never mixes its files with others: a folder holding anything it did not write is refused before
anything is written, and what an earlier export wrote is removed (under the folder's lock) before writing.
"""

from __future__ import annotations

import os

from common import lock as folder_lock
from edge import formats as formats_lib


def is_owned(name: str) -> bool:
    """Whether `name` in the output folder is something an export writes (a file, a folder or a temporary)."""
    labels, report_json, report_md = formats_lib.LABELS, formats_lib.REPORT_JSON, formats_lib.REPORT_MD
    return (
        name in (labels, report_json, report_md, formats_lib.QAT_SUBDIR, formats_lib.SAVED_MODEL)
        or (name.startswith("model_") and name.endswith(".tflite"))
        or name.startswith((".edge-export-", f".{report_json}.", f".{report_md}.", f".{labels}.", ".model_"))
    )


def check_out_dir(out_dir: str) -> list[str]:
    """The entries of `out_dir` that an earlier export wrote (to remove before writing); raises ValueError when
    it holds anything else (an export never mixes its files with others)."""
    if not os.path.isdir(out_dir):
        return []
    entries = sorted(e for e in os.listdir(out_dir) if e != folder_lock.LOCK_NAME)  # held while we run
    foreign = [e for e in entries if not is_owned(e)]
    if foreign:
        raise ValueError(
            f"out: {out_dir!r} holds files that edge.export did not write ({', '.join(foreign[:3])}"
            f"{', ...' if len(foreign) > 3 else ''}); give an empty or new folder."
        )
    return entries


def stale_entries(out_dir: str, qat_dir: str | None = None) -> list[str]:
    """What an earlier export left in `out_dir`, to remove (under the folder's lock); refuses foreign files.
    A `qat_dir` inside it (OUT/qat, converted by this export) is kept."""
    stale = check_out_dir(out_dir)
    if qat_dir and os.path.abspath(qat_dir) == os.path.abspath(os.path.join(out_dir, formats_lib.QAT_SUBDIR)):
        stale = [e for e in stale if e != formats_lib.QAT_SUBDIR]
    return stale
