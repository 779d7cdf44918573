"""The etcd v3 state machine: range, put, delete, txn, compaction and leases over the MVCC store.

How this works: ``apply(index, data)`` is what the Raft log feeds, one committed command at a
time, identically on every replica; it returns the JSON body etcd would answer (with only the
revision in the header — the HTTP face adds cluster, member and term) or etcd's error body.
Reads (``range``, read-only ``txn``) are called directly by the HTTP face once ReadIndex has
confirmed that this replica is up to date.

A transaction follows etcd's applier step by step: every compare — nested transactions too —
is evaluated against the state before the transaction (``_path``); then the chosen branch is
checked (leases exist, ``ignore_*`` keys exist, range revisions valid) before anything is
written; then the ops run in one MVCC write, so all changes share one revision and a range
inside the transaction sees the writes before it.

After a write, ``listeners`` (the watch hub) get the revision and its changes.
``snapshot``/``restore`` carry the whole state (store, change feed, leases) for log
compaction; equal states give equal bytes.
Pure and deterministic: no clock, no randomness, no IO.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from operator import itemgetter
from typing import Any

import orjson

from udpraft.kv import errors
from udpraft.kv.errors import KvError
from udpraft.kv.jsonfmt import b64, kv_json
from udpraft.kv.lease import Lease, LeaseTable
from udpraft.kv.mvcc import Store
from udpraft.kv.types import (
    CMP_EQUAL,
    CMP_GREATER,
    CMP_LESS,
    CMP_NOT_EQUAL,
    CT_CREATE,
    CT_LEASE,
    CT_MOD,
    CT_VALUE,
    CT_VERSION,
    KV,
    SORT_ASCEND,
    SORT_DESCEND,
    SORT_NONE,
    TARGET_KEY,
    CompactReq,
    Compare,
    DeleteReq,
    LeaseGrantReq,
    Op,
    PutReq,
    RangeReq,
    TxnReq,
    decode_command,
    is_read_only,
)

_SORT_FIELD = {0: 0, 1: 3, 2: 1, 3: 2, 4: 4}  # sort target -> KV tuple index
_CMP_FIELD = {CT_VERSION: 3, CT_CREATE: 1, CT_MOD: 2, CT_LEASE: 5}
Listener = Callable[[int, list[KV]], None]


class KVMachine:
    """The replicated KV state; implements udpraft's ``Application`` protocol."""

    def __init__(self) -> None:
        self.store = Store()
        self.leases = LeaseTable()
        self.applied_index = 0
        self.listeners: list[Listener] = []
        self.lease_listeners: list[Callable[[str, int], None]] = []
        self.reset_listeners: list[Callable[[], None]] = []

    # ================================================================== log entry point

    def apply(self, index: int, data: bytes) -> bytes:
        self.applied_index = index
        try:
            cmd = decode_command(data)
            t = type(cmd)
            if t is PutReq:
                resp = self.put(cmd)  # type: ignore[arg-type]
            elif t is DeleteReq:
                resp = self.delete(cmd)  # type: ignore[arg-type]
            elif t is TxnReq:
                resp = self.txn(cmd)  # type: ignore[arg-type]
            elif t is CompactReq:
                resp = self.compact(cmd.revision)  # type: ignore[union-attr]
            elif t is LeaseGrantReq:
                resp = self.grant(cmd.id, cmd.ttl)  # type: ignore[union-attr]
            elif t is tuple:
                resp = self.revoke(cmd[1], expire=cmd[0] == "X")  # type: ignore[arg-type]
            else:
                raise KvError(errors.INVALID_ARGUMENT, "udpraft: unknown command")
        except KvError as e:
            return orjson.dumps(e.body())
        except (ValueError, TypeError, IndexError, orjson.JSONDecodeError):
            # A malformed entry cannot come from our HTTP face; answer it the same on every replica.
            return orjson.dumps(KvError(errors.INVALID_ARGUMENT, "udpraft: bad command").body())
        return orjson.dumps(resp)

    # ================================================================== reads

    def range(self, r: RangeReq) -> dict[str, Any]:
        self.store.check_rev(r.revision)
        return self._range(r)

    def _range(self, r: RangeReq) -> dict[str, Any]:
        st = self.store
        more = False
        if r.count_only:
            kvs: list[KV] = []
            n = st.count(r.key, r.end, r.revision)
        else:
            filtered = r.min_mod or r.max_mod or r.min_create or r.max_create
            limit = r.limit
            if r.sort_order != SORT_NONE or filtered:
                limit = 0
            elif limit > 0:
                limit += 1
            kvs, n = st.range(r.key, r.end, r.revision, limit)
            if filtered:
                kvs = _prune(kvs, r)
            order = r.sort_order
            if r.sort_target != TARGET_KEY and order == SORT_NONE:
                order = SORT_ASCEND
            if order in (SORT_ASCEND, SORT_DESCEND) and (
                order == SORT_DESCEND or r.sort_target != TARGET_KEY
            ):
                f = _SORT_FIELD.get(r.sort_target)
                if f is not None:
                    kvs.sort(key=itemgetter(f), reverse=order == SORT_DESCEND)
            if 0 < r.limit < len(kvs):
                del kvs[r.limit :]
                more = True
        resp: dict[str, Any] = {"header": {"revision": str(st.read_rev())}}
        if kvs:
            ko = r.keys_only
            resp["kvs"] = [kv_json(kv, ko) for kv in kvs]
        if more:
            resp["more"] = True
        if n:
            resp["count"] = str(n)
        return resp

    # ================================================================== writes

    def _notify(self, changes: list[KV]) -> None:
        if changes and self.listeners:
            rev = self.store.rev
            for f in self.listeners:
                f(rev, changes)

    def put(self, r: PutReq) -> dict[str, Any]:
        if r.lease and r.lease not in self.leases:
            raise errors.err(errors.LEASE_NOT_FOUND)
        st = self.store
        st.begin()
        try:
            resp = self._put(r)
        finally:
            changes = st.end()
        self._notify(changes)
        return resp

    def _put(self, r: PutReq) -> dict[str, Any]:
        st = self.store
        prev = st.get(r.key) if (r.prev_kv or r.ignore_value or r.ignore_lease) else None
        if (r.ignore_value or r.ignore_lease) and prev is None:
            raise errors.err(errors.KEY_NOT_FOUND)
        value = prev[4] if (r.ignore_value and prev) else r.value
        lease = prev[5] if (r.ignore_lease and prev) else r.lease
        rec, old = st.put(r.key, value, lease)
        if old is not None and old[5]:
            self.leases.detach(old[5], r.key)
        if lease:
            self.leases.attach(lease, r.key)
        resp: dict[str, Any] = {"header": {"revision": str(rec[2])}}
        if r.prev_kv and prev is not None:
            resp["prev_kv"] = kv_json(prev)
        return resp

    def delete(self, r: DeleteReq) -> dict[str, Any]:
        st = self.store
        st.begin()
        try:
            resp = self._delete(r)
        finally:
            changes = st.end()
        self._notify(changes)
        return resp

    def _delete(self, r: DeleteReq) -> dict[str, Any]:
        st = self.store
        gone = st.delete_range(r.key, r.end)
        for g in gone:
            if g[5]:
                self.leases.detach(g[5], g[0])
        resp: dict[str, Any] = {"header": {"revision": str(st.read_rev())}}
        if gone:
            resp["deleted"] = str(len(gone))
            if r.prev_kv:
                resp["prev_kvs"] = [kv_json(g) for g in gone]
        return resp

    def compact(self, rev: int) -> dict[str, Any]:
        self.store.compact(rev)
        return {"header": {"revision": str(self.store.rev)}}

    # ================================================================== txn

    def txn(self, t: TxnReq) -> dict[str, Any]:
        path = self._path(t)
        if not is_read_only(t):
            self._check_puts(t, iter(path), [])
        self._check(t, iter(path), self._check_range)
        st = self.store
        st.begin()
        try:
            resp = self._run(t, iter(path))
        finally:
            changes = st.end()
        resp["header"] = {"revision": str(st.rev)}
        self._notify(changes)
        return resp

    def _path(self, t: TxnReq) -> list[bool]:
        ok = all(self._compare(c) for c in t.compares)
        path = [ok]
        for op in t.success if ok else t.failure:
            if type(op) is TxnReq:
                path += self._path(op)
        return path

    def _compare(self, c: Compare) -> bool:
        kvs, _ = self.store.range(c.key, c.end)
        if not kvs:
            if c.target == CT_VALUE:
                return False  # a missing key has no value, not even an empty one
            return _compare_kv(c, None)
        return all(_compare_kv(c, kv) for kv in kvs)

    def _check(self, t: TxnReq, path: Iterator[bool], f: Callable[[Op], None]) -> None:
        for op in t.success if next(path) else t.failure:
            if type(op) is TxnReq:
                self._check(op, path, f)
            else:
                f(op)

    def _check_puts(self, t: TxnReq, path: Iterator[bool], open_deletes: list[str]) -> None:
        """etcd's checkPut over the chosen ops, in execution order. ``open_deletes`` are the
        start keys of earlier deletes to the end of the keyspace (range end "\\0"), which
        etcd's duplicate-key check lets through: an ignore_value/ignore_lease put of a key
        they remove would fail half-way through the txn (etcd 3.4 panics there); we refuse
        the whole txn with "key not found" instead, before anything is written."""
        for op in t.success if next(path) else t.failure:
            if isinstance(op, TxnReq):
                self._check_puts(op, path, open_deletes)
            elif isinstance(op, DeleteReq):
                if op.end == "":
                    open_deletes.append(op.key)
            elif isinstance(op, PutReq):
                if (op.ignore_value or op.ignore_lease) and (
                    self.store.get(op.key) is None or any(k <= op.key for k in open_deletes)
                ):
                    raise errors.err(errors.KEY_NOT_FOUND)
                if op.lease and op.lease not in self.leases:
                    raise errors.err(errors.LEASE_NOT_FOUND)

    def _check_range(self, op: Op) -> None:
        if type(op) is RangeReq and op.revision:
            st = self.store
            if op.revision > st.rev:
                raise errors.err(errors.FUTURE_REV)
            if op.revision < st.compact_rev:
                raise errors.err(errors.COMPACTED)

    def _run(self, t: TxnReq, path: Iterator[bool]) -> dict[str, Any]:
        ok = next(path)
        out: list[dict[str, Any]] = []
        for op in t.success if ok else t.failure:
            typ = type(op)
            if typ is RangeReq:
                out.append({"response_range": self._range(op)})  # type: ignore[arg-type]
            elif typ is PutReq:
                out.append({"response_put": self._put(op)})  # type: ignore[arg-type]
            elif typ is DeleteReq:
                out.append({"response_delete_range": self._delete(op)})  # type: ignore[arg-type]
            else:
                out.append({"response_txn": self._run(op, path)})  # type: ignore[arg-type]
        resp: dict[str, Any] = {"header": {}}
        if ok:
            resp["succeeded"] = True
        if out:
            resp["responses"] = out
        return resp

    # ================================================================== leases

    def grant(self, lease_id: int, ttl: int) -> dict[str, Any]:
        lease = self.leases.grant(lease_id, ttl)
        for f in self.lease_listeners:
            f("grant", lease_id)
        return {"header": {"revision": str(self.store.rev)}, "ID": str(lease_id),
                "TTL": str(lease.ttl)}

    def revoke(self, lease_id: int, expire: bool = False) -> dict[str, Any]:
        lease = self.leases.remove(lease_id)
        if lease is None:
            raise errors.err(errors.LEASE_NOT_FOUND)
        st = self.store
        if lease.keys:
            st.begin()
            try:
                for k in sorted(lease.keys):
                    st.delete_range(k, None)
            finally:
                changes = st.end()
            self._notify(changes)
        for f in self.lease_listeners:
            f("expire" if expire else "revoke", lease_id)
        return {"header": {"revision": str(st.rev)}}

    def lease_keys(self, lease_id: int) -> list[str] | None:
        lease = self.leases.get(lease_id)
        return None if lease is None else [b64(k) for k in sorted(lease.keys)]

    # ================================================================== snapshot

    def snapshot(self) -> bytes:
        """The whole KV state as bytes (for log compaction / shipping to a lagging node)."""
        return orjson.dumps({
            "v": 1,
            "applied": self.applied_index,
            "store": self.store.to_obj(),
            "leases": sorted([lease.id, lease.ttl] for lease in self.leases.leases.values()),
        })

    def restore(self, data: bytes) -> None:
        """Replace the whole state with a snapshot's, in place (hooks stay attached); then
        ``reset_listeners`` run — the watch hub re-reads what its watchers have not seen."""
        o = orjson.loads(data)
        if o.get("v") != 1:
            raise ValueError("unknown KV snapshot version")
        store = Store.from_obj(o["store"])
        leases = LeaseTable()
        for lid, ttl in o["leases"]:
            leases.leases[lid] = Lease(lid, ttl)
        for rec in store.live_records():
            if rec[5]:
                leases.attach(rec[5], rec[0])
        self.store, self.leases, self.applied_index = store, leases, o["applied"]
        for f in self.reset_listeners:
            f()

    @classmethod
    def from_snapshot(cls, data: bytes) -> KVMachine:
        m = cls()
        m.restore(data)
        return m


def _compare_kv(c: Compare, kv: KV | None) -> bool:
    tgt = c.target
    if tgt == CT_VALUE:
        want = c.value if c.union == CT_VALUE else ""
        have = kv[4] if kv is not None else ""
        res = (have > want) - (have < want)  # type: ignore[operator]
    elif tgt in _CMP_FIELD:
        want_i = c.value if c.union == tgt else 0
        have_i = kv[_CMP_FIELD[tgt]] if kv is not None else 0
        res = (have_i > want_i) - (have_i < want_i)  # type: ignore[operator]
    else:
        res = 0
    r = c.result
    if r == CMP_EQUAL:
        return res == 0
    if r == CMP_NOT_EQUAL:
        return res != 0
    if r == CMP_GREATER:
        return res > 0
    if r == CMP_LESS:
        return res < 0
    return True


def _prune(kvs: list[KV], r: RangeReq) -> list[KV]:
    out = kvs
    if r.max_mod:
        out = [kv for kv in out if not kv[2] > r.max_mod]
    if r.min_mod:
        out = [kv for kv in out if not kv[2] < r.min_mod]
    if r.max_create:
        out = [kv for kv in out if not kv[1] > r.max_create]
    if r.min_create:
        out = [kv for kv in out if not kv[1] < r.min_create]
    return out
