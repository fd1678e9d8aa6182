"""The cache of the decode checks: a folder's verdicts kept beside the files they judge.

Decoding every image before training (the folder scan, the shard check) costs
minutes on a large dataset, so its verdicts are kept in one hidden JSON file
per folder, `{"version": N, <key>: {name: entry}}`, written atomically. An
entry is trusted while its file's `stamp` (size and mtime in ns) is unchanged.
A damaged file or one of another version reads as empty (everything is checked
again); a folder that cannot be written keeps no cache (correct, only slower).
"""

from __future__ import annotations

import json
import os


def stamp(path: str) -> list[int]:
    """[size, mtime in ns] of `path`: what must be unchanged for its cached verdict to hold."""
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


def load(path: str, version: int, key: str) -> dict:
    """The entries under `key` of the cache file `path`; {} when it is absent, damaged or of another version."""
    try:
        with open(path) as f:
            saved = json.load(f)
        if saved.get("version") == version:
            return saved[key]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return {}


def save(path: str, version: int, key: str, entries: dict) -> None:
    """Write `entries` under `key` atomically; a folder that cannot be written is left as it is."""
    from common import files as files_lib

    try:
        files_lib.atomic_write(path, json.dumps({"version": version, key: entries}))
    except OSError:
        pass  # a read-only dataset: correct, only slower next time
