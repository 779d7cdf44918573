"""The KV store's vocabulary: records, requests, and their compact log encoding.

How this works: etcd keys and values are byte strings. Here they are kept as ``str`` whose
code points are all below 256 (``bytes.decode("latin-1")``): such strings compare exactly as
the bytes do, orjson encodes them without a base64 detour, and they come back from the log as
``str`` with no conversion. ``b2s``/``s2b`` cross the boundary at the HTTP face.

A record (``KV``) is a plain tuple ``(key, create_revision, mod_revision, version, value,
lease)``; a deletion leaves a tombstone with version 0. Requests are NamedTuples mirroring
etcd's protobuf messages; ``encode_command``/``decode_command`` turn them into short orjson
lists, which is what goes into the Raft log. A range end is normalised once at parse time:
``None`` means "just the key", ``""`` means "every key from key on" (etcd's ``"\\0"``).
"""

from __future__ import annotations

from typing import Any, NamedTuple, TypeAlias

import orjson

KV: TypeAlias = tuple[str, int, int, int, str, int]
K_KEY, K_CREATE, K_MOD, K_VER, K_VAL, K_LEASE = range(6)

# enums of etcdserverpb (numbers as on the wire)
SORT_NONE, SORT_ASCEND, SORT_DESCEND = 0, 1, 2
TARGET_KEY, TARGET_VERSION, TARGET_CREATE, TARGET_MOD, TARGET_VALUE = 0, 1, 2, 3, 4
CMP_EQUAL, CMP_GREATER, CMP_LESS, CMP_NOT_EQUAL = 0, 1, 2, 3
CT_VERSION, CT_CREATE, CT_MOD, CT_VALUE, CT_LEASE = 0, 1, 2, 3, 4
FILTER_NOPUT, FILTER_NODELETE = 0, 1


def b2s(b: bytes) -> str:
    return b.decode("latin-1")


def s2b(s: str) -> bytes:
    return s.encode("latin-1")


class RangeReq(NamedTuple):
    key: str
    end: str | None
    limit: int = 0
    revision: int = 0
    sort_order: int = 0
    sort_target: int = 0
    keys_only: bool = False
    count_only: bool = False
    min_mod: int = 0
    max_mod: int = 0
    min_create: int = 0
    max_create: int = 0
    serializable: bool = False


class PutReq(NamedTuple):
    key: str
    value: str
    lease: int = 0
    prev_kv: bool = False
    ignore_value: bool = False
    ignore_lease: bool = False


class DeleteReq(NamedTuple):
    key: str
    end: str | None
    prev_kv: bool = False


class Compare(NamedTuple):
    target: int
    result: int
    key: str
    end: str | None
    union: int  # which oneof field was given: a CT_* value, or -1 for none
    value: int | str  # int for version/create/mod/lease, str for value


class TxnReq(NamedTuple):
    compares: list[Compare]
    success: list[Op]
    failure: list[Op]


Op: TypeAlias = RangeReq | PutReq | DeleteReq | TxnReq


class CompactReq(NamedTuple):
    revision: int
    physical: bool = False


class LeaseGrantReq(NamedTuple):
    id: int
    ttl: int


# ------------------------------------------------------------------ log commands
# A command is a JSON list whose first element names it:
#   ["P", key, value, lease, flags]             put (flags: 1 prev_kv, 2 ignore_value, 4 ignore_lease)
#   ["D", key, end, prev_kv]                    delete range
#   ["R", key, end, limit, rev, ...]            range (only inside a txn)
#   ["T", [[compare]...], [op...], [op...]]     txn
#   ["C", revision]                             compaction
#   ["G", id, ttl] / ["V", id] / ["X", id]      lease grant / revoke / expire (leader's clock)


def _enc_op(op: Op) -> list[Any]:
    if type(op) is PutReq:
        flags = (1 if op.prev_kv else 0) | (2 if op.ignore_value else 0) | (4 if op.ignore_lease else 0)
        return ["P", op.key, op.value, op.lease, flags]
    if type(op) is DeleteReq:
        return ["D", op.key, op.end, 1 if op.prev_kv else 0]
    if type(op) is RangeReq:
        return ["R", *op[:12]]
    assert type(op) is TxnReq
    return [
        "T",
        [list(c) for c in op.compares],
        [_enc_op(o) for o in op.success],
        [_enc_op(o) for o in op.failure],
    ]


def _dec_op(c: list[Any]) -> Op:
    tag = c[0]
    if tag == "P":
        f = c[4]
        return PutReq(c[1], c[2], c[3], bool(f & 1), bool(f & 2), bool(f & 4))
    if tag == "D":
        return DeleteReq(c[1], c[2], bool(c[3]))
    if tag == "R":
        return RangeReq(*c[1:13])
    if tag == "T":
        return TxnReq(
            [Compare(*x) for x in c[1]], [_dec_op(o) for o in c[2]], [_dec_op(o) for o in c[3]]
        )
    raise ValueError(f"not an op: {tag!r}")


Command: TypeAlias = Op | CompactReq | LeaseGrantReq | tuple[str, int]


def encode_command(cmd: Command) -> bytes:
    if type(cmd) is CompactReq:
        return orjson.dumps(["C", cmd.revision])
    if type(cmd) is LeaseGrantReq:
        return orjson.dumps(["G", cmd.id, cmd.ttl])
    if type(cmd) is tuple:  # ("V", id) revoke or ("X", id) expire
        return orjson.dumps([cmd[0], cmd[1]])
    return orjson.dumps(_enc_op(cmd))  # type: ignore[arg-type]


def revoke_command(lease_id: int) -> bytes:
    return orjson.dumps(["V", lease_id])


def expire_command(lease_id: int) -> bytes:
    return orjson.dumps(["X", lease_id])


def decode_command(data: bytes) -> Command:
    c = orjson.loads(data)
    tag = c[0]
    if tag == "C":
        return CompactReq(c[1])
    if tag == "G":
        return LeaseGrantReq(c[1], c[2])
    if tag in ("V", "X"):
        return (tag, int(c[1]))
    return _dec_op(c)


def is_read_only(t: TxnReq) -> bool:
    """etcd's isTxnReadonly: every op of both branches is a range (a nested txn is not)."""
    return all(type(o) is RangeReq for o in t.success) and all(
        type(o) is RangeReq for o in t.failure
    )
