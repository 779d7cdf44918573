"""Snapshots with real node processes: periodic snapshots bound the stored log, a follower
whose data dir was wiped catches up by snapshot, and a kill -9 of every node loses nothing
that was acknowledged (log entries after the snapshot, sessions, KV state before it)."""

from __future__ import annotations

import base64
import os
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.procs import LocalCluster
from udpraft.client.blocking import Client
from udpraft.client.core import cluster_file_args
from udpraft.wire import ClientKind

pytestmark = pytest.mark.integration
EVERY = 50


def wait_for(what: str, fn: Any, timeout: float = 20.0) -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def node_client(c: LocalCluster, nid: str) -> Client:
    """A client that talks to ``nid`` only."""
    args = cluster_file_args(str(c.cluster_file))
    return Client(**{**args, "nodes": {nid: args["nodes"][nid]}})


def stored_log(c: LocalCluster, nid: str) -> tuple[int, int]:
    """(first index, number of entries) of the node's stored log, read from its files."""
    d = c.dir / nid
    if c.storage == "sqlite":
        db = sqlite3.connect(f"file:{d / 'log.sqlite3'}?mode=ro", uri=True)
        try:
            lo, n = db.execute("SELECT MIN(idx), COUNT(*) FROM log").fetchone()
        finally:
            db.close()
        return int(lo or 0), int(n)
    segs = sorted(n for n in os.listdir(d / "wal") if n.startswith("wal-"))
    assert len(segs) <= 3, f"{nid}: segments pile up: {segs}"
    return int(segs[0][4:24]), -1


def applied(c: LocalCluster, nid: str) -> int:
    st = c.status(nid)
    return int(st["applied_index"]) if st else -1


def raw_retrieve(cl: Client, start: int) -> dict[str, Any]:
    req = cl.core.simple_request(ClientKind.RETRIEVE, cl.core.new_req_id(), {"start": start})
    body: dict[str, Any] = cl._call(req, 5.0).body
    return body


@pytest.mark.parametrize("storage", ["file", "sqlite"])
def test_snapshots_compaction_catch_up_and_crash_recovery(tmp_path: Path, storage: str) -> None:
    c = LocalCluster(tmp_path, 3, storage, extra_args=["--snapshot-entries", str(EVERY)])
    def b64(s: str) -> str:
        return base64.b64encode(s.encode()).decode()

    try:
        c.start_all()
        c.wait_up()
        ld = c.wait_leader()
        kv = c.post(ld, "/v3/kv/put", {"key": b64("early"), "value": b64("kept")})
        assert "header" in kv, kv
        t0 = time.time()
        with Client.from_cluster_file(str(c.cluster_file)) as cl:
            acked = {}
            for i in range(500):
                r = cl.submit(b"a%d" % i)
                acked[r.index] = b"a%d" % i
                if i == 9:
                    early = (cl.core.client_id, 10, r.index, r.term, b"a9")
        t_submit = time.time() - t0
        top = max(acked)
        wait_for("all applied", lambda: all(applied(c, n) >= top for n in c.ids))

        # 1. every node snapshots and its stored log stays bounded
        for nid in c.ids:
            st = wait_for(f"{nid} snapshot", lambda n=nid: (
                (s := c.status(n)) and s["snapshot"]["index"] >= top - 2 * EVERY and s))
            snaps = [n for n in os.listdir(tmp_path / nid / "snapshots") if n.startswith("snap-")]
            assert 1 <= len(snaps) <= 2, snaps
            first, rows = stored_log(c, nid)
            assert first > 1, f"{nid}: stored log never compacted"
            assert top - first < 4 * EVERY + 50, (nid, first, top)
            if rows >= 0:
                assert rows < 4 * EVERY + 50, (nid, rows)
            # the log (memory and disk) keeps what follows the second-newest snapshot
            assert st["snapshot"]["index"] - 2 * EVERY < st["first_log_index"]
            assert st["first_log_index"] <= st["snapshot"]["index"] + 1

        # 2. a follower loses everything and catches up by snapshot
        f = next(n for n in c.ids if n != c.wait_leader())
        c.kill(f)
        with Client.from_cluster_file(str(c.cluster_file)) as cl:
            for i in range(500):
                acked[cl.submit(b"b%d" % i).index] = b"b%d" % i
        top = max(acked)
        shutil.rmtree(tmp_path / f)
        t0 = time.time()
        c.start(f)
        wait_for(f"{f} caught up", lambda: applied(c, f) >= top, 30)
        t_catch_up = time.time() - t0
        st = c.status(f)
        assert st is not None and st["counters"].get("snapshots_installed", 0) >= 1, st
        snap_f = st["snapshot"]["index"]
        assert snap_f > 500
        with node_client(c, f) as cl:
            got = {e.index: e.data for e in cl.retrieve(snap_f + 1, timeout=10)}
            for idx, data in acked.items():
                if idx > snap_f:
                    assert got.get(idx) == data, f"entry {idx} missing on {f} after catch-up"
            body = raw_retrieve(cl, 1)
            assert body["compacted_before"] == snap_f + 1, body.get("compacted_before")
            assert body["entries"] and body["entries"][0][0] >= snap_f + 1

        # 3. kill -9 everyone: acknowledged entries after the snapshots, the sessions and
        #    the KV state (written before them, so only in the snapshot) all survive
        with Client.from_cluster_file(str(c.cluster_file)) as cl:
            for i in range(EVERY // 2 + 7):  # a tail that no snapshot covers yet, somewhere
                acked[cl.submit(b"c%d" % i).index] = b"c%d" % i
        top = max(acked)
        for nid in c.ids:
            c.kill(nid)
        t0 = time.time()
        c.start_all()
        c.wait_up()
        c.wait_leader(timeout=15)
        wait_for("all recovered", lambda: all(applied(c, n) >= top for n in c.ids), 30)
        t_recover = time.time() - t0
        firsts = {}
        for nid in c.ids:  # each node has its own snapshot point: ask each about its own log
            with node_client(c, nid) as cl:
                first = int(raw_retrieve(cl, 1).get("compacted_before", 1))
                got = {e.index: e.data for e in cl.retrieve(first, timeout=10)}
            assert first > 1
            firsts[nid] = first
            for idx, data in acked.items():
                if idx >= first:
                    assert got.get(idx) == data, f"{nid}: acknowledged {idx} lost ({storage})"
        assert any(top - f > 5 for f in firsts.values()), ("no node replayed its log", firsts)
        first = min(firsts.values())
        cid, seq, index, term, data = early
        assert index < first, "the early submit only lives on in the snapshot's sessions"
        with Client.from_cluster_file(str(c.cluster_file), client_id=cid) as cl:
            req = cl.core.submit_request(cl.core.new_req_id(), [seq], [data])
            resp = cl._call(req, 5.0)
        assert resp.body["done"] == [[seq, index, term]], "the retry was deduplicated"
        for nid in c.ids:
            rng = c.post(nid, "/v3/kv/range", {"key": b64("early")})
            assert [kv["value"] for kv in rng.get("kvs", [])] == [b64("kept")], (nid, rng)
        print(f"\n[{storage}] 500 submits {t_submit:.2f}s, wiped follower caught up in "
              f"{t_catch_up:.2f}s (snapshot {snap_f}), kill-all recovery {t_recover:.2f}s")
    finally:
        c.stop_all()
