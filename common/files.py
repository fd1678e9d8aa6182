"""Atomic file writes, for every output of the trainer, the exporter and the study.

Each file is written to a temporary name in its own directory, flushed to disk,
then renamed over the target: a crash (SIGKILL included) leaves either the old
file or the new one, never half of one. The file gets the permissions of any
file the user creates (0666 less the umask, usually 0644), not the 0600 that
`tempfile.mkstemp` gives its temporaries.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile


def default_mode() -> int:
    """0666 less the process umask: what `open(path, "w")` would give a new file."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str, *, suffix: str = ".tmp"):
    """Yield a temporary path beside `path`; on success, give it the usual mode and rename it to `path`.

    For writers that take a file name (`model.save`, `tf.io`): a failure or a
    kill leaves `path` as it was and no temporary behind (except after SIGKILL,
    a hidden `.<name>.*` file).
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=suffix, dir=directory)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write(path: str, data: str | bytes) -> str:
    """Write `data` (text as UTF-8) to `path` atomically; return `path`."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
    return path


def write_json(path: str, value, *, sort_keys: bool = False, default=None) -> str:
    """The one JSON writer: `value` as indented JSON with a final newline, written atomically; return `path`.

    `default` converts values json cannot (numpy scalars, say), as in `json.dumps`.
    """
    return atomic_write(path, json.dumps(value, indent=1, sort_keys=sort_keys, default=default) + "\n")
