"""Request bodies of etcd's v3 JSON API -> request tuples, with etcd's exact 400 answers.

How this works, in the order etcd's gateway and server do it:

1. The body is read as one JSON value (Go's json.Decoder: an empty body is an empty
   request, anything after the first value is ignored, a broken one gets Go's message).
2. Fields are decoded as jsonpb does: proto names or their camelCase forms, int64 as a
   number or a quoted number, bytes as standard base64, enums by name or number, unknown
   fields ignored; a wrong type gets encoding/json's "cannot unmarshal ..." message.
   Floats need the number's original text for that message, so a body with a float in an
   integer field is re-read by the slow path (``RawNum``) — never the common case.
3. etcd's v3rpc checks (empty key, value/lease provided with ignore_*, op count, duplicate
   keys across a txn's puts and deletes) run before anything reaches Raft.

Range ends are normalised here (see ``udpraft.kv.types``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import orjson

from udpraft.kv import errors
from udpraft.kv.errors import invalid
from udpraft.kv.gojson import (
    EmptyInput,
    GoJsonError,
    b64decode,
    check_unmarshal,
    go_quote,
    scan_value,
)
from udpraft.kv.types import (
    CompactReq,
    Compare,
    DeleteReq,
    LeaseGrantReq,
    Op,
    PutReq,
    RangeReq,
    TxnReq,
    b2s,
)
from udpraft.kv.watch import WatchCreate

MAX_TXN_OPS = 128  # etcd's --max-txn-ops default
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
T = TypeVar("T")

SORT_ORDER = ("RangeRequest_SortOrder", {"NONE": 0, "ASCEND": 1, "DESCEND": 2})
SORT_TARGET = ("RangeRequest_SortTarget", {"KEY": 0, "VERSION": 1, "CREATE": 2, "MOD": 3, "VALUE": 4})
CMP_RESULT = ("Compare_CompareResult", {"EQUAL": 0, "GREATER": 1, "LESS": 2, "NOT_EQUAL": 3})
CMP_TARGET = ("Compare_CompareTarget", {"VERSION": 0, "CREATE": 1, "MOD": 2, "VALUE": 3, "LEASE": 4})
FILTER_TYPE = ("WatchCreateRequest_FilterType", {"NOPUT": 0, "NODELETE": 1})


class RawNum:
    """A JSON number as written (slow path only), for Go's exact messages."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


class _NeedRaw(Exception):
    pass


# ================================================================== body


def load_body(raw: bytes, slow: bool = False) -> dict[str, Any]:
    """The first JSON value of ``raw`` as a field map (Go Decoder + jsonpb semantics)."""
    v: Any
    if not slow:
        try:
            v = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            slow = True
    if slow:
        try:
            start, end = scan_value(raw)
        except EmptyInput:
            return {}
        except GoJsonError as e:
            raise invalid(str(e)) from None
        text = raw[start:end].decode("utf-8", "replace")
        v = json.loads(text, parse_float=RawNum, parse_int=RawNum, parse_constant=RawNum)
    if v is None:
        return {}
    if type(v) is not dict:
        raise invalid(f"json: cannot unmarshal {gotype(v)} into Go value of type map[string]json.RawMessage")
    return v


def parse(raw: bytes, fn: Callable[[dict[str, Any]], T]) -> T:
    """Decode ``raw`` with the message decoder ``fn``; KvError on a bad request."""
    try:
        return fn(load_body(raw))
    except _NeedRaw:
        return fn(load_body(raw, slow=True))


# ================================================================== scalar fields


def gotype(v: Any) -> str:
    if v is True or v is False:
        return "bool"
    if isinstance(v, (int, float, RawNum)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def _get(d: dict[str, Any], name: str, camel: str | None = None) -> Any:
    if name in d:
        return d[name]
    if camel is not None:
        return d.get(camel)
    return None


def _int_text(text: str, gotype_name: str, lo: int, hi: int) -> int:
    t = text.strip()
    body = t[1:] if t.startswith("-") else t
    if body.isdigit() and body.isascii() and (body == "0" or not body.startswith("0")):
        n = int(t)
        if lo <= n <= hi:
            return n
    raise invalid(f"json: cannot unmarshal number {t} into Go value of type {gotype_name}")


def int64(v: Any, gotype_name: str = "int64", lo: int = INT64_MIN, hi: int = INT64_MAX) -> int:
    if v is None:
        return 0
    t = type(v)
    if t is int:
        if lo <= v <= hi:
            return int(v)
        raise invalid(f"json: cannot unmarshal number {v} into Go value of type {gotype_name}")
    if t is float:
        raise _NeedRaw()
    if t is RawNum:
        return _int_text(v.text, gotype_name, lo, hi)
    if t is str:
        # jsonpb drops the quotes of a quoted number and hands the rest to json.Unmarshal
        inner = v if not any(c in v for c in '"\\') and all(ord(c) >= 0x20 for c in v) else json.dumps(v, ensure_ascii=False)[1:-1]
        try:
            check_unmarshal(inner.encode("utf-8", "replace"))
        except GoJsonError as e:
            raise invalid(str(e)) from None
        s = inner.strip()
        if s == "null":
            return 0
        if s[0] in "-0123456789":
            return _int_text(s, gotype_name, lo, hi)
        kind = {"t": "bool", "f": "bool", '"': "string", "[": "array", "{": "object"}[s[0]]
        raise invalid(f"json: cannot unmarshal {kind} into Go value of type {gotype_name}")
    raise invalid(f"json: cannot unmarshal {gotype(v)} into Go value of type {gotype_name}")


def boolean(v: Any) -> bool:
    if v is None or v is False:
        return False
    if v is True:
        return True
    raise invalid(f"json: cannot unmarshal {gotype(v)} into Go value of type bool")


def data(v: Any) -> str:
    """A bytes field: base64 text -> latin-1 str."""
    if v is None:
        return ""
    if type(v) is str:
        try:
            return b2s(b64decode(v))
        except GoJsonError as e:
            raise invalid(str(e)) from None
        except UnicodeEncodeError:
            raise invalid("illegal base64 data at input byte 0") from None
    raise invalid(f"json: cannot unmarshal {gotype(v)} into Go value of type []uint8")


def enum(v: Any, spec: tuple[str, dict[str, int]]) -> int:
    name, values = spec
    if v is None:
        return 0
    if type(v) is str:
        if v in values:
            return values[v]
        raise invalid(f"unknown value {go_quote(v)} for enum etcdserverpb.{name}")
    if v is True or v is False or type(v) in (list, dict):
        raise invalid(f"json: cannot unmarshal {gotype(v)} into Go value of type etcdserverpb.{name}")
    return int64(v, "etcdserverpb." + name, INT32_MIN, INT32_MAX)


def message(v: Any) -> dict[str, Any] | None:
    if v is None:
        return None
    if type(v) is dict:
        return v
    raise invalid(f"json: cannot unmarshal {gotype(v)} into Go value of type map[string]json.RawMessage")


def repeated(v: Any) -> list[Any]:
    if v is None:
        return []
    if type(v) is list:
        return v
    raise invalid(f"json: cannot unmarshal {gotype(v)} into Go value of type []json.RawMessage")


def range_end(raw: str) -> str | None:
    """'' (absent) -> None: just the key; '\\0' -> '': every key from key on."""
    if not raw:
        return None
    return "" if raw == "\x00" else raw


# ================================================================== KV messages


def range_request(d: dict[str, Any]) -> RangeReq:
    # decoded in proto field order, so the first bad field is the one etcd would name
    key = data(d.get("key"))
    end = range_end(data(_get(d, "range_end", "rangeEnd")))
    limit = int64(d.get("limit"))
    revision = int64(d.get("revision"))
    sort_order = enum(_get(d, "sort_order", "sortOrder"), SORT_ORDER)
    sort_target = enum(_get(d, "sort_target", "sortTarget"), SORT_TARGET)
    serializable = boolean(d.get("serializable"))
    return RangeReq(
        key, end, limit, revision, sort_order, sort_target,
        keys_only=boolean(_get(d, "keys_only", "keysOnly")),
        count_only=boolean(_get(d, "count_only", "countOnly")),
        min_mod=int64(_get(d, "min_mod_revision", "minModRevision")),
        max_mod=int64(_get(d, "max_mod_revision", "maxModRevision")),
        min_create=int64(_get(d, "min_create_revision", "minCreateRevision")),
        max_create=int64(_get(d, "max_create_revision", "maxCreateRevision")),
        serializable=serializable,
    )


def put_request(d: dict[str, Any]) -> PutReq:
    return PutReq(
        data(d.get("key")),
        data(d.get("value")),
        int64(d.get("lease")),
        boolean(_get(d, "prev_kv", "prevKv")),
        boolean(_get(d, "ignore_value", "ignoreValue")),
        boolean(_get(d, "ignore_lease", "ignoreLease")),
    )


def delete_request(d: dict[str, Any]) -> DeleteReq:
    return DeleteReq(
        data(d.get("key")),
        range_end(data(_get(d, "range_end", "rangeEnd"))),
        boolean(_get(d, "prev_kv", "prevKv")),
    )


_UNION = (("version", None, 0), ("create_revision", "createRevision", 1),
          ("mod_revision", "modRevision", 2), ("value", None, 3), ("lease", None, 4))


def compare(d: dict[str, Any]) -> Compare:
    result = enum(d.get("result"), CMP_RESULT)
    target = enum(d.get("target"), CMP_TARGET)
    key = data(d.get("key"))
    end = range_end(data(_get(d, "range_end", "rangeEnd")))
    union, value = -1, 0
    for name, camel, code in _UNION:
        v = _get(d, name, camel)
        if v is None and name not in d and (camel is None or camel not in d):
            continue
        union = code
        value = data(v) if code == 3 else int64(v)  # type: ignore[assignment]
        break
    return Compare(target, result, key, end, union, value)


_OPS = (("request_range", "requestRange"), ("request_put", "requestPut"),
        ("request_delete_range", "requestDeleteRange"), ("request_txn", "requestTxn"))


def request_op(d: Any) -> Op:
    d = message(d) or {}
    for i, (name, camel) in enumerate(_OPS):
        m = message(_get(d, name, camel))
        if m is None:
            continue
        if i == 0:
            return range_request(m)
        if i == 1:
            return put_request(m)
        if i == 2:
            return delete_request(m)
        return txn_request(m)
    raise errors.err(errors.KEY_NOT_FOUND)  # etcd: an empty RequestOp


def txn_request(d: dict[str, Any]) -> TxnReq:
    cmps = [compare(message(c) or {}) for c in repeated(d.get("compare"))]
    succ = [request_op(o) for o in repeated(d.get("success"))]
    fail = [request_op(o) for o in repeated(d.get("failure"))]
    return TxnReq(cmps, succ, fail)


def compaction_request(d: dict[str, Any]) -> CompactReq:
    return CompactReq(int64(d.get("revision")), boolean(d.get("physical")))


# ================================================================== etcd's v3rpc checks


def check_op(op: Op, max_ops: int = MAX_TXN_OPS) -> None:
    t = type(op)
    if t is TxnReq:
        check_txn(op, max_ops)  # type: ignore[arg-type]
        return
    if not op.key:  # type: ignore[union-attr]
        raise errors.err(errors.EMPTY_KEY)
    if t is PutReq:
        if op.ignore_value and op.value:  # type: ignore[union-attr]
            raise errors.err(errors.VALUE_PROVIDED)
        if op.ignore_lease and op.lease:  # type: ignore[union-attr]
            raise errors.err(errors.LEASE_PROVIDED)


def check_txn(t: TxnReq, max_ops: int = MAX_TXN_OPS) -> None:
    opc = max(len(t.compares), len(t.success), len(t.failure))
    if opc > max_ops:
        raise errors.err(errors.TOO_MANY_OPS)
    for c in t.compares:
        if not c.key:
            raise errors.err(errors.EMPTY_KEY)
    for op in t.success:
        check_op(op, max_ops - opc)
    for op in t.failure:
        check_op(op, max_ops - opc)


Interval = tuple[str, str | None]  # (begin, end); end None: the single key begin


def _hits(dels: list[Interval], k: str) -> bool:
    return any(b == k if e is None else b <= k < e for b, e in dels)


def check_intervals(ops: list[Op]) -> tuple[set[str], list[Interval]]:
    """etcd's checkIntervals: no key may be put twice, or put and deleted, in one txn path."""
    dels: list[Interval] = []
    for op in ops:
        if type(op) is DeleteReq:
            # the literal range end: '\0' makes an empty interval here, as in etcd
            dels.append((op.key, None if op.end is None else (op.end or "\x00")))
    puts: set[str] = set()
    for op in ops:
        if type(op) is not TxnReq:
            continue
        puts_then, dels_then = check_intervals(op.success)
        puts_else, dels_else = check_intervals(op.failure)
        for k in puts_then:
            if k in puts or _hits(dels, k):
                raise errors.err(errors.DUPLICATE_KEY)
            puts.add(k)
        for k in puts_else:
            if (k in puts and k not in puts_then) or _hits(dels, k):
                raise errors.err(errors.DUPLICATE_KEY)
            puts.add(k)
        dels += dels_then + dels_else
    for op in ops:
        if type(op) is PutReq:
            if op.key in puts or _hits(dels, op.key):
                raise errors.err(errors.DUPLICATE_KEY)
            puts.add(op.key)
    return puts, dels


def validate(op: Op) -> Op:
    """All of etcd's pre-Raft checks for a top-level request."""
    check_op(op)
    if type(op) is TxnReq:
        check_intervals(op.success)
        check_intervals(op.failure)
    return op


# ================================================================== lease and watch messages


def lease_grant(d: dict[str, Any]) -> LeaseGrantReq:
    return LeaseGrantReq(int64(d.get("ID")), int64(d.get("TTL")))


def lease_id(d: dict[str, Any]) -> int:
    return int64(d.get("ID"))


def lease_ttl_request(d: dict[str, Any]) -> tuple[int, bool]:
    return int64(d.get("ID")), boolean(d.get("keys"))


def watch_request(d: dict[str, Any]) -> tuple[str, Any]:
    """("create", WatchCreate) | ("cancel", id) | ("progress", None) | ("none", None)."""
    c = message(_get(d, "create_request", "createRequest"))
    if c is not None:
        filters = tuple(enum(f, FILTER_TYPE) for f in repeated(c.get("filters")))
        return "create", WatchCreate(
            data(c.get("key")),
            range_end(data(_get(c, "range_end", "rangeEnd"))),
            int64(_get(c, "start_revision", "startRevision")),
            boolean(_get(c, "progress_notify", "progressNotify")),
            filters,
            boolean(_get(c, "prev_kv", "prevKv")),
            int64(_get(c, "watch_id", "watchId")),
            boolean(c.get("fragment")),
        )
    x = message(_get(d, "cancel_request", "cancelRequest"))
    if x is not None:
        return "cancel", int64(_get(x, "watch_id", "watchId"))
    if message(_get(d, "progress_request", "progressRequest")) is not None:
        return "progress", None
    return "none", None
