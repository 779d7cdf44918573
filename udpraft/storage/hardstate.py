"""The file backend's hard state: two alternating slots, one fdatasync per update.

How this works: ``hardstate.bin`` holds two slots, 4 KiB apart so each lives in its own
page and sector. A slot is

    magic "UHS1" | seq u64 | crc32c(seq + payload) u32 | payload_len u16 | payload

with the payload from ``codec.encode_hard_state``. Update number ``seq`` goes to slot
``seq % 2``, so a write never touches the slot holding the newest durable state: if the
machine dies mid-write, the torn slot fails its CRC and recovery uses the other one (the
previous state, which is all that was promised durable). Recovery picks the valid slot with
the highest seq. Compared with "temp file, fsync, rename, fsync directory" this costs one
``fdatasync`` instead of two fsyncs plus a rename, and the hard state changes on many
Readies (the commit index moves with every batch).

The file is born whole: slot 0 with the empty hard state is written to a temp file, fsynced
and renamed into place, and the directory is fsynced. So a slot is always valid unless the
disk itself rotted, and then ``CorruptLogError`` says so rather than forgetting a vote.
"""

from __future__ import annotations

import logging
import os
import struct

from udpraft.core.types import EMPTY_HARD_STATE, HardState
from udpraft.storage._fs import fdatasync, fsync_dir
from udpraft.storage.base import CorruptLogError, StorageError
from udpraft.storage.codec import CodecError, decode_hard_state, encode_hard_state
from udpraft.storage.crc32c import crc32c

log = logging.getLogger(__name__)

HARD_STATE_NAME = "hardstate.bin"
_MAGIC = b"UHS1"
_SLOT_HDR = struct.Struct("<4sQIH")  # magic, seq, crc, payload_len
SLOT_BYTES = 512  # what one slot may use: one sector
SLOT_STRIDE = 4096  # where slots start: a page apart
_SEQ = struct.Struct("<Q")


def _encode_slot(seq: int, hs: HardState) -> bytes:
    payload = encode_hard_state(hs)
    if _SLOT_HDR.size + len(payload) > SLOT_BYTES:
        raise ValueError(f"hard state vote {hs.vote!r} is too long for a {SLOT_BYTES}-byte slot")
    crc = crc32c(_SEQ.pack(seq) + payload)
    return _SLOT_HDR.pack(_MAGIC, seq, crc, len(payload)) + payload


def _decode_slot(raw: bytes) -> tuple[int, HardState] | str | None:
    """``(seq, hs)`` for a valid slot, ``None`` for a never-written one, else a reason."""
    if not raw.strip(b"\0"):
        return None
    if len(raw) < _SLOT_HDR.size:
        return "slot cut off"
    magic, seq, crc, length = _SLOT_HDR.unpack_from(raw, 0)
    if magic != _MAGIC:
        return "bad magic"
    payload = raw[_SLOT_HDR.size : _SLOT_HDR.size + length]
    if len(payload) != length or crc32c(_SEQ.pack(seq) + payload) != crc:
        return "crc mismatch"
    try:
        return seq, decode_hard_state(payload)
    except CodecError as exc:
        return exc.reason


class HardStateFile:
    """Read on open, then ``write`` (durable on return) as often as needed."""

    def __init__(self, path: str) -> None:
        self.path = path
        if not os.path.exists(path):
            self._create(path)
        self._fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            self._seq, self.hard_state = self._recover()
        except BaseException:
            os.close(self._fd)
            raise

    @staticmethod
    def _create(path: str) -> None:
        tmp = path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, _encode_slot(0, EMPTY_HARD_STATE))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        fsync_dir(os.path.dirname(path))

    def _recover(self) -> tuple[int, HardState]:
        best: tuple[int, HardState] | None = None
        damaged: list[tuple[int, str]] = []
        for slot in (0, 1):
            got = _decode_slot(os.pread(self._fd, SLOT_BYTES, slot * SLOT_STRIDE))
            if isinstance(got, str):
                damaged.append((slot * SLOT_STRIDE, got))
            elif got is not None and (best is None or got[0] > best[0]):
                best = got
        if best is None:
            offset, reason = damaged[0] if damaged else (0, "no hard state slot written")
            raise CorruptLogError(self.path, offset, f"no valid hard state slot: {reason}")
        for offset, reason in damaged:
            # The torn half of an interrupted update; the other slot is the last durable one.
            log.warning(
                "hard state file %s: slot at offset %d unreadable (%s); using seq %d",
                self.path,
                offset,
                reason,
                best[0],
            )
        return best

    def write(self, hs: HardState) -> None:
        """Store ``hs`` durably: one pwrite into the older slot, one fdatasync."""
        if self._fd < 0:
            raise StorageError(f"hard state file {self.path} is closed")
        seq = self._seq + 1
        os.pwrite(self._fd, _encode_slot(seq, hs), (seq % 2) * SLOT_STRIDE)
        fdatasync(self._fd)
        self._seq = seq
        self.hard_state = hs

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
