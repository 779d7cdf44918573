"""Small POSIX helpers the disk backends share: directory fsync, fdatasync, a lock file.

How this works: creating, renaming or unlinking a file changes its directory, and only an
fsync of the directory makes that change durable; ``fdatasync`` flushes a file's data and
the metadata needed to read it back (its size) but skips timestamps. ``lock_file`` takes a
non-blocking ``flock`` so two stores never write the same log; the kernel drops the lock
when the process dies, so a SIGKILLed node can be restarted at once.
"""

from __future__ import annotations

import fcntl
import os

from udpraft.storage.base import StorageError


def fsync_dir(path: str) -> None:
    """Make a directory's entries (creates, renames, unlinks) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: str) -> None:
    """``os.makedirs``, then fsync the parent of each directory it created.

    A new directory exists durably only once its parent is fsynced; without this a power
    cut could take a fresh node's whole data directory, vote included.
    """
    path = os.path.abspath(path)
    missing: list[str] = []
    p = path
    while not os.path.isdir(p):
        missing.append(p)
        p = os.path.dirname(p)
    os.makedirs(path, exist_ok=True)
    for d in reversed(missing):
        fsync_dir(os.path.dirname(d))


def fdatasync(fd: int) -> None:
    sync = getattr(os, "fdatasync", os.fsync)  # macOS has no fdatasync
    sync(fd)


def lock_file(path: str, what: str) -> int:
    """Hold an exclusive flock on ``path`` (created if missing); return its fd."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StorageError(f"{what} is in use by another store (lock {path})") from None
    except BaseException:
        os.close(fd)
        raise
    return fd
