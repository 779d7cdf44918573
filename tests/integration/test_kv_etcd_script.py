"""Differential test: a scripted request sequence gets the same answers from etcd 3.4 and udpraft.

Both start empty; every step goes to a real etcd and to a *follower* of a 3-node udpraft
cluster (so writes are forwarded and reads go through ReadIndex). Answers are compared as
JSON after dropping what legitimately differs: cluster_id, member_id and raft_term in
headers, randomly chosen lease ids (captured per system and substituted back), db sizes and
raft indexes in the status answer, and one second of clock skew in lease TTLs.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.procs import local_cluster
from tests.integration.conftest import EtcdProcess, KvHttp, WatchClient

pytestmark = pytest.mark.integration


def b(s: str | bytes) -> str:
    return base64.b64encode(s.encode("latin-1") if isinstance(s, str) else s).decode()


def norm(obj: Any) -> Any:
    """Drop per-member header fields, recursively."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if k == "header" and isinstance(v, dict):
                out[k] = {"revision": v["revision"]} if "revision" in v else {}
            else:
                out[k] = norm(v)
        return out
    if isinstance(obj, list):
        return [norm(x) for x in obj]
    return obj


def subst(body: Any, env: dict[str, str]) -> Any:
    if isinstance(body, bytes):
        for k, v in env.items():
            body = body.replace(f"${k}".encode(), v.encode())
        return body
    text = json.dumps(body)
    for k, v in env.items():
        text = text.replace(f'"${k}"', f'"{v}"')
    return json.loads(text)


R = "/v3/kv/range"
P = "/v3/kv/put"
D = "/v3/kv/deleterange"
T = "/v3/kv/txn"
C = "/v3/kv/compaction"
LG = "/v3/lease/grant"
LR = "/v3/lease/revoke"
LK = "/v3/lease/keepalive"
LT = "/v3/lease/timetolive"
LL = "/v3/lease/leases"
ST = "/v3/maintenance/status"


def put(k: str, v: str = "", **kw: Any) -> tuple[str, Any]:
    return (P, {"key": b(k), "value": b(v), **kw})


def rng(k: str, end: str | None = None, **kw: Any) -> tuple[str, Any]:
    body = {"key": b(k), **kw}
    if end is not None:
        body["range_end"] = b(end)
    return (R, body)


def cmp(k: str, target: str, result: str, **kw: Any) -> dict[str, Any]:
    return {"key": b(k), "target": target, "result": result, **kw}


def op_put(k: str, v: str = "", **kw: Any) -> dict[str, Any]:
    return {"request_put": {"key": b(k), "value": b(v), **kw}}


def op_range(k: str, end: str | None = None, **kw: Any) -> dict[str, Any]:
    body = {"key": b(k), **kw}
    if end is not None:
        body["range_end"] = b(end)
    return {"request_range": body}


def op_del(k: str, end: str | None = None, **kw: Any) -> dict[str, Any]:
    body = {"key": b(k), **kw}
    if end is not None:
        body["range_end"] = b(end)
    return {"request_delete_range": body}


def txn(compare: list[Any] | None = None, success: list[Any] | None = None,
        failure: list[Any] | None = None) -> tuple[str, Any]:
    body: dict[str, Any] = {}
    if compare is not None:
        body["compare"] = compare
    if success is not None:
        body["success"] = success
    if failure is not None:
        body["failure"] = failure
    return (T, body)


SCRIPT: list[tuple[Any, ...]] = [
    # --- put / range basics and the gateway's decoding errors
    rng("foo"),
    put("foo", "bar"),
    put("foo", "baz", prev_kv=True),
    rng("foo"),
    rng("nope"),
    (P, {"key": "", "value": b("x")}),
    (P, {"key": "!!!", "value": b("x")}),
    (P, b'{"key":'),
    (P, b""),
    (P, b"[1,2]"),
    (P, b"null"),
    (P, b'"x"'),
    (P, b'{"key": "YQ==", "value": 5}'),
    (P, b'{"key": "YQ==", "lease": 1.5}'),
    (P, b'{"key": "YQ==", "lease": "abc"}'),
    (P, b'{"key": "YQ==", "prev_kv": "yes"}'),
    (P, b'{"key": "YQ=", "value": "eA=="}'),
    (P, b'{"key": "YQ", "value": "eA=="}'),
    (P, b'{"key": "YQ-_"}'),
    (P, b'{"key": "YQ==" "x": 1}'),
    (P, b'{"key": "YQ==", "lease": "12"}'),
    (P, b'{"key": "YQ==", "bogus": [1, {"z": null}], "value": "eA=="}'),
    (P, b'{"key": "YQ==", "value": "eQ=="} trailing garbage is ignored'),
    put("a/1", "v1"),
    put("a/2", "v2"),
    put("a/3", ""),
    put("a/4", "v0"),
    put("a/5", "v2"),
    (P, {"key": b("b/1"), "value": b("x"), "prevKv": True}),
    put("b/2", "y"),
    put("\x00\xff", "\x01\x02"),
    # --- range options
    rng("a/", "a0"),
    rng("a/", "a0", limit=2),
    rng("a/", "a0", limit="2", count_only=True),
    rng("a/", "a0", keys_only=True),
    rng("a/", "a0", sort_order="DESCEND", sort_target="KEY"),
    rng("a/", "a0", sort_target="VALUE"),
    rng("a/", "a0", sort_order=2, sort_target="VALUE", limit=3),
    rng("a/", "a0", sort_order="ASCEND", sort_target="MOD"),
    rng("a/", "a0", sort_order=7),
    (R, {"key": b("a"), "sort_order": "BOGUS"}),
    (R, {"key": b("a"), "sort_target": True}),
    (R, {"key": "AA==", "range_end": "AA=="}),
    rng("a/", "a0", revision=3),
    rng("a/1", revision=2),
    rng("a/1", revision=1000),
    rng("a/1", revision=-1),
    rng("a/", "a0", min_mod_revision=5),
    rng("a/", "a0", max_mod_revision=5, limit=1),
    rng("a/", "a0", min_create_revision=4, max_create_revision=6),
    rng("b", "a"),
    rng("a/1", ""),
    rng("a/", "a0", limit=-1),
    (R, {"key": b("a/"), "rangeEnd": b("a0"), "keysOnly": True, "countOnly": False}),
    (R, {}),
    put("a/1", "v1b"),
    rng("a/1", revision=4),
    # --- delete range
    (D, {"key": b("a/3"), "prev_kv": True}),
    (D, {"key": b("zzz")}),
    (D, {"key": b("b/"), "range_end": b("b0"), "prev_kv": True}),
    (D, {"key": ""}),
    rng("a/3"),
    # --- ignore_value / ignore_lease
    put("zz", ignore_value=True),
    (P, {"key": b("a/1"), "value": b("x"), "ignore_value": True}),
    put("a/1", ignore_value=True),
    (P, {"key": b("a/1"), "value": b("q"), "ignore_lease": True, "lease": 5}),
    put("a/1", "q", ignore_lease=True),
    put("nokey", "q", ignore_lease=True),
    rng("a/1"),
    # --- transactions
    txn([cmp("a/1", "VALUE", "EQUAL", value=b("q"))],
        [op_put("t", "x"), op_range("a/1"), op_del("a/2", prev_kv=True)], []),
    txn([cmp("a/1", "VERSION", "GREATER", version=50)], [], [op_range("t")]),
    (T, {}),
    txn([cmp("new", "CREATE", "EQUAL", create_revision=0)], [op_put("new", "1")], [op_range("new")]),
    txn([cmp("new", "CREATE", "EQUAL", create_revision=0)], [op_put("new", "1")], [op_range("new")]),
    txn([cmp("a/", "MOD", "LESS", mod_revision=1000, range_end=b("a0"))],
        [op_range("a/", "a0", count_only=True)]),
    txn([cmp("a/1", "LEASE", "EQUAL", lease=0)], [op_range("a/1", keys_only=True)]),
    txn([cmp("a/1", "VALUE", "NOT_EQUAL", value=b("zz"))], [op_put("t2", "y")]),
    txn([cmp("missing", "VALUE", "NOT_EQUAL", value=b("zz"))], [op_put("t3", "y")]),
    txn([cmp("a/1", "VERSION", "EQUAL")], [op_put("t4")], [op_put("t5")]),
    txn([cmp("a/1", "MOD", "GREATER", mod_revision=1)],
        [{"request_txn": {"compare": [cmp("t", "VALUE", "EQUAL", value=b("x"))],
                          "success": [op_put("n1", "in"), op_range("n1")],
                          "failure": [op_put("n2", "out")]}},
         op_put("n3", "outer")]),
    txn([], [{"request_txn": {"compare": [cmp("t", "VALUE", "EQUAL", value=b("nope"))],
                              "success": [op_put("n1", "in")],
                              "failure": [op_del("n1", prev_kv=True)]}}]),
    txn([], [op_put("d", "1"), op_put("d", "2")]),
    txn([], [op_put("d", "1"), op_del("d")]),
    txn([], [op_del("a", "b"), op_put("a/1", "x")]),
    txn([], [op_del("a/5", "\x00"), op_put("a/1", "x")]),
    txn([], [op_range("t"), op_put("t", "z"), op_range("t"), op_del("nothing")]),
    txn([], [op_del("nothing")]),
    txn([], [op_put("t", "z", lease=77)]),
    txn([], [{}]),
    txn([{"target": "VERSION"}], []),
    txn([cmp("a/1", "MOD", "BOGUS")], []),
    txn([cmp("a/1", "VERSION", "EQUAL", version=0)] * 129, []),
    txn([], [op_put("p", ignore_value=True)]),
    txn([], [op_put("p", "v", ignore_value=True)]),
    txn([], [op_range("t", revision=1000)]),
    rng("t", "u"),
    # --- leases
    (LG, {"TTL": 600, "ID": 1000}),
    (LG, {"TTL": 600, "ID": 1000}),
    (LG, {"TTL": 1, "ID": 1001}),  # etcd's minimum TTL: 2 s
    (LT, {"ID": 1001}),
    (LR, {"ID": 1001}),  # at once: its expiry must not race the script
    (LG, {"TTL": 9000000001, "ID": 1003}),
    (LG, {"TTL": 600, "ID": -5}),
    (LG, {"TTL": "600", "ID": "1002"}),
    ("capture", LG, {"TTL": 600}, "rid"),
    put("l/1", "x", lease=1000),
    put("l/2", "x", lease=1000),
    put("l/3", "x", lease=1002),
    put("l/4", "x", lease="$rid"),
    put("l/2", "y"),
    put("l/5", "x", lease=4242),
    (LT, {"ID": 1000, "keys": True}),
    (LT, {"ID": 9999, "keys": True}),
    (LT, {}),
    (LL, {}),
    (LK, {"ID": 1000}),
    (LK, {"ID": 9999}),
    (LK, {}),
    (LR, {"ID": 1000}),
    rng("l/", "l0"),
    (LR, {"ID": 1000}),
    (LR, {}),
    (LR, {"ID": "$rid"}),
    rng("l/", "l0"),
    (LL, {}),
    # --- lease expiry: decided by the leader's clock, replicated as a revoke
    (LG, {"TTL": 1, "ID": 1001}),
    put("e/1", "x", lease=1001),
    put("e/2", "x", lease=1001),
    ("wait_gone", "e/1"),
    rng("e/", "e0"),
    (LT, {"ID": 1001}),
    # --- watch
    ("watch", "w1", [{"create_request": {"key": b("w/"), "range_end": b("w0"), "prev_kv": True}}]),
    put("w/1", "1"),
    put("w/2", "2"),
    txn([], [op_put("w/3", "3"), op_put("w/4", "4")]),
    put("w/1", "11"),
    (D, {"key": b("w/1")}),
    txn([], [op_del("w/3", "w/5"), op_put("w/2", "again")]),
    (D, {"key": b("w/2")}),
    ("wget", "w1"),
    ("watch", "w2", [{"create_request": {"key": b("w/"), "range_end": b("w0"), "start_revision": 3}}]),
    ("watch", "w3", [{"create_request": {"key": b("w/2"), "start_revision": 2, "filters": ["NOPUT"]}}]),
    ("watch", "w4", [{"create_request": {"key": b("w/"), "range_end": "AA==", "watch_id": 7}},
                     {"create_request": {"key": b("w/1"), "watch_id": 7}},
                     {"create_request": {"key": b("w/1")}},
                     {"create_request": {"key": b("w/9"), "range_end": b("w/1")}},
                     {"progress_request": {}},
                     {"cancel_request": {"watch_id": 0}},
                     {"cancel_request": {"watch_id": 55}},
                     {"create_request": {"key": b("w/5"), "prev_kv": True}},
                     b'{"create_request": {"key": "!!"}}',
                     {"create_request": {"key": b("w/6")}}]),
    put("w/5", "5"),
    put("w/5", "55"),
    put("w/6", "6"),
    ("wget", "w4"),
    ("wget", "w1"),
    ("watch", "w5", [b'{"create_request": {"key": "!!"}}']),
    ("watch", "w6", [b'{"create_request": '] ),
    ("watch", "w7", [b"[1]"]),
    # --- compaction
    ("compact_to_head", -3),
    ("compact_to_head", -3),
    (C, {"revision": 100000}),
    (C, {}),
    rng("a/1", revision=2),
    rng("w/", "w0", revision=-5),
    txn([], [op_range("a/1", revision=3)]),
    txn([], [op_range("a/1", revision=-5)]),
    ("watch", "w8", [{"create_request": {"key": b("w/"), "range_end": b("w0"), "start_revision": 2}}]),
    ("watch", "w9", [{"create_request": {"key": b("w/"), "range_end": b("w0"), "start_revision": -5}}]),
    (ST, {}),
    rng("\x00", "\x00", keys_only=True),
]


def by_watcher(resps: list[Any]) -> Any:
    """Each watcher's responses in order; how etcd interleaves two watchers of one stream is
    Go map order (it varies from run to run), so streams are compared watcher by watcher."""
    return norm(sorted(resps, key=lambda r: str(r.get("result", {}).get("watch_id", "0"))))


def served_locally(path: str, body: dict[str, Any]) -> bool:
    """etcd serves these without ReadIndex: a serializable range, and a txn whose ops are all
    serializable ranges (a txn with no ops at all is one)."""
    if path.endswith("/range"):
        return bool(body.get("serializable"))
    if path.endswith("/txn"):
        ops = body.get("success", []) + body.get("failure", [])
        return all(o.get("request_range", {}).get("serializable") for o in ops)
    return False


class Side:
    def __init__(self, name: str, addr: str) -> None:
        self.name = name
        self.addr = addr
        self.http = KvHttp(addr)
        self.env: dict[str, str] = {}
        self.watches: dict[str, WatchClient] = {}

    def call(self, path: str, body: Any) -> Any:
        st, resp = self.http.post(path, subst(body, self.env))
        return [st, self.unsubst(norm(resp))]

    def unsubst(self, resp: Any) -> Any:
        """Captured random ids read back as their names, so both sides compare equal."""
        text = json.dumps(resp)
        for k, v in self.env.items():
            text = text.replace(f'"{v}"', f'"${k}"')
        return json.loads(text)

    def head(self) -> int:
        _st, resp = self.http.post(R, {"key": b("x")})
        return int(resp["header"]["revision"])

    def close(self) -> None:
        for w in self.watches.values():
            w.close()
        self.http.close()


def run_step(step: tuple[Any, ...], sides: list[Side]) -> list[Any]:
    kind = step[0]
    if kind == "capture":
        out = []
        for s in sides:
            st, resp = s.http.post(step[1], step[2])
            s.env[step[3]] = resp["ID"]
            resp["ID"] = "<random>"
            out.append([st, norm(resp)])
        return out
    if kind == "wait_gone":
        deadline = time.time() + 10
        for s in sides:
            while time.time() < deadline and s.http.post(R, {"key": b(step[1])})[1].get("kvs"):
                time.sleep(0.1)
        return [s.call(R, {"key": b(step[1])}) for s in sides]
    if kind == "compact_to_head":
        return [s.call(C, {"revision": s.head() + step[1]}) for s in sides]
    if kind == "watch":
        for s in sides:
            s.head()  # a watch starts from what its member has applied: make that everything
            s.watches[step[1]] = w = WatchClient(s.addr, *step[2])
            first = w.get(5.0)  # the watch exists before the next write
            w.q.queue.appendleft(first)
        time.sleep(0.2)  # both sides get the same time to say more
        return [[s.watches[step[1]].status, by_watcher(s.watches[step[1]].drain(0.05))] for s in sides]
    if kind == "wget":
        for s in sides:
            s.head()  # a linearizable read: this member has applied every write so far
        time.sleep(0.2)
        return [by_watcher(s.watches[step[1]].drain(0.05)) for s in sides]
    path, body = step
    if isinstance(body, dict) and served_locally(path, body):
        for s in sides:
            s.head()  # served without ReadIndex: let the member catch up first
    out = [s.call(path, body) for s in sides]
    if path == LT:  # one second of clock skew between two lease clocks is fine
        ttls = [int(o[1].get("TTL", 0)) for o in out]
        if len(ttls) == 2 and min(ttls) >= 0 and abs(ttls[0] - ttls[1]) <= 1:
            for o in out:
                o[1]["TTL"] = "~"
    if path == LL:
        for o in out:
            o[1].get("leases", []).sort(key=lambda x: x["ID"])
    if path == ST:
        for o in out:
            o[1] = {"header": o[1]["header"], "fields": sorted(o[1]), "version": o[1]["version"]}
    return out


def test_scripted_sequence_matches_etcd(etcd: EtcdProcess, tmp_path: Path) -> None:
    n_requests = sum(1 for s in SCRIPT if s[0] not in ("wget", "wait_gone"))
    assert n_requests >= 100
    with local_cluster(tmp_path, 3, storage="memory") as c:
        leader = c.wait_leader()
        follower = next(n for n in c.ids if n != leader)
        sides = [Side("etcd", etcd.addr), Side("udpraft", c.http[follower])]
        mismatches = []
        try:
            for i, step in enumerate(SCRIPT):
                got = run_step(step, sides)
                if got[0] != got[1]:
                    mismatches.append(f"step {i} {str(step)[:200]}\n  etcd:    {json.dumps(got[0])[:1500]}"
                                      f"\n  udpraft: {json.dumps(got[1])[:1500]}")
        finally:
            for s in sides:
                s.close()
        assert not mismatches, f"{len(mismatches)} answers differ:\n" + "\n".join(mismatches)
