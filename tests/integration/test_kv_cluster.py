"""The etcd API on real udpraft node processes: any node answers, leases expire by the
leader's clock on every replica, watches stream, and leader loss is survived or reported."""

from __future__ import annotations

import base64
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.procs import LocalCluster, local_cluster
from tests.integration.conftest import KvHttp, WatchClient

pytestmark = pytest.mark.integration


def b(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def ub(s: str) -> str:
    return base64.b64decode(s).decode()


def value_of(resp: dict[str, Any]) -> str | None:
    kvs = resp.get("kvs") or []
    return ub(kvs[0].get("value", "")) if kvs else None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with local_cluster(tmp_path_factory.mktemp("kv3"), 3) as c:
        c.wait_leader()
        yield c


def clients(c: LocalCluster) -> dict[str, KvHttp]:
    return {n: KvHttp(c.http[n]) for n in c.ids}


def test_every_node_takes_writes_and_reads_are_linearizable(cluster: LocalCluster) -> None:
    hs = clients(cluster)
    leader = cluster.wait_leader()
    for i in range(30):
        writer = cluster.ids[i % 3]
        st, resp = hs[writer].post("/v3/kv/put", {"key": b("lin"), "value": b(f"v{i}")})
        assert st == 200, resp
        rev = int(resp["header"]["revision"])
        for reader in cluster.ids:  # a put acknowledged by one node is seen by all, at once
            st, got = hs[reader].post("/v3/kv/range", {"key": b("lin")})
            assert st == 200 and value_of(got) == f"v{i}", (writer, reader, got)
            assert int(got["header"]["revision"]) >= rev
    st, got = hs[leader].post("/v3/kv/range", {"key": b("lin"), "serializable": True})
    assert value_of(got) == "v29"
    # the header names the member asked, as etcd's does, even for a forwarded write
    follower = next(n for n in cluster.ids if n != leader)
    _, r1 = hs[follower].post("/v3/kv/put", {"key": b("who"), "value": b("1")})
    _, r2 = hs[leader].post("/v3/kv/put", {"key": b("who"), "value": b("2")})
    assert r1["header"]["member_id"] != r2["header"]["member_id"]
    assert r1["header"]["cluster_id"] == r2["header"]["cluster_id"]
    for h in hs.values():
        h.close()


def test_lease_expiry_deletes_keys_on_every_node(cluster: LocalCluster) -> None:
    hs = clients(cluster)
    leader = cluster.wait_leader()
    f1, f2 = [n for n in cluster.ids if n != leader]
    assert hs[f1].post("/v3/lease/grant", {"ID": 501, "TTL": 2})[0] == 200
    assert hs[f1].post("/v3/lease/grant", {"ID": 502, "TTL": 2})[0] == 200
    for k, lid in (("exp/a", 501), ("exp/b", 501), ("keep/a", 502)):
        st, resp = hs[f2].post("/v3/kv/put", {"key": b(k), "value": b("x"), "lease": lid})
        assert st == 200, resp
    # keep 502 alive through a follower (keepalives are forwarded to the leader's clock)
    t0 = time.time()
    gone_at = None
    while time.time() - t0 < 6:
        st, lines = hs[f1].post("/v3/lease/keepalive", {"ID": 502})
        assert st == 200 and lines[0]["result"]["TTL"] == "2", lines
        everywhere = [hs[n].post("/v3/kv/range", {"key": b("exp/"), "range_end": b("exp0"),
                                                 "serializable": True})[1] for n in cluster.ids]
        if gone_at is None and all(not r.get("kvs") for r in everywhere):
            gone_at = time.time() - t0
        time.sleep(0.4)
    assert gone_at is not None and 1.5 < gone_at < 4.5, gone_at
    for n in cluster.ids:  # the same revision everywhere: the expiry was one log entry
        got = hs[n].post("/v3/kv/range", {"key": b("keep/a")})[1]
        assert value_of(got) == "x", (n, got)
    revs = {hs[n].post("/v3/kv/range", {"key": b("exp/a"), "serializable": True})[1]["header"]["revision"]
            for n in cluster.ids}
    assert len(revs) == 1, revs
    st, ttl = hs[f2].post("/v3/lease/timetolive", {"ID": 501})
    assert st == 200 and ttl["TTL"] == "-1"
    st, ttl = hs[f2].post("/v3/lease/timetolive", {"ID": 502, "keys": True})
    assert ttl["grantedTTL"] == "2" and ttl["keys"] == [b("keep/a")]
    assert hs[f1].post("/v3/lease/revoke", {"ID": 502})[0] == 200
    assert not hs[f2].post("/v3/kv/range", {"key": b("keep/a")})[1].get("kvs")
    for h in hs.values():
        h.close()


def test_watch_on_a_follower_streams_every_event(cluster: LocalCluster) -> None:
    leader = cluster.wait_leader()
    follower = next(n for n in cluster.ids if n != leader)
    hs = clients(cluster)
    _, r = hs[leader].post("/v3/kv/put", {"key": b("wt/0"), "value": b("zero")})
    start = int(r["header"]["revision"])
    w = WatchClient(cluster.http[follower],
                    {"create_request": {"key": b("wt/"), "range_end": b("wt0"), "prev_kv": True,
                                        "start_revision": start}})
    try:
        created = w.get()
        assert created["result"]["created"] is True
        for i in range(1, 41):
            hs[cluster.ids[i % 3]].post("/v3/kv/put", {"key": b(f"wt/{i % 4}"), "value": b(str(i))})
        hs[leader].post("/v3/kv/deleterange", {"key": b("wt/"), "range_end": b("wt0")})
        events: list[dict[str, Any]] = []
        deadline = time.time() + 10
        while len(events) < 45 and time.time() < deadline:
            events += w.get(5.0)["result"].get("events", [])
        assert len(events) == 45  # wt/0 itself, 40 puts, 4 deletes
        assert [ub(e["kv"]["value"]) for e in events[:41]] == ["zero", *map(str, range(1, 41))]
        revs = [int(e["kv"]["mod_revision"]) for e in events]
        assert revs == sorted(revs) and revs[0] == start
        assert all(e.get("type") == "DELETE" for e in events[41:])
        assert ub(events[41]["prev_kv"]["value"]) in {"37", "38", "39", "40"}
    finally:
        w.close()
        for h in hs.values():
            h.close()


def test_leader_loss_writes_resume_and_no_quorum_is_a_retryable_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UDPRAFT_KV_TIMEOUT_S", "2")
    with local_cluster(tmp_path, 3) as c:
        leader = c.wait_leader()
        survivors = [n for n in c.ids if n != leader]
        acked: dict[str, str] = {}
        errors: list[Any] = []
        stop = threading.Event()

        def writer(node: str) -> None:
            h = KvHttp(c.http[node])
            i = 0
            while not stop.is_set():
                k = f"{node}/{i}"
                st, resp = h.post("/v3/kv/put", {"key": b(k), "value": b(str(i))})
                if st == 200:
                    acked[k] = str(i)
                else:
                    errors.append((st, resp))
                    assert st == 503 and resp["code"] == 14, resp  # retryable, never a hang
                i += 1
            h.close()

        threads = [threading.Thread(target=writer, args=(n,)) for n in survivors]
        for t in threads:
            t.start()
        time.sleep(1.0)
        before = len(acked)
        c.kill(leader)
        t_kill = time.time()
        new = c.wait_leader(among=survivors, timeout=10)
        while len(acked) < before + 50 and time.time() - t_kill < 10:
            time.sleep(0.05)
        stop.set()
        for t in threads:
            t.join(15)
        assert len(acked) >= before + 50, "writes did not resume on the new leader"
        h = KvHttp(c.http[new])
        for k, v in acked.items():  # nothing acknowledged was lost
            assert value_of(h.post("/v3/kv/range", {"key": b(k)})[1]) == v, k
        # now kill one more: no quorum. Every request ends with a 503 within the timeout.
        other = next(n for n in survivors if n != new)
        c.kill(new)
        lone = KvHttp(c.http[other], timeout=10)
        for path, body in (("/v3/kv/put", {"key": b("nq"), "value": b("x")}),
                           ("/v3/kv/range", {"key": b("nq")}),
                           ("/v3/lease/keepalive", {"ID": 1})):
            t0 = time.time()
            st, resp = lone.post(path, body)
            took = time.time() - t0
            if "error" in resp and isinstance(resp["error"], dict):  # a stream's error line
                resp = {"code": resp["error"]["grpc_code"]}
            assert st == 503 and resp["code"] == 14, (path, st, resp)
            assert took < 4.0, (path, took)
        st, resp = lone.post("/v3/kv/range", {"key": b(next(iter(acked))), "serializable": True})
        assert st == 200 and resp.get("kvs"), resp  # a serializable read is served locally
        lone.close()
        h.close()
        # an open watch does not hold up a graceful stop
        w = WatchClient(c.http[other], {"create_request": {"key": b("z")}})
        assert w.get()["result"]["created"]
        t0 = time.time()
        c.kill(other, signal.SIGTERM)
        assert time.time() - t0 < 5.0
        w.close()
