"""Atomic file writes, for every output of the trainer, the exporter and the study.

Each file is written to a temporary name in its own directory, flushed to disk,
then renamed over the target: a crash (SIGKILL included) leaves either the old
file or the new one, never half of one.
"""

from __future__ import annotations

import os
import tempfile


def atomic_write(path: str, data: str | bytes) -> str:
    """Write `data` (text as UTF-8) to `path` atomically; return `path`."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path
