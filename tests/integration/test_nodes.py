"""Real node processes on 127.0.0.1 (ephemeral ports), real UDP, real fsync."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from pathlib import Path

import pytest

from tests.helpers.procs import LocalCluster, local_cluster
from udpraft.client.aio import AsyncClient
from udpraft.client.blocking import Client

pytestmark = pytest.mark.integration


def _single_leader(c: LocalCluster) -> str:
    ld = c.wait_leader()
    time.sleep(0.3)
    leaders = [n for n in c.ids if (c.status(n) or {}).get("role") == "leader"]
    assert leaders == [ld], leaders
    return ld


@pytest.mark.parametrize("n", [3, 5])
def test_election_and_thousand_concurrent_submits(tmp_path: Path, n: int) -> None:
    with local_cluster(tmp_path, n) as c:
        _single_leader(c)

        async def run() -> list[int]:
            async with AsyncClient.from_cluster_file(str(c.cluster_file)) as ac:
                rs = await asyncio.gather(*(ac.submit(b"v%d" % i, timeout=20) for i in range(1000)))
                return [r.index for r in rs]

        idx = asyncio.run(run())
        assert len(set(idx)) == 1000
        with Client.from_cluster_file(str(c.cluster_file)) as cl:
            ents = cl.retrieve(1)
        datas = [e.data for e in ents]
        assert sorted(datas) == sorted(b"v%d" % i for i in range(1000))
        assert len(datas) == len(set(datas)) == 1000, "each payload exactly once"
        assert [e.index for e in ents] == sorted(e.index for e in ents)
        by_data = {e.data: e.index for e in ents}
        # every acknowledged index holds the payload that was acknowledged there
        assert sorted(by_data.values()) == sorted(idx)


def test_kill_leader_new_leader_nothing_lost(tmp_path: Path) -> None:
    with local_cluster(tmp_path, 3) as c, Client.from_cluster_file(str(c.cluster_file)) as cl:
        ld = _single_leader(c)
        acked = [cl.submit(b"before-%d" % i).index for i in range(50)]
        st = c.status(ld)
        assert st is not None
        t0 = time.time()
        c.kill(ld)
        new = c.wait_leader(among=[x for x in c.ids if x != ld], timeout=10)
        took = time.time() - t0
        assert new != ld
        # two election timeouts of the default config are 2 * (0.5..1.0 s)
        assert took < 2.5, f"new leader after {took:.2f}s"
        acked += [cl.submit(b"after-%d" % i).index for i in range(20)]
        c.start(ld)
        deadline = time.time() + 10
        while time.time() < deadline:
            s = c.status(ld)
            if s and s["applied_index"] >= max(acked):
                break
            time.sleep(0.1)
        else:
            raise AssertionError("restarted node did not catch up")
        ents = {e.index: e.data for e in cl.retrieve(1)}
        for idx in acked:
            assert idx in ents


@pytest.mark.parametrize("storage", ["file", "sqlite", "memory"])
def test_kill_all_restart_all(tmp_path: Path, storage: str) -> None:
    c = LocalCluster(tmp_path, 3, storage)
    try:
        c.start_all()
        c.wait_up()
        c.wait_leader()
        with Client.from_cluster_file(str(c.cluster_file)) as cl:
            acked = {cl.submit(b"p%d" % i).index: b"p%d" % i for i in range(100)}
        for nid in c.ids:
            c.kill(nid)
        c.start_all()
        c.wait_up()
        c.wait_leader()
        with Client.from_cluster_file(str(c.cluster_file)) as cl:
            got = {e.index: e.data for e in cl.retrieve(1, timeout=10)}
        if storage == "memory":
            assert got == {}, "the memory store keeps nothing across a crash"
        else:
            for idx, data in acked.items():
                assert got.get(idx) == data, f"acknowledged entry {idx} lost ({storage})"
    finally:
        c.stop_all()


def test_submits_commit_through_loss_and_delay(tmp_path: Path) -> None:
    with local_cluster(tmp_path, 3) as c, Client.from_cluster_file(str(c.cluster_file)) as cl:
        c.wait_leader()
        for nid in c.ids:
            c.post(nid, "/fault", {"drop_pct": 20, "delay_ms": 5, "jitter_ms": 5})
        acked = [cl.submit(b"lossy-%d" % i, timeout=20).index for i in range(60)]
        for nid in c.ids:
            c.post(nid, "/fault", {"heal": True})
        got = {e.index for e in cl.retrieve(1)}
        assert set(acked) <= got
        st = c.status(c.ids[0])
        assert st is not None and st["faults"]["all"]["drop_pct"] == 0


def test_garbage_forged_and_replayed_datagrams(tmp_path: Path) -> None:
    with local_cluster(tmp_path, 3) as c, Client.from_cluster_file(str(c.cluster_file)) as cl:
        ld = c.wait_leader()
        cl.submit(b"first")
        host, port = c.udp[ld].split(":")
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        # garbage
        for i in range(200):
            s.sendto(bytes([i % 256]) * (i + 1), (host, int(port)))
        # forged: a real client request sealed with the wrong key
        forged = Client([c.udp[ld]], secret=b"not-the-cluster-secret", cluster_id=cl.core.ctx.cluster_id)
        forged_req = forged.core.encode(forged.core.submit_request(1, [1], [b"evil"]))
        s.sendto(forged_req, (host, int(port)))
        # replayed: capture one of our own datagrams and send it again many times
        req = cl.core.submit_request(cl.core.new_req_id(), [cl.core.next_seq()], [b"once"])
        data = cl.core.encode(req)
        for _ in range(5):
            s.sendto(data, (host, int(port)))
        s.close()
        forged.close()
        time.sleep(0.5)
        assert cl.submit(b"still-working").index > 0
        st = c.status(ld)
        assert st is not None
        ctr = st["counters"]
        drops = sum(v for k, v in ctr.items() if k.startswith("transport_drop_"))
        assert drops >= 200, ctr
        assert ctr.get("transport_drop_bad_tag", 0) >= 1, ctr
        assert ctr.get("transport_duplicates", 0) + ctr.get("transport_replays", 0) >= 4, ctr
        datas = [e.data for e in cl.retrieve(1)]
        assert b"evil" not in datas
        assert datas.count(b"once") <= 1


def test_sigterm_stops_gracefully(tmp_path: Path) -> None:
    with local_cluster(tmp_path, 3) as c:
        c.wait_leader()
        p = c.procs["n1"]
        c.kill("n1", signal.SIGTERM)
        assert p.returncode == 0


def test_cli_submit_retrieve_status(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    with local_cluster(tmp_path, 3) as c:
        c.wait_leader()
        run = [sys.executable, "-m", "udpraft", "--cluster", str(c.cluster_file)]
        p = subprocess.run([*run, "submit", "hello"], capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr
        res = json.loads(p.stdout)
        assert res["index"] >= 1 and res["term"] >= 1
        p = subprocess.run([*run, "retrieve", "--start", "1"], capture_output=True, text=True, timeout=30)
        lines = [json.loads(x) for x in p.stdout.splitlines()]
        assert [x["data"] for x in lines] == ["hello"] and lines[0]["index"] == res["index"]
        p = subprocess.run([*run, "status"], capture_output=True, text=True, timeout=30)
        roles = sorted(json.loads(x)["role"] for x in p.stdout.splitlines())
        assert roles == ["follower", "follower", "leader"]
        p = subprocess.run([sys.executable, "-m", "udpraft", "--cluster", str(tmp_path / "nope.json"),
                            "status"], capture_output=True, text=True, timeout=30)
        assert p.returncode == 2 and "no cluster file" in p.stderr


def test_http_status_metrics_log_and_fault_errors(tmp_path: Path) -> None:
    import json
    import urllib.error
    import urllib.request

    with local_cluster(tmp_path, 3) as c, Client.from_cluster_file(str(c.cluster_file)) as cl:
        ld = c.wait_leader()
        for i in range(5):
            cl.submit(b"m%d" % i)
        st = c.status(ld)
        assert st is not None
        for k in ("id", "role", "term", "leader", "commit_index", "applied_index",
                  "last_log_index", "counters", "progress", "links", "events"):
            assert k in st, k
        assert set(st["progress"]) == set(c.ids) - {ld}
        with urllib.request.urlopen(f"http://{c.http[ld]}/metrics", timeout=2) as r:
            text = r.read().decode()
        assert "udpraft_is_leader{" in text and "udpraft_fsync_seconds_bucket" in text
        assert f'udpraft_commit_index{{node="{ld}"}}' in text
        with urllib.request.urlopen(f"http://{c.http[ld]}/log?tail=3", timeout=2) as r:
            tail = json.loads(r.read())
        assert [e["data"] for e in tail] == ["m2", "m3", "m4"] and all(e["committed"] for e in tail)
        for body in (b"{not json", b'{"drop_pct": 500}', b'{"peers": ["nobody"]}',
                     b'{"drop": 5}'):  # a misspelt field is refused, not ignored
            req = urllib.request.Request(f"http://{c.http[ld]}/fault", data=body, method="POST")
            with pytest.raises(urllib.error.HTTPError) as ei:
                urllib.request.urlopen(req, timeout=2)
            assert ei.value.code == 400
            assert "error" in json.loads(ei.value.read())


def test_node_exits_when_its_parent_is_killed(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    import psutil  # type: ignore[import-untyped]

    c = LocalCluster(tmp_path, 3)
    # a parent that starts node n1 with --exit-with-parent, prints its pid, then sleeps
    parent = subprocess.Popen(
        [sys.executable, "-c",
         "import subprocess, sys, time\n"
         f"p = subprocess.Popen([sys.executable, '-m', 'udpraft.node', '--id', 'n1', "
         f"'--cluster-config', {str(c.cluster_file)!r}, '--exit-with-parent'])\n"
         "print(p.pid, flush=True)\ntime.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True,
    )
    child = 0
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        deadline = time.time() + 10
        while c.status("n1") is None:
            assert time.time() < deadline, "node did not start"
            time.sleep(0.1)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(5)
        deadline = time.time() + 5
        while psutil.pid_exists(child) and psutil.Process(child).status() != psutil.STATUS_ZOMBIE:
            assert time.time() < deadline, "orphaned node kept running"
            time.sleep(0.1)
    finally:
        if parent.poll() is None:
            parent.kill()
        if child and psutil.pid_exists(child):
            os.kill(child, signal.SIGKILL)


def test_large_payloads_served_from_cold_columns_to_a_lagging_follower(tmp_path: Path) -> None:
    """Payloads >= core.columns.REF_MIN go to the leader's cold columns by reference. A
    follower paused through 20,000 of them catches up from those columns; retrieve reads them
    back on the leader and, after a leadership transfer, on the caught-up follower."""
    from udpraft.core.columns import REF_MIN
    from udpraft.core.log import FREEZE_CHUNK, HOT_ENTRIES

    n = HOT_ENTRIES + 4 * FREEZE_CHUNK  # several freezes behind the applied index

    def payload(i: int) -> bytes:
        return (b"%06d-" % i) * (REF_MIN // 7 + 1)  # >= REF_MIN, distinct per entry

    with local_cluster(tmp_path, 3) as c:
        ld = _single_leader(c)
        lag = next(x for x in c.ids if x != ld)
        c.kill(lag, signal.SIGSTOP)

        async def submit_all() -> dict[int, bytes]:
            acked: dict[int, bytes] = {}
            async with AsyncClient.from_cluster_file(str(c.cluster_file)) as ac:
                for lo in range(0, n, 1000):
                    rs = await asyncio.gather(*(ac.submit(payload(i), timeout=30) for i in range(lo, min(n, lo + 1000))))
                    acked.update({r.index: payload(i) for i, r in zip(range(lo, n), rs)})
            return acked

        try:
            acked = asyncio.run(submit_all())
        finally:
            c.kill(lag, signal.SIGCONT)
        with Client.from_cluster_file(str(c.cluster_file)) as cl:
            got = {e.index: e.data for e in cl.retrieve(1, timeout=30)}
            assert {i: got.get(i) for i in acked} == acked, "the leader's cold entries read back"
            last = max(acked)
            deadline = time.time() + 60
            while time.time() < deadline:
                st = c.status(lag)
                if st and st["applied_index"] >= last:
                    break
                time.sleep(0.2)
            else:
                raise AssertionError("the paused follower did not catch up")
            c.post(ld, "/transfer", {"target": lag})
            assert c.wait_leader(timeout=10, among=[lag]) == lag
            got = {e.index: e.data for e in cl.retrieve(1, timeout=30)}
        assert {i: got.get(i) for i in acked} == acked, "the follower got every payload intact"
