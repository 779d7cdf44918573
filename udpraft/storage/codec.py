"""Binary encodings shared by every storage backend: entries, hard state, WAL frames.

How this works: an entry is one compact record, a fixed little-endian header followed by
the two variable parts:

    tag u8 (0xE1) | index u64 | term u64 | kind u8 | seq u64 | ts_ms u64
    | client_id_len u16 | data_len u32 | client_id (UTF-8) | data

Both lengths sit in the fixed header so a decode is one ``unpack_from`` and two slices.
The tag byte versions the format and, having its high bit set, is a cheap anchor when the
WAL scanner looks for intact records behind a damaged one (see file.py). The hard state is
``tag u8 (0xB1) | term u64 | commit u64 | vote_len u16 | vote (UTF-8)``.

A WAL frame wraps one payload: ``length u32 | crc32c(payload) u32 | payload``. A batch is
encoded into one ``bytes`` so the file backend can hand it to a single ``os.write``.

Recovery reads many records at once: ``ColumnDecoder`` checks them and appends their fields
straight to ``core.columns.ColdEntries`` columns, with no ``Entry`` object per record; its
``decode_run`` is the fast path (both headers in one unpack, the CRC in C) and leaves any
record it does not like to ``check_frame`` and ``decode_into``, which say what is wrong.

Decoders raise ``CodecError`` (a ``ValueError``) with a short reason; the caller knows the
file and offset and turns it into a ``CorruptLogError``. Encoders raise ``ValueError`` for
values that do not fit the format (negative numbers, a client id over 65,535 bytes, ...).
"""

from __future__ import annotations

import mmap
import struct
from array import array
from collections.abc import Sequence
from itertools import accumulate, repeat

from udpraft.core.columns import ColdEntries
from udpraft.core.types import Entry, EntryKind, HardState
from udpraft.storage.base import Pieces
from udpraft.storage.crc32c import crc32c, crc32c_bytes
from udpraft.storage.runs import decode_run, encode_runs

_crc_value = crc32c_bytes

ENTRY_TAG = 0xE1
HARD_STATE_TAG = 0xB1
PAYLOAD_BYTES_MAX = 64 << 20  # one record; far above a UDP-carried entry (< 64 KiB)
CLIENT_ID_BYTES_MAX = 0xFFFF  # u16 length

_ENTRY_HDR = struct.Struct("<BQQBQQHI")
ENTRY_HEADER_SIZE = _ENTRY_HDR.size  # 40
_HS_HDR = struct.Struct("<BQQH")
_FRAME = struct.Struct("<II")
FRAME_HEADER_SIZE = _FRAME.size  # 8
_FRAME_ENTRY = struct.Struct("<II" + _ENTRY_HDR.format[1:])  # both headers, one unpack
_FRAME_ENTRY_SIZE = _FRAME_ENTRY.size  # 48
_TAG_INDEX = struct.Struct("<BQ")  # where entry and run records keep their (first) index

Buf = bytes | mmap.mmap  # what scans read: a segment's bytes, or the segment file mapped
_KINDS = {k.value: k for k in EntryKind}
_KIND_CODES = frozenset(_KINDS)


class CodecError(ValueError):
    """Bytes that do not decode; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def encode_entry(e: Entry) -> bytes:
    cid = e.client_id.encode("utf-8")
    try:
        hdr = _ENTRY_HDR.pack(
            ENTRY_TAG, e.index, e.term, e.kind, e.seq, e.ts_ms, len(cid), len(e.data)
        )
    except struct.error as exc:
        raise ValueError(f"entry {e.index} does not fit the log format: {exc}") from None
    if len(e.data) + len(cid) + ENTRY_HEADER_SIZE > PAYLOAD_BYTES_MAX:
        raise ValueError(f"entry {e.index} is larger than {PAYLOAD_BYTES_MAX} bytes")
    return hdr + cid + e.data


def decode_entry(buf: bytes, start: int = 0, end: int | None = None) -> Entry:
    """Decode the entry occupying exactly ``buf[start:end]``."""
    if end is None:
        end = len(buf)
    if end - start < ENTRY_HEADER_SIZE:
        raise CodecError(f"entry record of {end - start} bytes is shorter than its header")
    tag, index, term, kind, seq, ts_ms, cid_len, data_len = _ENTRY_HDR.unpack_from(buf, start)
    if tag != ENTRY_TAG:
        raise CodecError(f"unknown record tag 0x{tag:02x}")
    if ENTRY_HEADER_SIZE + cid_len + data_len != end - start:
        raise CodecError("entry lengths do not match the record size")
    kind_enum = _KINDS.get(kind)
    if kind_enum is None:
        raise CodecError(f"unknown entry kind {kind}")
    p = start + ENTRY_HEADER_SIZE
    try:
        client_id = buf[p : p + cid_len].decode("utf-8")
    except UnicodeDecodeError:
        raise CodecError("client id is not UTF-8") from None
    p += cid_len
    return Entry(index, term, buf[p : p + data_len], kind_enum, client_id, seq, ts_ms)


def entry_index_at(buf: Buf, start: int) -> int:
    """The index field of an entry or run record starting at ``start`` (no validation)."""
    return int(_TAG_INDEX.unpack_from(buf, start)[1])


def encode_hard_state(hs: HardState) -> bytes:
    vote = hs.vote.encode("utf-8")
    try:
        return _HS_HDR.pack(HARD_STATE_TAG, hs.term, hs.commit, len(vote)) + vote
    except struct.error as exc:
        raise ValueError(f"hard state does not fit the format: {exc}") from None


def decode_hard_state(buf: bytes) -> HardState:
    if len(buf) < _HS_HDR.size:
        raise CodecError("hard state record is shorter than its header")
    tag, term, commit, vote_len = _HS_HDR.unpack_from(buf, 0)
    if tag != HARD_STATE_TAG:
        raise CodecError(f"unknown hard state tag 0x{tag:02x}")
    if _HS_HDR.size + vote_len != len(buf):
        raise CodecError("hard state vote length does not match the record size")
    try:
        vote = buf[_HS_HDR.size :].decode("utf-8")
    except UnicodeDecodeError:
        raise CodecError("vote is not UTF-8") from None
    return HardState(term=term, vote=vote, commit=commit)


def frame(payload: bytes) -> bytes:
    """``length | crc32c | payload``."""
    return _FRAME.pack(len(payload), crc32c(payload)) + payload


def encode_frames(entries: Sequence[Entry]) -> tuple[bytes, list[int]]:
    """One buffer holding a frame per entry, and each frame's offset inside it.

    The hot path of every write: one loop with everything bound locally, client ids encoded
    once per distinct id, the CRC function called directly. Anything that does not fit the
    format (a struct error, an oversize record) re-runs through ``encode_entry`` for the
    same ``ValueError`` it gives.
    """
    parts: list[bytes] = []
    offsets: list[int] = []
    pos = 0
    pack = _FRAME.pack
    hdr = _ENTRY_HDR.pack
    crc = _crc_value
    cids: dict[str, bytes] = {"": b""}
    append = parts.append
    add_offset = offsets.append
    try:
        for e in entries:
            cid_s = e.client_id
            cid = cids.get(cid_s)
            if cid is None:
                cid = cids[cid_s] = cid_s.encode("utf-8")
            data = e.data
            payload = (
                hdr(ENTRY_TAG, e.index, e.term, e.kind, e.seq, e.ts_ms, len(cid), len(data))
                + cid + data
            )
            n = len(payload)
            if n > PAYLOAD_BYTES_MAX:
                raise ValueError
            append(pack(n, crc(payload)))
            append(payload)
            add_offset(pos)
            pos += FRAME_HEADER_SIZE + n
    except (struct.error, ValueError, TypeError):
        for e in entries:
            encode_entry(e)  # raises the precise error
        raise
    return b"".join(parts), offsets


def encode_batch(entries: Sequence[Entry], pieces: Pieces | None = None
                 ) -> tuple[bytes, list[int], dict[int, int]]:
    """``encode_frames`` with run records (runs.py): one buffer, each entry's frame offset
    (entries of a run share their frame's) and, per run frame, the last index it holds.
    ``pieces``: the entries' column form (``encode_runs``)."""
    parts: list[bytes] = []
    offsets: list[int] = []
    runs: dict[int, int] = {}
    pos = 0
    try:
        runs_encoded = encode_runs(entries, pieces)
    except (struct.error, ValueError, TypeError, OverflowError):
        for e in entries:
            encode_entry(e)  # raises the precise error
        raise
    for run, payload in runs_encoded:
        if len(payload) > PAYLOAD_BYTES_MAX:
            raise ValueError(f"entry {run[0].index} is larger than {PAYLOAD_BYTES_MAX} bytes")
        parts.append(_FRAME.pack(len(payload), _crc_value(payload)))
        parts.append(payload)
        offsets.extend([pos] * len(run))
        runs[pos] = run[-1].index
        pos += FRAME_HEADER_SIZE + len(payload)
    return b"".join(parts), offsets, runs


class ColumnDecoder:
    """Decode a scan's entry records straight into ``ColdEntries`` columns (recovery): no
    ``Entry`` object per record, and equal client ids decode to one shared ``str``."""

    __slots__ = ("_cids", "cols")

    def __init__(self, cols: ColdEntries) -> None:
        self.cols = cols
        self._cids: dict[bytes, str] = {b"": ""}

    def decode_into(self, buf: Buf, start: int, end: int, expected: int) -> None:
        """Check the record ``buf[start:end]`` holds entry ``expected``, then append it."""
        if end - start < ENTRY_HEADER_SIZE:
            raise CodecError(f"entry record of {end - start} bytes is shorter than its header")
        tag, index, term, kind, seq, ts_ms, cid_len, data_len = _ENTRY_HDR.unpack_from(
            buf, start
        )
        if tag != ENTRY_TAG:
            raise CodecError(f"unknown record tag 0x{tag:02x}")
        if ENTRY_HEADER_SIZE + cid_len + data_len != end - start:
            raise CodecError("entry lengths do not match the record size")
        if kind not in _KINDS:
            raise CodecError(f"unknown entry kind {kind}")
        if index != expected:
            raise CodecError(f"entry index {index}, expected {expected}")
        p = start + ENTRY_HEADER_SIZE
        q = p + cid_len
        raw = buf[p:q]
        client_id = self._cids.get(raw)
        if client_id is None:
            client_id = self._new_cid(raw)
        self.cols.append(term, kind, client_id, seq, ts_ms, buf[q:end])

    def _new_cid(self, raw: bytes) -> str:
        """Decode a client id not seen yet; remember it (up to 65,536 distinct ids)."""
        try:
            cid = self.cols.intern(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise CodecError("client id is not UTF-8") from None
        if len(self._cids) < 65_536:
            self._cids[raw] = cid
        return cid

    def decode_run_record(self, buf: Buf, start: int, end: int, expected: int) -> int:
        """Check the run record ``buf[start:end]`` starts at entry ``expected``, append its
        entries; returns how many."""
        try:
            r = decode_run(buf, start, end, _KIND_CODES)
        except ValueError as exc:
            raise CodecError(str(exc)) from None
        if r.first != expected:
            raise CodecError(f"run starts at index {r.first}, expected {expected}")
        cols = self.cols
        n = r.count
        if any(r.cid_lens):
            cids: list[str] = []
            p = 0
            table = self._cids
            blob = r.cid_blob
            for k in r.cid_lens:
                raw = blob[p : p + k]
                p += k
                cid = table.get(raw)
                cids.append(self._new_cid(raw) if cid is None else cid)
            cols.cids.extend(cids)
        else:
            cols.cids.extend(repeat("", n))
        cols.terms.extend(r.terms)
        cols.kinds += r.kinds
        cols.seqs.extend(r.seqs)
        cols.ts.extend(r.ts)
        ends = accumulate(r.data_lens, initial=len(cols.data))
        next(ends)  # the ``initial`` value: where this run starts
        cols.ends.extend(ends)
        cols.data += r.data
        return n

    def decode_run(
        self, buf: Buf, pos: int, stop: int, expected: int, offsets: array[int]
    ) -> tuple[int, int]:
        """The fast path of a scan: append the frames from ``pos`` on (recording each
        frame's offset) while each is intact, holds entry ``expected`` and a client id seen
        before, until ``stop`` is reached. Returns the ``(pos, expected)`` it got to: any
        frame it leaves is for ``check_frame`` and ``decode_into``, which say what is wrong
        (or take it, when only its client id was new)."""
        unpack = _FRAME_ENTRY.unpack_from
        crc = _crc_value
        cids = self._cids
        kinds = _KINDS
        cols = self.cols
        t_add, k_add, s_add, ts_add, c_add = (
            cols.terms.append, cols.kinds.append, cols.seqs.append, cols.ts.append,
            cols.cids.append,
        )
        data = cols.data
        e_add = cols.ends.append
        o_add = offsets.append
        n = len(buf)
        while pos < stop and pos + _FRAME_ENTRY_SIZE <= n:
            length, c, tag, index, term, kind, seq, ts, clen, dlen = unpack(buf, pos)
            end = pos + FRAME_HEADER_SIZE + length
            if (
                tag != ENTRY_TAG or index != expected or length != ENTRY_HEADER_SIZE + clen + dlen
                or end > n or length > PAYLOAD_BYTES_MAX or kind not in kinds
            ):
                break
            p = pos + _FRAME_ENTRY_SIZE
            q = p + clen
            cid = cids.get(buf[p:q]) if clen else ""
            if cid is None or crc(buf[pos + FRAME_HEADER_SIZE : end]) != c:
                break
            t_add(term)
            k_add(kind)
            s_add(seq)
            ts_add(ts)
            c_add(cid)
            data += buf[q:end]
            e_add(len(data))
            o_add(pos)
            expected += 1
            pos = end
        return pos, expected


def check_frame(buf: Buf, pos: int, min_payload: int = 1) -> int:
    """Validate the frame at ``pos``; return the offset just past it.

    Raises ``CodecError`` if the header is cut off, the length is out of bounds or runs
    past the end of ``buf``, or the CRC does not match.
    """
    n = len(buf)
    if n - pos < FRAME_HEADER_SIZE:
        raise CodecError(f"frame header cut off ({n - pos} of {FRAME_HEADER_SIZE} bytes)")
    length, crc = _FRAME.unpack_from(buf, pos)
    if length < min_payload or length > PAYLOAD_BYTES_MAX:
        raise CodecError(f"frame length {length} out of bounds")
    start = pos + FRAME_HEADER_SIZE
    end: int = start + length
    if end > n:
        raise CodecError(f"frame of {length} bytes cut off at {n - start}")
    if crc32c(memoryview(buf)[start:end]) != crc:
        raise CodecError("crc mismatch")
    return end
