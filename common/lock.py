"""One writer per output folder: an exclusive advisory lock on `<folder>/.lock` for the whole run of a command.

Schedulers retry jobs that still run, a command is started in a second terminal, a notebook cell runs twice:
without a lock, two processes with the same flags both write checkpoints, metrics and models into one folder
and what is left is whichever wrote last. Every command that owns a folder (train, qat, export, study) holds
this lock while it runs, and a second process on the same folder stops with one line naming the holder.

The lock is `fcntl.flock` on a file inside the folder (POSIX advisory locking, as Git and pip use): the
operating system releases it when the holding process ends in any way, SIGKILL included, so there is never a
stale lock to clean up by hand, and the same command run again simply takes it. The holder writes its pid, host
and run key into the file for the message the next process prints. The holder removes the file as it ends; a
process that opened the old file just before (and so could lock a file no longer in the folder) sees that its
inode is gone and tries again, so two processes never hold two different lock files of one folder.

Multi-worker training shares one folder between the workers of one run: the chief holds the lock with a run
key (the cluster's addresses); the other workers only check that the holder's key is their own
(`check_shared`), so a worker of another run is refused and the workers of this one read and restore freely.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time

from common import cli

LOCK_NAME = ".lock"


class FolderBusyError(cli.UsageError):
    """Another process holds the folder: one line naming the folder and the holder, exit code 2."""


def _holder(fd_or_path) -> dict:
    """The holder's record (pid, host, command, run), or {} while it is being written or unreadable."""
    for _ in range(20):
        try:
            if isinstance(fd_or_path, int):
                text = os.pread(fd_or_path, 65536, 0).decode("utf-8", "replace")
            else:
                with open(fd_or_path, encoding="utf-8", errors="replace") as f:
                    text = f.read()
            return json.loads(text) if text.strip() else {}
        except (OSError, ValueError):
            time.sleep(0.05)  # the holder truncates, then writes: read again
    return {}


def describe_holder(record: dict) -> str:
    if not record.get("pid"):
        return "another process (it has not yet written its pid)"
    return f"pid {record['pid']} on host {record.get('host', '?')}" + (
        f" ({record['command']})" if record.get("command") else ""
    )


def busy_message(flag: str, folder: str, record: dict) -> str:
    return (
        f"--{flag}={folder}: the folder is in use by {describe_holder(record)}; wait for it to end "
        "(a killed process releases it by itself) or give another folder"
    )


def _open_locked(path: str) -> int | None:
    """An fd holding an exclusive lock on `path`, or None when another process holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the file was removed between our open and our lock: lock the file that is there now


def _write_record(fd: int, record: dict) -> None:
    data = (json.dumps(record, sort_keys=True) + "\n").encode("utf-8")
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    os.fsync(fd)


@contextlib.contextmanager
def exclusive(folder: str, *, flag: str = "out", command: str = "", run: str = ""):
    """Hold the folder's lock for the `with` block; raise `FolderBusyError` at once when another process holds it.

    Creates the folder when it does not exist. On the way out the lock file is removed, and the folder too when
    this call created it and nothing was written, so a run that fails on bad input leaves no trace and a
    finished run leaves only its outputs. `run` identifies a multi-worker run for `check_shared`.
    """
    created = not os.path.isdir(folder)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, LOCK_NAME)
    fd = _open_locked(path)
    if fd is None:
        raise FolderBusyError(busy_message(flag, folder, _holder(path)))
    try:
        _write_record(fd, {"pid": os.getpid(), "host": socket.gethostname(), "command": command, "run": run})
        yield path
    finally:
        # Still holding the lock: a process that opened this file meanwhile finds it unlinked after it locks
        # it (`_open_locked` compares inodes) and tries again, so removing it cannot let two writers in.
        with contextlib.suppress(OSError):
            os.remove(path)
        if created:
            with contextlib.suppress(OSError):
                os.rmdir(folder)  # only when empty: a run that failed before writing leaves no folder behind
        os.close(fd)  # releases the lock


def check_shared(folder: str, *, run: str, flag: str = "out") -> dict:
    """For a multi-worker worker that is not the chief: the folder must be held by the chief of this same run.

    Returns the holder's record. Raises `FolderBusyError` when the folder is held for another run, and
    when nobody holds it (the chief is not running on this folder, so this worker is not part of its run).
    """
    path = os.path.join(folder, LOCK_NAME)
    fd = _open_locked(path) if os.path.exists(path) else -1
    if fd is not None:  # no lock file, or we could take it: no chief holds the folder
        if fd >= 0:
            os.close(fd)
        raise FolderBusyError(
            f"--{flag}={folder}: no chief holds this folder; a worker writes only beside its "
            "running chief (start every worker of the run with the same --out)"
        )
    record = _holder(path)
    if record.get("run") != run:
        raise FolderBusyError(
            f"--{flag}={folder}: the folder is in use by {describe_holder(record)} for another "
            f"run (cluster {record.get('run') or 'single-process'}, this worker's {run}); "
            "give this run its own folder"
        )
    return record
