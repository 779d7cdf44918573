"""The KV state machine without a network: MVCC against a naive model, transactions,
leases, snapshot/restore, determinism. (Wire-level etcd equality is tested against a real
etcd in tests/integration/test_kv_etcd_*.py.)"""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from udpraft.kv.errors import KvError
from udpraft.kv.jsonfmt import b64
from udpraft.kv.machine import KVMachine
from udpraft.kv.types import (
    CT_VALUE,
    CT_VERSION,
    CompactReq,
    Compare,
    DeleteReq,
    LeaseGrantReq,
    PutReq,
    RangeReq,
    TxnReq,
    decode_command,
    encode_command,
    expire_command,
    revoke_command,
)

KEYS = ["a", "a/1", "a/2", "a/3", "b", "\x00", "\xff", "b\x00"]


class Node:
    """A machine fed through the log codec, like a replica."""

    def __init__(self) -> None:
        self.m = KVMachine()
        self.index = 0

    def run(self, cmd: Any) -> dict[str, Any]:
        data = cmd if isinstance(cmd, bytes) else encode_command(cmd)
        self.index += 1
        out: dict[str, Any] = orjson.loads(self.m.apply(self.index, data))
        return out

    def get(self, key: str, rev: int = 0) -> list[dict[str, Any]]:
        kvs: list[dict[str, Any]] = self.m.range(RangeReq(key, None, revision=rev)).get("kvs", [])
        return kvs

    def all(self, rev: int = 0) -> dict[str, Any]:
        return self.m.range(RangeReq("\x00", "", revision=rev))


# ---------------------------------------------------------------------------- naive model


class Model:
    """Every revision's full state as a dict: slow, obviously right."""

    def __init__(self) -> None:
        self.rev = 1
        self.states: dict[int, dict[str, tuple[int, int, int, str]]] = {1: {}}
        self.compact = -1

    def put(self, k: str, v: str) -> None:
        head = dict(self.states[self.rev])
        prev = head.get(k)
        self.rev += 1
        head[k] = (prev[0] if prev else self.rev, self.rev, prev[2] + 1 if prev else 1, v)
        self.states[self.rev] = head

    def delete(self, k: str, end: str | None) -> int:
        head = dict(self.states[self.rev])
        gone = [x for x in head if _in(x, k, end)]
        if not gone:
            return 0
        for x in gone:
            del head[x]
        self.rev += 1
        self.states[self.rev] = head
        return len(gone)

    def range(self, k: str, end: str | None, rev: int) -> list[tuple[str, int, int, int, str]]:
        state = self.states[rev or self.rev]
        return [(x, *state[x]) for x in sorted(state) if _in(x, k, end)]


def _in(x: str, k: str, end: str | None) -> bool:
    return x == k if end is None else (k <= x and (end == "" or x < end))


def _kv_tuple(d: dict[str, Any]) -> tuple[str, int, int, int, str]:
    import base64

    return (base64.b64decode(d["key"]).decode("latin-1"), int(d["create_revision"]),
            int(d["mod_revision"]), int(d["version"]),
            base64.b64decode(d.get("value", "")).decode("latin-1"))


op_st = st.one_of(
    st.tuples(st.just("put"), st.sampled_from(KEYS), st.sampled_from(["", "x", "y", "\x00\xff"])),
    st.tuples(st.just("del"), st.sampled_from(KEYS), st.sampled_from([None, "", "a/3", "b", "\xff"])),
    st.tuples(st.just("range"), st.sampled_from(KEYS), st.sampled_from([None, "", "a/3", "\xff"]),
              st.integers(0, 40)),
    st.tuples(st.just("compact"), st.integers(0, 40)),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(op_st, max_size=60))
def test_mvcc_matches_a_naive_model(ops: list[tuple[Any, ...]]) -> None:
    n, model = Node(), Model()
    for op in ops:
        if op[0] == "put":
            r = n.run(PutReq(op[1], op[2]))
            model.put(op[1], op[2])
            assert r["header"]["revision"] == str(model.rev)
        elif op[0] == "del":
            r = n.run(DeleteReq(op[1], op[2]))
            assert int(r.get("deleted", 0)) == model.delete(op[1], op[2])
            assert r["header"]["revision"] == str(model.rev)
        elif op[0] == "range":
            rev = op[3] % (model.rev + 2)
            try:
                got = n.m.range(RangeReq(op[1], op[2], revision=rev))
            except KvError as e:
                if rev > model.rev:
                    assert "future" in e.message
                else:
                    assert "compacted" in e.message and 0 < rev < model.compact
                continue
            assert not (0 < rev < model.compact) and rev <= model.rev
            want = model.range(op[1], op[2], rev)
            assert [_kv_tuple(d) for d in got.get("kvs", [])] == want
            assert int(got.get("count", 0)) == len(want)
        else:
            rev = op[1] % (model.rev + 2)
            r = n.run(CompactReq(rev))
            if rev <= model.compact:
                assert "compacted" in r["error"]
            elif rev > model.rev:
                assert "future" in r["error"]
            else:
                assert "error" not in r
                model.compact = rev
    # every revision still readable reads as the model says
    for rev in range(max(1, model.compact), model.rev + 1):
        got = n.all(rev)
        assert [_kv_tuple(d) for d in got.get("kvs", [])] == model.range("\x00", "", rev)


# ---------------------------------------------------------------------------- random log


def random_log(seed: int, n: int) -> list[bytes]:
    r = random.Random(seed)
    out: list[bytes] = []
    rev = 1
    for _ in range(n):
        x = r.random()
        k = r.choice(KEYS)
        if x < 0.4:
            out.append(encode_command(PutReq(k, r.choice(["", "v", "w" * r.randint(1, 3)]),
                                             lease=r.choice([0, 0, 0, 7, 8]), prev_kv=r.random() < 0.3)))
            rev += 1
        elif x < 0.55:
            out.append(encode_command(DeleteReq(k, r.choice([None, "", "b"]), r.random() < 0.5)))
        elif x < 0.75:
            c = Compare(r.choice([CT_VALUE, CT_VERSION]), r.randint(0, 3), k, None,
                        r.choice([CT_VALUE, CT_VERSION]), r.choice(["v", 1, 2]))  # type: ignore[arg-type]
            out.append(encode_command(TxnReq(
                [c], [PutReq(r.choice(KEYS), "t"), RangeReq("a", "b")],
                [DeleteReq(r.choice(KEYS), None, True),
                 TxnReq([], [PutReq("nested", str(rev))], [])])))
        elif x < 0.8:
            out.append(encode_command(CompactReq(max(1, rev - r.randint(0, 5)))))
        elif x < 0.9:
            out.append(encode_command(LeaseGrantReq(r.choice([7, 8]), r.randint(1, 100))))
        else:
            out.append(r.choice([revoke_command, expire_command])(r.choice([7, 8, 9])))
    return out


@pytest.mark.parametrize("seed", range(8))
def test_snapshot_restore_then_continue_is_indistinguishable(seed: int) -> None:
    log = random_log(seed, 300)
    cut = random.Random(seed).randint(0, len(log))
    a = Node()
    for cmd in log[:cut]:
        a.run(cmd)
    snap = a.m.snapshot()
    b = Node()
    b.m = KVMachine.from_snapshot(snap)
    b.index = a.index
    assert b.m.snapshot() == snap
    for cmd in log[cut:]:
        assert a.run(cmd) == b.run(cmd)
    assert a.m.snapshot() == b.m.snapshot()
    st_ = a.m.store
    for rev in range(max(1, st_.compact_rev), st_.rev + 1):
        assert a.all(rev) == b.all(rev)
    assert a.m.store.changes_since(0, 10_000) == b.m.store.changes_since(0, 10_000)
    assert {k: sorted(v.keys) for k, v in a.m.leases.leases.items()} == \
        {k: sorted(v.keys) for k, v in b.m.leases.leases.items()}


def test_replicas_fed_the_same_log_agree_byte_for_byte() -> None:
    log = random_log(99, 500)
    a, b = KVMachine(), KVMachine()
    outs_a = [a.apply(i + 1, c) for i, c in enumerate(log)]
    outs_b = [b.apply(i + 1, c) for i, c in enumerate(log)]
    assert outs_a == outs_b
    assert a.snapshot() == b.snapshot()
    assert any(b'"error"' in o for o in outs_a) and any(b'"succeeded":true' in o for o in outs_a)


# ---------------------------------------------------------------------------- etcd rules


def test_revisions_versions_and_prev_kv() -> None:
    n = Node()
    assert n.run(PutReq("k", "1"))["header"]["revision"] == "2"  # etcd starts at revision 1
    r = n.run(PutReq("k", "2", prev_kv=True))
    assert r["prev_kv"] == {"key": b64("k"), "create_revision": "2", "mod_revision": "2",
                            "version": "1", "value": b64("1")}
    assert n.run(DeleteReq("nothing", None)) == {"header": {"revision": "3"}}
    r = n.run(DeleteReq("k", None, True))
    assert r["deleted"] == "1" and r["prev_kvs"][0]["version"] == "2"
    n.run(PutReq("k", "3"))
    assert n.get("k")[0]["create_revision"] == "5" and n.get("k")[0]["version"] == "1"
    assert n.get("k", 3)[0]["value"] == b64("2")
    assert n.get("k", 4) == []


def test_txn_sees_its_own_writes_and_nested_compares_see_the_old_state() -> None:
    n = Node()
    n.run(PutReq("x", "old"))
    t = TxnReq(
        [],
        [RangeReq("x", None), PutReq("x", "new"), RangeReq("x", None),
         TxnReq([Compare(CT_VALUE, 0, "x", None, CT_VALUE, "old")], [PutReq("y", "saw-old")], [])],
        [],
    )
    r = n.run(t)
    rs = r["responses"]
    assert rs[0]["response_range"]["header"]["revision"] == "2"
    assert rs[0]["response_range"]["kvs"][0]["value"] == b64("old")
    assert rs[2]["response_range"]["header"]["revision"] == "3"
    assert rs[2]["response_range"]["kvs"][0]["value"] == b64("new")
    assert rs[3]["response_txn"] == {"header": {}, "succeeded": True,
                                      "responses": [{"response_put": {"header": {"revision": "3"}}}]}
    assert n.get("y")[0]["mod_revision"] == "3"  # one revision for the whole txn


def test_ignore_value_put_after_a_delete_to_the_end_refuses_the_whole_txn() -> None:
    # etcd 3.4 panics here ("unexpected error during txn"); udpraft answers and writes nothing
    n = Node()
    n.run(PutReq("k", "v"))
    r = n.run(TxnReq([], [DeleteReq("a", ""), PutReq("k", "", ignore_value=True)], []))
    assert r["code"] == 3 and r["error"] == "etcdserver: key not found"
    assert n.get("k")[0]["value"] == b64("v") and n.m.store.rev == 2


def test_leases_attach_detach_and_revoke_in_one_revision() -> None:
    n = Node()
    assert n.run(LeaseGrantReq(5, 1))["TTL"] == "2"  # etcd's minimum TTL
    assert n.run(LeaseGrantReq(5, 10))["code"] == 9
    assert n.run(LeaseGrantReq(6, 9_000_000_001))["code"] == 11
    assert n.run(PutReq("l1", "x", lease=5))["header"]["revision"] == "2"
    n.run(PutReq("l2", "x", lease=5))
    n.run(PutReq("l3", "x", lease=5))
    n.run(PutReq("l3", "y"))  # detached by a put without the lease
    n.run(PutReq("l2", "", ignore_value=True, ignore_lease=True))  # keeps value and lease
    assert n.m.lease_keys(5) == [b64("l1"), b64("l2")]
    assert n.run(PutReq("l4", "x", lease=6))["code"] == 5
    r = n.run(expire_command(5))
    assert r == {"header": {"revision": "7"}}
    assert n.get("l1") == [] and n.get("l2") == [] and n.get("l3") != []
    assert n.m.store.log[-1][0] == 7 and len(n.m.store.log[-1][1]) == 2
    assert n.run(revoke_command(5))["code"] == 5
    assert n.run(expire_command(5))["code"] == 5  # a late expiry is harmless


def test_range_sort_limit_and_filters() -> None:
    n = Node()
    for k, v in [("a", "3"), ("b", "1"), ("c", "2"), ("d", "1")]:
        n.run(PutReq(k, v))
    n.run(PutReq("b", "9"))

    def keys(**kw: Any) -> list[str]:
        r = n.m.range(RangeReq("a", "z", **kw))
        return [d["key"] for d in r.get("kvs", [])]

    assert keys(sort_target=4) == [b64(x) for x in "dcab"]  # VALUE, ascending by default
    assert keys(sort_order=2, sort_target=4) == [b64(x) for x in "bacd"]
    assert keys(sort_order=2) == [b64(x) for x in "dcba"]
    assert keys(limit=2, sort_order=2, sort_target=3) == [b64(x) for x in "bd"]
    assert keys(min_mod=5) == [b64(x) for x in "bd"]
    r = n.m.range(RangeReq("a", "z", limit=1))
    assert r["more"] is True and r["count"] == "4"
    r = n.m.range(RangeReq("a", "z", count_only=True, limit=1))
    assert "kvs" not in r and "more" not in r and r["count"] == "4"
    assert "value" not in n.m.range(RangeReq("a", None, keys_only=True))["kvs"][0]


def test_malformed_entries_answer_the_same_everywhere() -> None:
    m = KVMachine()
    for bad in (b"not json", b'["?"]', b'["P"]', b"[]"):
        out = orjson.loads(m.apply(1, bad))
        assert out["code"] == 3
    assert m.store.rev == 1


def test_command_codec_roundtrip() -> None:
    for cmd in random_log(3, 200):
        assert encode_command(decode_command(cmd)) == cmd
