"""``FileLogStore``: the Raft log as append-only segment files (a write-ahead log).

How this works.

Layout of the directory::

    LOCK                                  flock'ed while open: one process per log
    hardstate.bin                         term/vote/commit, two alternating slots
    wal-00000000000000000001.log          segments, named by the index of their first
    wal-00000000000000004097.log          entry; the last one is the active segment

Each segment is a sequence of frames ``length u32 | crc32c u32 | record`` (codec.py)
holding entries with consecutive indexes: an entry record (one entry) or, for a batch of
at least ``run_min_entries`` (8) entries, run records of up to 4,096 entries each, with
one CRC and column headers (runs.py): about half the encoding cost per entry. A batch is
encoded into one buffer and written with one ``os.write`` to the active segment (opened
``O_APPEND``); ``sync`` is one ``fdatasync`` of that segment, plus one for the hard state
if it changed: group commit.
Before each batch, a full active segment (``segment_bytes_max``) is fdatasynced and a new
one started (directory fsynced), so only the last segment can ever hold unsynced bytes.

In memory we keep, per segment, the byte offset of every entry's frame (the entries of a
run share theirs) and, per run frame, the last index written in it. A conflict truncation
(Raft §5.3) unlinks the segments after the one holding the first conflicting index, cuts
that segment at the entry's frame with ``ftruncate``, and makes both durable *before* the
new entries are written. Otherwise a crash could leave new entries followed by the old
suffix on disk, a log that never existed, and this node would wrongly acknowledge entries
it does not hold. A conflict *inside* a run frame cannot cut the frame (the entries before
the conflict, maybe acknowledged, would go with it): the frame stays whole, only the frames
after it are cut (durably), and the new entries' frame, which then starts at a lower index
than the one before it ends, overwrites: the scan drops what it had from that index on
(etcd's WAL reader does the same). Until that frame is synced a crash brings back the
run's old suffix: a log this node held before the conflict, whose entries past the
conflict the leader has declared uncommitted, and whose last term is older than any
leader's since, so it can neither be acknowledged again nor win an election it could not
have won before. The active segment is not sealed while such an overwrite is due.

Recovery (scan.py) scans segments in order (each one mapped, the pages behind the scan
released every few MiB) and decodes the records straight into compact columns (``core.columns.ColdEntries``),
never one ``Entry`` object per entry: ``load`` hands them over as an ``EntryColumns``
sequence that ``RaftLog`` adopts as its cold prefix, so a restart costs about what the
running node holds. It checks every frame's CRC, that its record decodes, that indexes run
on by one within and across segments (file names included). A damaged frame in the last
segment is a torn write from a crash only if no intact record follows it: then the tail is
cut off (``ftruncate`` + ``fdatasync``) and a warning names the file and offset. A damaged frame anywhere else, or one followed by an intact record, raises
``CorruptLogError`` with the file and offset: it is the disk, not a crash, and recovery
must not quietly drop synced entries. Nor may a "torn tail" reach back to an entry at or
below the durable hard state's commit index: ``sync`` makes the log durable before the hard
state, so such entries were synced and cutting them would be data loss, not repair. The search for a following intact record looks for
the entry tag byte (0xE1) and checks a frame just before each hit, so it runs at
``bytes.find`` speed. The price: a crash whose unsynced pages reach the disk out of order
(a hole, then a good record) is reported as corruption, not repaired.

``compact(i)`` unlinks whole segments whose entries are all ``<= i``, oldest first; the
first index of the log is the name of its first segment. When the active segment holds
entries ``<= i`` it is sealed first (a new active segment starts after the last entry), so
the next compaction can drop it: with periodic snapshots the log on disk stays bounded by
about two snapshot intervals, even though segments may be up to 64 MiB.

``reset(i)`` (a snapshot installed from the leader replaced the whole log) writes a small
``RESET`` intent file (temp file, fsync, rename, directory fsync) naming ``i``, unlinks
every segment, creates an empty one named ``i`` and removes the intent. Opening a directory
that still holds ``RESET`` finishes the interrupted reset first, so a crash never leaves a
mix of old segments and the new start.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from array import array
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field

from udpraft.core.columns import ColdEntries, EntryColumns
from udpraft.core.types import EMPTY_HARD_STATE, Entry, HardState
from udpraft.storage._fs import fdatasync, fsync_dir, lock_file, make_dirs
from udpraft.storage.base import (
    CorruptLogError,
    Pieces,
    StorageError,
    check_append,
    clamp_compact,
)
from udpraft.storage.codec import (
    ColumnDecoder,
    encode_batch,
    encode_frames,
)
from udpraft.storage.hardstate import HARD_STATE_NAME, HardStateFile
from udpraft.storage.scan import mapped, read_file, scan_segment

log = logging.getLogger(__name__)

SEGMENT_BYTES_MAX = 64 << 20
LOCK_NAME = "LOCK"
RESET_NAME = "RESET"
_SEGMENT_RE = re.compile(r"^wal-(\d{20})\.log$")
RUN_MIN_ENTRIES = 8  # a batch this long is written as run records (runs.py)


def segment_name(first_index: int) -> str:
    return f"wal-{first_index:020d}.log"


@dataclass(slots=True)
class _Segment:
    first_index: int
    path: str
    offsets: array[int]  # byte offset of each entry's frame
    size: int  # bytes written (may be unsynced in the last segment)
    runs: dict[int, int] = field(default_factory=dict)  # run frame offset -> last index in it

    @property
    def last_index(self) -> int:
        return self.first_index + len(self.offsets) - 1


class FileLogStore:
    """Segmented write-ahead log in ``dir_path`` (created if missing)."""

    def __init__(self, dir_path: str, *, segment_bytes_max: int = SEGMENT_BYTES_MAX,
                 run_min_entries: int = RUN_MIN_ENTRIES) -> None:
        if segment_bytes_max <= 0 or run_min_entries <= 0:
            raise ValueError("segment_bytes_max and run_min_entries must be positive")
        self._run_min = run_min_entries
        self._dir = os.path.abspath(dir_path)
        self._segment_bytes_max = segment_bytes_max
        make_dirs(self._dir)
        self._lock_fd = lock_file(os.path.join(self._dir, LOCK_NAME), f"log directory {self._dir}")
        self._fd = -1  # the active (last) segment, O_APPEND
        self._hs_file: HardStateFile | None = None
        self._closed = False
        self._failed: BaseException | None = None
        self._dirty = False  # bytes written to the active segment since its last fdatasync
        self._hs_pending: HardState | None = None
        self._hs = EMPTY_HARD_STATE
        self._segments: list[_Segment] = []
        self._recovered: EntryColumns | None = None  # handed out by the first load()
        try:
            self._open()
        except BaseException:
            self._release()
            raise

    # -- opening and recovery ------------------------------------------------------------

    def _segment_files(self) -> list[tuple[int, str]]:
        found = []
        for name in os.listdir(self._dir):
            m = _SEGMENT_RE.match(name)
            if m:
                found.append((int(m.group(1)), os.path.join(self._dir, name)))
        return sorted(found)

    def _open(self) -> None:
        hs_path = os.path.join(self._dir, HARD_STATE_NAME)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(hs_path + ".tmp")  # an interrupted creation; the rename never happened
        self._finish_interrupted_reset()
        files = self._segment_files()
        if files and not os.path.exists(hs_path):
            raise CorruptLogError(hs_path, 0, "hard state file missing while segments exist")
        self._hs_file = HardStateFile(hs_path)
        self._hs = self._hs_file.hard_state
        if not files:
            if self._hs.commit > 0:
                raise CorruptLogError(
                    hs_path, 0, f"hard state has commit {self._hs.commit} but no log segment exists"
                )
            path = os.path.join(self._dir, segment_name(1))
            self._segments = [_Segment(1, path, array("Q"), 0)]
            self._recovered = EntryColumns(ColdEntries(1))
            self._fd = self._open_segment(path, create=True)
            return
        self._segments, self._recovered = self._recover(files)
        self._fd = self._open_segment(self._segments[-1].path, create=False)

    def _recover(self, files: list[tuple[int, str]]) -> tuple[list[_Segment], EntryColumns]:
        segments: list[_Segment] = []
        decoder = ColumnDecoder(ColdEntries(files[0][0]))
        for i, (first, path) in enumerate(files):
            if first < 1:
                raise CorruptLogError(path, 0, "segment named for index 0")
            if segments and first != segments[-1].last_index + 1:
                raise CorruptLogError(
                    path,
                    0,
                    f"segment starts at index {first}, expected {segments[-1].last_index + 1}"
                    " (a segment is missing or stray)",
                )
            last = i == len(files) - 1
            with mapped(path) as (buf, release):
                scan = scan_segment(path, buf, first, allow_torn_tail=last, decoder=decoder,
                                    release=release)
            if scan.damage is not None:
                kept = first + len(scan.offsets) - 1
                if kept < self._hs.commit:
                    # sync() makes the log durable before the hard state, so entries up to a
                    # durable commit index were synced: losing them is not a torn write.
                    raise CorruptLogError(
                        path,
                        scan.end,
                        f"{scan.damage}; entries up to commit {self._hs.commit} were synced,"
                        f" but the log ends at {kept} here",
                    )
                log.warning(
                    "log file %s: torn write at byte offset %d (%s); truncating %d bytes"
                    " after entry %d",
                    path,
                    scan.end,
                    scan.damage,
                    os.path.getsize(path) - scan.end,
                    kept,
                )
                self._truncate_file(path, scan.end)
            segments.append(_Segment(first, path, scan.offsets, scan.end, scan.runs))
        return segments, EntryColumns(decoder.cols)

    @staticmethod
    def _truncate_file(path: str, size: int) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            fdatasync(fd)
        finally:
            os.close(fd)

    def _open_segment(self, path: str, *, create: bool) -> int:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC
        if create:
            flags |= os.O_CREAT | os.O_EXCL
        fd = os.open(path, flags, 0o644)
        if create:
            fsync_dir(self._dir)
        return fd

    # -- LogStore --------------------------------------------------------------------------

    def _check(self) -> None:
        if self._closed:
            raise StorageError(f"log store {self._dir} is closed")
        if self._failed is not None:
            raise StorageError(f"log store {self._dir} failed earlier: {self._failed!r}")

    def load(self) -> tuple[HardState, EntryColumns]:
        """The hard state and the log as compact columns (``EntryColumns``), not objects."""
        self._check()
        if self._recovered is not None:
            entries, self._recovered = self._recovered, None
            return self._hs, entries
        decoder = ColumnDecoder(ColdEntries(self.first_index()))
        for seg in self._segments:  # re-read what we wrote; any damage now is corruption
            with mapped(seg.path, seg.size) as (buf, release):
                scan = scan_segment(seg.path, buf, seg.first_index, allow_torn_tail=False,
                                    decoder=decoder, release=release)
            if len(scan.offsets) != len(seg.offsets):
                raise CorruptLogError(seg.path, scan.end, "segment shorter than written")
        return self._hs, EntryColumns(decoder.cols)

    def first_index(self) -> int:
        return self._segments[0].first_index

    def last_index(self) -> int:
        return self._segments[-1].last_index

    def append(self, entries: Sequence[Entry], pieces: Pieces | None = None) -> None:
        self._check()
        if not entries:
            return
        check_append(self.first_index(), self.last_index(), entries)
        self._recovered = None
        # Encode before any change: a bad entry changes nothing.
        if len(entries) >= self._run_min:
            buf, rel, runs = encode_batch(entries, pieces)
        else:
            (buf, rel), runs = encode_frames(entries), {}
        try:
            if entries[0].index <= self.last_index():
                self._truncate_from(entries[0].index)
            active = self._segments[-1]
            if active.size >= self._segment_bytes_max and active.offsets and not self._overwrite_due():
                self._roll()
                active = self._segments[-1]
            self._write_all(buf)
        except OSError as exc:
            # Crash-only: what is on disk no longer matches our offsets. Refuse further use.
            self._failed = exc
            raise StorageError(f"log store {self._dir}: write failed: {exc}") from exc
        base = active.size
        active.offsets.extend([base + r for r in rel])
        for r, last in runs.items():
            active.runs[base + r] = last
        active.size = base + len(buf)
        self._dirty = True

    def _write_all(self, buf: bytes) -> None:
        view = memoryview(buf)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]

    def _truncate_from(self, index: int) -> None:
        """Durably drop entries ``>= index`` (Raft §5.3 conflict), before new writes."""
        k = bisect_right([s.first_index for s in self._segments], index) - 1
        if k < len(self._segments) - 1:
            os.close(self._fd)
            self._fd = -1
            for seg in reversed(self._segments[k + 1 :]):  # newest first: a prefix remains
                os.unlink(seg.path)
                fsync_dir(self._dir)
            del self._segments[k + 1 :]
            self._fd = self._open_segment(self._segments[k].path, create=False)
        seg = self._segments[k]
        cut = index - seg.first_index
        off = seg.offsets[cut]
        prev = seg.offsets[cut - 1] if cut else -1
        if cut and seg.runs.get(prev, 0) >= index:
            # ``index`` lies inside the run frame holding ``index - 1`` (as written: an
            # earlier overwrite may have replaced part of it). Cutting the frame would lose
            # the entries before ``index``, so it stays whole on disk; only the frames after
            # it go, and the next frame written starts at ``index``: recovery lets it replace
            # the frame's suffix (scan_segment).
            off = next((o for o in seg.offsets[cut:] if o != prev), seg.size)
        os.ftruncate(self._fd, off)
        fdatasync(self._fd)
        del seg.offsets[cut:]
        for o in [o for o in seg.runs if o >= off]:
            del seg.runs[o]
        seg.size = off
        self._dirty = False

    def _overwrite_due(self) -> bool:
        """The active segment ends with a run frame that holds entries past the log's last
        index (a conflict cut inside it): the next frame must go into this segment, where
        recovery lets it replace them, so the segment may not be sealed before."""
        active = self._segments[-1]
        return bool(active.offsets) and active.runs.get(active.offsets[-1], 0) > active.last_index

    def _roll(self) -> None:
        """Seal the active segment (durably) and start the next one."""
        fdatasync(self._fd)
        self._dirty = False
        first = self.last_index() + 1
        path = os.path.join(self._dir, segment_name(first))
        fd = self._open_segment(path, create=True)
        os.close(self._fd)
        self._fd = fd
        self._segments.append(_Segment(first, path, array("Q"), 0))

    def set_hard_state(self, hs: HardState) -> None:
        self._check()
        if hs != self._hs:
            self._hs = hs
            self._hs_pending = hs

    def sync(self) -> None:
        self._check()
        try:
            # Log first: the hard state's commit must never point past the durable log.
            if self._dirty:
                fdatasync(self._fd)
                self._dirty = False
            if self._hs_pending is not None:
                assert self._hs_file is not None
                self._hs_file.write(self._hs_pending)
                self._hs_pending = None
        except OSError as exc:
            # A failed fsync must not be retried as if nothing happened (pages may be lost).
            self._failed = exc
            raise StorageError(f"log store {self._dir}: sync failed: {exc}") from exc

    def compact(self, upto_index: int) -> None:
        self._check()
        upto = clamp_compact(self.first_index(), self.last_index(), upto_index)
        if upto < self.first_index():
            return
        self._recovered = None
        try:
            active = self._segments[-1]
            if active.offsets and active.first_index <= upto and not self._overwrite_due():
                # Seal it so a later compaction can drop it whole (and, when everything
                # goes, an empty active segment carries the first index).
                self._roll()
            while len(self._segments) > 1 and self._segments[0].last_index <= upto:
                os.unlink(self._segments[0].path)  # oldest first: a suffix remains
                fsync_dir(self._dir)
                del self._segments[0]
        except OSError as exc:
            self._failed = exc
            raise StorageError(f"log store {self._dir}: compaction failed: {exc}") from exc

    # -- reset (a snapshot replaced the whole log) -----------------------------------------

    def reset(self, first_index: int) -> None:
        self._check()
        if first_index < 1:
            raise ValueError(f"reset to first index {first_index} < 1")
        self._recovered = None
        marker = os.path.join(self._dir, RESET_NAME)
        try:
            tmp = marker + ".tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                os.write(fd, f"{first_index}\n".encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, marker)
            fsync_dir(self._dir)
            self._reset_segments(first_index)
            os.unlink(marker)
            fsync_dir(self._dir)
        except OSError as exc:
            self._failed = exc
            raise StorageError(f"log store {self._dir}: reset failed: {exc}") from exc

    def _reset_segments(self, first_index: int) -> None:
        """Unlink every segment (newest first), then start an empty one at ``first_index``."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        for _first, path in reversed(self._segment_files()):
            os.unlink(path)
        fsync_dir(self._dir)
        path = os.path.join(self._dir, segment_name(first_index))
        self._fd = self._open_segment(path, create=True)
        self._segments = [_Segment(first_index, path, array("Q"), 0)]
        self._dirty = False

    def _finish_interrupted_reset(self) -> None:
        marker = os.path.join(self._dir, RESET_NAME)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(marker + ".tmp")  # the intent was never recorded: nothing happened
        try:
            text = read_file(marker)
        except FileNotFoundError:
            return
        try:
            first_index = int(text.decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            raise CorruptLogError(marker, 0, f"unreadable reset intent {text[:40]!r}") from None
        if first_index < 1:
            raise CorruptLogError(marker, 0, f"reset intent names index {first_index}")
        log.warning("log %s: finishing an interrupted reset to index %d", self._dir, first_index)
        self._reset_segments(first_index)
        os.close(self._fd)
        self._fd = -1
        os.unlink(marker)
        fsync_dir(self._dir)

    def close(self) -> None:
        if self._closed:
            return
        try:
            if self._failed is None:
                self.sync()
        finally:
            self._closed = True
            self._release()

    def _release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._hs_file is not None:
            self._hs_file.close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    # -- introspection for tools and tests ---------------------------------------------------

    @property
    def dir_path(self) -> str:
        return self._dir

    def segment_paths(self) -> list[str]:
        return [s.path for s in self._segments]

    def entry_offset(self, index: int) -> tuple[str, int]:
        """The segment file and byte offset of entry ``index``'s frame."""
        if not self.first_index() <= index <= self.last_index():
            raise IndexError(f"entry {index} not in {self.first_index()}..{self.last_index()}")
        k = bisect_right([s.first_index for s in self._segments], index) - 1
        seg = self._segments[k]
        return seg.path, seg.offsets[index - seg.first_index]
