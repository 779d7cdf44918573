"""What every message body codec shares: bounds, ``BodyError`` and the strict field checks.

How this works: decoders (bodies.py, append.py) validate every field with these helpers and
raise ``BodyError`` (never anything else) on bad input; encoders raise ``EncodeError``.
``_SETTERS`` are Entry's slot setters, for building entries without the frozen dataclass
``__init__`` (None if Entry's shape ever changes: the constructor is used then).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from udpraft.core.columns import _SLOT_SETTERS
from udpraft.core.types import Entry, EntryKind
from udpraft.wire.envelope import MAX_U63, DropReason, EncodeError
from udpraft.wire.messages import SnapshotStatus

MAX_CLIENT_ID_CHARS = 128
MAX_STR_CHARS = 64  # string fields of Raft messages, leader hints
MAX_HOST_CHARS = 255
MAX_BLOBS = 65_536
MAX_ACK_RANGES = 1024
MAX_FRAGMENTS = 65_535
MAX_FRAGMENT_TOTAL = 1 << 31
MAX_CHECKSUM_CHARS = 64
MAX_BATCH_MESSAGES = 4096  # requests in a ClientBatch, responses in a ClientResponses
_SNAPSHOT_STATUS = {int(v): v for v in SnapshotStatus}


class BodyError(Exception):
    """A body failed validation; :func:`udpraft.wire.decode` turns it into a drop."""

    def __init__(self, reason: DropReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


# ---------------------------------------------------------------------------- validation


def _int(v: Any, what: str) -> int:
    if type(v) is not int or not 0 <= v < MAX_U63:
        raise BodyError(DropReason.BAD_FIELD, what)
    return v


def _str(v: Any, limit: int, what: str) -> str:
    if type(v) is not str or len(v) > limit:
        raise BodyError(DropReason.BAD_FIELD, what)
    return v


def _bool(v: Any, what: str) -> bool:
    if type(v) is not bool:
        raise BodyError(DropReason.BAD_FIELD, what)
    return v


def _shape(h: Any, n: int, what: str) -> list[Any]:
    if type(h) is not list or len(h) != n:
        raise BodyError(DropReason.BAD_BODY, what)
    return h


def _split_blobs(lens: Any, blob: bytes, what: str) -> tuple[bytes, ...]:
    if type(lens) is not list or len(lens) > MAX_BLOBS:
        raise BodyError(DropReason.BAD_BODY, what + ".blobs")
    out = []
    pos = 0
    for n in lens:
        if type(n) is not int or n < 0:
            raise BodyError(DropReason.BAD_FIELD, what + ".blob_len")
        end = pos + n
        out.append(blob[pos:end])
        pos = end
    if pos != len(blob):
        raise BodyError(DropReason.BAD_FIELD, what + ".blob_total")
    return tuple(out)


def _take_blobs(lens: Any, blob: bytes, pos: int, what: str) -> tuple[tuple[bytes, ...], int]:
    """The blobs ``lens`` names, read from ``blob`` at ``pos``; (blobs, position after)."""
    if type(lens) is not list or len(lens) > MAX_BLOBS:
        raise BodyError(DropReason.BAD_BODY, what + ".blobs")
    out = []
    for n in lens:
        if type(n) is not int or n < 0:
            raise BodyError(DropReason.BAD_FIELD, what + ".blob_len")
        end = pos + n
        if end > len(blob):
            raise BodyError(DropReason.BAD_FIELD, what + ".blob_total")
        out.append(blob[pos:end])
        pos = end
    return tuple(out), pos


def _body_dict(v: Any, what: str) -> dict[str, Any]:
    if type(v) is not dict:
        raise BodyError(DropReason.BAD_FIELD, what)
    return v


def _blob_parts(blobs: Sequence[bytes], what: str) -> list[bytes]:
    parts = list(blobs)
    for b in parts:
        if type(b) is not bytes:
            raise EncodeError(f"{what}: blobs must be bytes")
    return parts


def _dumps(obj: Any, what: str) -> bytes:
    try:
        return orjson.dumps(obj)
    except TypeError as exc:  # orjson.JSONEncodeError: not JSON-able, int beyond 64 bits
        raise EncodeError(f"{what}: {exc}") from exc


# ------------------------------------------------------------------------- entries


# Entry's slot setters (core/columns.py), or None if Entry's shape ever changes.
_SETTERS = _SLOT_SETTERS


def _no_setter(obj: Entry, value: Any) -> None:  # placeholder when _SETTERS is None
    raise AssertionError("unreachable")


_KINDS: dict[Any, EntryKind] = {int(k): k for k in EntryKind}
