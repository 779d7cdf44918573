"""Reading WAL segments back (FileLogStore's recovery): every frame checked, entries
decoded straight into columns, and the torn-tail rules of file.py's module comment.

``scan_segment`` walks a segment's frames: the codec's fast path takes runs of intact
entry frames; a run record, an overwrite (a frame starting below the index the scan has
reached, see file.py), a new client id or damage get the careful look here. ``mapped``
maps a segment read-only and lets go of the pages behind the scan every few MiB.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from udpraft.core.columns import ColdEntries
from udpraft.storage.base import CorruptLogError
from udpraft.storage.codec import (
    ENTRY_HEADER_SIZE,
    ENTRY_TAG,
    FRAME_HEADER_SIZE,
    Buf,
    CodecError,
    ColumnDecoder,
    check_frame,
    entry_index_at,
)
from udpraft.storage.runs import RUN_HEADER_SIZE, RUN_TAG

_TAGS = (bytes([ENTRY_TAG]), bytes([RUN_TAG]))


@dataclass(slots=True)
class _Scan:
    entries: ColdEntries  # every segment scanned so far, this one's entries last
    offsets: array[int]
    end: int  # offset just past the last good frame
    damage: str | None  # why the scan stopped early (torn tail), else None
    runs: dict[int, int] = field(default_factory=dict)  # run frame offset -> its last index


def _find_intact_record(buf: Buf, after: int, min_index: int) -> int | None:
    """Offset of an intact entry or run frame starting after ``after`` with index >=
    min_index."""
    for tag, min_payload in zip(_TAGS, (ENTRY_HEADER_SIZE, RUN_HEADER_SIZE), strict=True):
        i = buf.find(tag, after + 1 + FRAME_HEADER_SIZE)
        while i != -1:
            cand = i - FRAME_HEADER_SIZE
            try:
                check_frame(buf, cand, min_payload)
            except CodecError:
                pass
            else:
                if entry_index_at(buf, i) >= min_index:
                    return cand
            i = buf.find(tag, i + 1)
    return None


_WINDOW = 4 << 20  # a scan lets go of the mapped pages behind it every this many bytes
_DONTNEED: int | None = getattr(mmap, "MADV_DONTNEED", None)  # Linux, most Unixes


def scan_segment(
    path: str, buf: Buf, first_index: int, allow_torn_tail: bool,
    decoder: ColumnDecoder | None = None, release: Callable[[int], None] | None = None,
) -> _Scan:
    """Check every frame of one segment and append its entries to ``decoder``'s columns
    (fresh ones from ``first_index`` when None); see the module comment for the damage
    rules. On a torn tail the columns end with the last intact entry. ``release(pos)`` is
    told, every few MiB, that the bytes before ``pos`` are done with."""
    if decoder is None:
        decoder = ColumnDecoder(ColdEntries(first_index))
    offsets: array[int] = array("Q")
    runs: dict[int, int] = {}
    expected = first_index
    pos = 0
    n = len(buf)
    while pos < n:
        stop = min(n, pos + _WINDOW)
        pos, expected = decoder.decode_run(buf, pos, stop, expected, offsets)
        if release is not None:
            release(pos)
        if pos >= stop:
            continue
        # The fast path stopped short of ``stop``: this frame needs the careful look (a run
        # record, an overwrite, a new client id, or damage).
        try:
            end = check_frame(buf, pos, RUN_HEADER_SIZE)
        except CodecError as exc:
            if not allow_torn_tail:
                raise CorruptLogError(path, pos, exc.reason) from None
            intact = _find_intact_record(buf, pos, expected)
            if intact is not None:
                raise CorruptLogError(
                    path, pos, f"{exc.reason}, yet an intact record follows at offset {intact}"
                ) from None
            return _Scan(decoder.cols, offsets, pos, exc.reason, runs)
        start = pos + FRAME_HEADER_SIZE
        index = entry_index_at(buf, start)
        if first_index <= index < expected:
            # Overwrite: a conflict cut fell inside a run frame, which was kept whole; this
            # later frame replaces the entries from ``index`` on (see FileLogStore). The
            # store writes nothing else that goes back: entry ``index`` must lie in a run.
            if runs.get(offsets[index - first_index], 0) < index:
                raise CorruptLogError(
                    path, pos, f"record for index {index} goes back over entries outside a"
                    f" run frame (expected {expected})"
                )
            decoder.cols.truncate(index)
            del offsets[index - first_index :]
            expected = index
        try:
            if buf[start] == RUN_TAG:
                count = decoder.decode_run_record(buf, start, end, expected)
                runs[pos] = expected + count - 1
            else:
                decoder.decode_into(buf, start, end, expected)
                count = 1
        except CodecError as exc:  # the CRC matched, so this was written like this
            raise CorruptLogError(path, pos, exc.reason) from None
        offsets.extend([pos] * count)
        expected += count
        pos = end
    return _Scan(decoder.cols, offsets, pos, None, runs)


def read_file(path: str, size: int | None = None) -> bytes:
    with open(path, "rb") as f:
        return f.read() if size is None else f.read(size)


@contextlib.contextmanager
def mapped(path: str, size: int | None = None) -> Iterator[tuple[Buf, Callable[[int], None]]]:
    """The segment file (its first ``size`` bytes) mapped read-only, and a ``release(pos)``
    that drops the pages before ``pos`` from this process: a scan then holds a few MiB of
    the file at a time, not the whole segment."""
    with open(path, "rb") as f:
        if size is None:
            size = os.fstat(f.fileno()).st_size
        if size == 0:
            yield b"", lambda pos: None
            return
        try:
            mm = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ)
        except ValueError:  # the file is shorter than ``size``
            yield read_file(path, size), lambda pos: None
            return
    done = 0

    def release(pos: int) -> None:
        nonlocal done
        upto = pos - pos % mmap.PAGESIZE
        if upto > done and _DONTNEED is not None:
            mm.madvise(_DONTNEED, done, upto - done)
            done = upto

    try:
        yield mm, release
    finally:
        mm.close()
