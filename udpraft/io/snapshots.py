"""Snapshot files: the state machine at a log index, durable, checksummed, atomically written.

How this works.

Layout: ``DIR/snapshots/snap-<index>-<term>.bin`` (both numbers zero-padded to 20 digits, so
names sort by index), each one file::

    offset size
    0      8    magic            b"udpRSNAP"
    8      4    version          2
    12     4    flags            0
    16     8    index            last log index the snapshot covers
    24     8    term             its term
    32     8    body length
    40     16   BLAKE2b-128 of the body
    56     4    CRC-32C of bytes 0..55 (the header itself)
    60     ...  body: u32 length, the membership at ``index`` (SnapshotMeta.conf, ASCII),
                then LogService.snapshot() bytes

The membership lives in the body so that the checksum covers it and a transfer carries it:
a follower that installs the snapshot, and any node restarting from it, must know who votes
at that index even though the CONFIG entries saying so were compacted away.

Writing (``write``): header and body go to ``<name>.tmp``, which is fsynced, renamed to its
final name, and the directory fsynced; then all but the newest ``keep`` (2) snapshots are
unlinked. A crash leaves either no file or a whole one (a leftover ``.tmp`` is removed on
open). A snapshot received from the leader arrives as ``incoming-<index>-<term>.part``
(written chunk by chunk, see snapshot_transfer.py), is verified like any file, fsynced, and
``install`` renames it into place the same way.

Reading (``read``/``load_latest``): header CRC, magic, version, the name's index and term,
the exact file size and the body checksum must all agree, or the file is ``damaged``. On
start ``load_latest`` walks the snapshots newest first and skips a damaged one with a warning
naming the file, falling back to the previous one: a snapshot is never half-loaded.

Recovery (``recover``) joins the newest valid snapshot with the durable log: entries at or
below the snapshot index are dropped (the store's compaction may lag the snapshot); a log
that does not match the snapshot (a different term at its index, or ending before it: a
reset interrupted by a crash) is reset to start after it; a log that starts beyond the
snapshot's next index has a hole nothing can fill, which is a ``SnapshotError``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from udpraft.core.types import NO_SNAPSHOT, Entry, HardState, SnapshotMeta
from udpraft.storage._fs import fsync_dir, make_dirs
from udpraft.storage.base import LogStore, StorageError
from udpraft.storage.crc32c import crc32c

log = logging.getLogger("udpraft.snapshots")

MAGIC = b"udpRSNAP"
VERSION = 2
_CONF_LEN = struct.Struct("<I")
MAX_CONF_BYTES = 1 << 20
_HEADER = struct.Struct("<8sIIQQQ16sI")
HEADER_SIZE = _HEADER.size  # 60
_CRC_SPAN = HEADER_SIZE - 4
MAX_SNAPSHOT_BYTES = 1 << 36  # 64 GiB: far beyond anything kept in memory
KEEP = 2
_NAME_RE = re.compile(r"^snap-(\d{20})-(\d{20})\.bin$")
_INCOMING_RE = re.compile(r"^incoming-\d+-\d+(-\w+)?\.part$")


class SnapshotError(StorageError):
    """Snapshots and the log cannot be joined into a state (a hole, nothing valid)."""


class SnapshotDamaged(SnapshotError):
    """A snapshot file failed its checks; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"snapshot file {path} is damaged: {reason}")
        self.path = path
        self.reason = reason


def body_checksum(body: bytes) -> bytes:
    return hashlib.blake2b(body, digest_size=16).digest()


def encode_header(meta: SnapshotMeta, body: bytes) -> bytes:
    head = _HEADER.pack(MAGIC, VERSION, 0, meta.index, meta.term, len(body), body_checksum(body), 0)
    return head[:_CRC_SPAN] + struct.pack("<I", crc32c(head[:_CRC_SPAN]))


@dataclass(frozen=True, slots=True)
class SnapshotHeader:
    meta: SnapshotMeta
    length: int  # body bytes
    checksum: bytes

    @property
    def file_size(self) -> int:
        return HEADER_SIZE + self.length


def parse_header(buf: bytes, path: str) -> SnapshotHeader:
    """Check and decode a file's first HEADER_SIZE bytes; raises SnapshotDamaged."""
    if len(buf) < HEADER_SIZE:
        raise SnapshotDamaged(path, f"{len(buf)} bytes, shorter than the {HEADER_SIZE}-byte header")
    magic, version, flags, index, term, length, checksum, crc = _HEADER.unpack_from(buf)
    if crc != crc32c(buf[:_CRC_SPAN]):
        raise SnapshotDamaged(path, "header checksum mismatch")
    if magic != MAGIC or version != VERSION or flags != 0:
        raise SnapshotDamaged(path, f"not a version {VERSION} snapshot")
    if index < 1 or term < 1 or length > MAX_SNAPSHOT_BYTES:
        raise SnapshotDamaged(path, f"nonsense header (index {index}, term {term})")
    return SnapshotHeader(SnapshotMeta(index, term), length, checksum)


def _frame(conf: str) -> bytes:
    raw = conf.encode("ascii")
    if len(raw) > MAX_CONF_BYTES:
        raise ValueError(f"membership of {len(raw)} bytes is too large for a snapshot")
    return _CONF_LEN.pack(len(raw)) + raw


def _unframe(body: bytes, path: str) -> tuple[str, bytes]:
    """Split a checked body into (membership encoding, state machine bytes)."""
    if len(body) < _CONF_LEN.size:
        raise SnapshotDamaged(path, "body too short for its membership field")
    (n,) = _CONF_LEN.unpack_from(body)
    end = _CONF_LEN.size + n
    if n > MAX_CONF_BYTES or end > len(body):
        raise SnapshotDamaged(path, f"membership field of {n} bytes overruns the body")
    try:
        conf = body[_CONF_LEN.size : end].decode("ascii")
    except UnicodeDecodeError:
        raise SnapshotDamaged(path, "membership field is not ASCII") from None
    return conf, body[end:]


def snapshot_name(meta: SnapshotMeta) -> str:
    return f"snap-{meta.index:020d}-{meta.term:020d}.bin"


class SnapshotStore:
    """The snapshot files of one node, in ``dir_path`` (created if missing)."""

    def __init__(self, dir_path: str, keep: int = KEEP) -> None:
        if keep < 1:
            raise ValueError("keep at least one snapshot")
        self.dir = os.path.abspath(dir_path)
        self.keep = keep
        make_dirs(self.dir)
        removed = False
        for name in os.listdir(self.dir):
            if name.endswith(".tmp") or _INCOMING_RE.match(name):
                os.unlink(os.path.join(self.dir, name))  # interrupted write or transfer
                removed = True
        if removed:
            fsync_dir(self.dir)

    # -- listing ------------------------------------------------------------------------

    def files(self) -> list[tuple[SnapshotMeta, str]]:
        """Every snapshot file by (index, term), oldest first (validity not checked)."""
        out = []
        for name in os.listdir(self.dir):
            m = _NAME_RE.match(name)
            if m:
                meta = SnapshotMeta(int(m.group(1)), int(m.group(2)))
                out.append((meta, os.path.join(self.dir, name)))
        out.sort(key=lambda mp: (mp[0].index, mp[0].term))
        return out

    def path_for(self, meta: SnapshotMeta) -> str:
        return os.path.join(self.dir, snapshot_name(meta))

    def incoming_path(self, meta: SnapshotMeta, tag: str) -> str:
        return os.path.join(self.dir, f"incoming-{meta.index}-{meta.term}-{tag}.part")

    # -- reading ------------------------------------------------------------------------

    def read(self, path: str, expect: SnapshotMeta | None = None) -> tuple[SnapshotMeta, bytes]:
        """The snapshot in ``path``, fully checked; raises SnapshotDamaged."""
        try:
            with open(path, "rb") as f:
                buf = f.read()
        except OSError as e:
            raise SnapshotDamaged(path, f"unreadable: {e}") from None
        hdr = parse_header(buf, path)
        m = _NAME_RE.match(os.path.basename(path))
        if expect is None and m:
            expect = SnapshotMeta(int(m.group(1)), int(m.group(2)))
        if expect is not None and (hdr.meta.index, hdr.meta.term) != (expect.index, expect.term):
            raise SnapshotDamaged(path, f"header says {hdr.meta}, expected {expect}")
        if len(buf) != hdr.file_size:
            raise SnapshotDamaged(path, f"{len(buf)} bytes, header says {hdr.file_size}")
        body = buf[HEADER_SIZE:]
        if body_checksum(body) != hdr.checksum:
            raise SnapshotDamaged(path, "body checksum mismatch")
        conf, state = _unframe(body, path)
        return SnapshotMeta(hdr.meta.index, hdr.meta.term, conf), state

    def load_latest(self) -> tuple[SnapshotMeta, bytes] | None:
        """The newest snapshot that passes every check (skipping damaged ones, loudly)."""
        for _meta, path in reversed(self.files()):
            try:
                return self.read(path)
            except SnapshotDamaged as e:
                log.warning("%s; falling back to an older snapshot", e)
        return None

    def header(self, path: str) -> SnapshotHeader:
        with open(path, "rb") as f:
            return parse_header(f.read(HEADER_SIZE), path)

    # -- writing ------------------------------------------------------------------------

    def write(self, meta: SnapshotMeta, state: bytes) -> str:
        """Durably write the snapshot ``state`` covering the log up to ``meta`` (atomic);
        ``meta.conf`` (the membership there) is stored with it."""
        if meta.index < 1 or meta.term < 1:
            raise ValueError(f"no snapshot at {meta}")
        body = _frame(meta.conf) + state
        final = self.path_for(meta)
        tmp = final + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(encode_header(meta, body) + body)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, final)
        fsync_dir(self.dir)
        self.prune()
        return final

    def install(self, path: str, meta: SnapshotMeta) -> str:
        """Move a received (verified, fsynced) snapshot file into place, durably."""
        final = self.path_for(meta)
        os.rename(path, final)
        fsync_dir(self.dir)
        self.prune()
        return final

    def prune(self) -> None:
        """Unlink all but the newest ``keep`` snapshots (an open file stays readable)."""
        old = self.files()[: -self.keep]
        for _meta, path in old:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        if old:
            fsync_dir(self.dir)


@dataclass(frozen=True, slots=True)
class Recovered:
    hard_state: HardState
    snapshot: SnapshotMeta
    entries: Sequence[Entry]  # the log after the snapshot (maybe ``EntryColumns``: a view)
    body: bytes | None  # the state machine at the snapshot, None without one


def recover(store: LogStore, snaps: SnapshotStore | None) -> Recovered:
    """Join the newest valid snapshot with the durable log (see the module comment)."""
    hs, entries = store.load()
    found = snaps.load_latest() if snaps is not None else None
    first, last = store.first_index(), store.last_index()
    if found is None:
        if first > 1:
            where = snaps.dir if snaps is not None else "(snapshots disabled)"
            raise SnapshotError(
                f"the log starts at index {first} but no valid snapshot covers the entries "
                f"before it in {where}"
            )
        return Recovered(hs, NO_SNAPSHOT, entries, None)
    meta, body = found
    if first > meta.index + 1:
        raise SnapshotError(
            f"snapshot {snapshot_name(meta)} ends at index {meta.index} but the log starts at "
            f"{first}: entries {meta.index + 1}..{first - 1} are missing (a newer snapshot "
            "was damaged?)"
        )
    at = meta.index - first  # position of the snapshot's last entry in ``entries``
    if last < meta.index or (at >= 0 and entries[at].term != meta.term):
        # An installed snapshot whose log reset did not complete: nothing here is usable.
        log.warning("log %d..%d does not continue snapshot %s: resetting it", first, last, meta)
        store.reset(meta.index + 1)
        store.sync()
        return Recovered(hs, meta, [], body)
    return Recovered(hs, meta, entries[at + 1 :], body)
