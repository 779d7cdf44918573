"""Membership changes with real node processes: replace a killed node while submits run,
remove the leader, and the HTTP/CLI surface with its refusals."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.procs import LocalCluster
from udpraft.admin import Admin, MembershipError
from udpraft.client.blocking import Client
from udpraft.errors import Compacted, UdpRaftError

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


class Submitter(threading.Thread):
    """Submits continuously; records every acknowledged (index, payload)."""

    def __init__(self, cluster_file: str) -> None:
        super().__init__(daemon=True)
        self.cluster_file = cluster_file
        self.acked: list[tuple[int, bytes]] = []
        self.failed = 0
        self.stop = threading.Event()

    def run(self) -> None:
        with Client.from_cluster_file(self.cluster_file) as cl:
            i = 0
            while not self.stop.is_set():
                data = b"s%d" % i
                i += 1
                try:
                    self.acked.append((cl.submit(data, timeout=3.0).index, data))
                except UdpRaftError:
                    self.failed += 1


def wait_for(pred: Any, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def entries_of(c: LocalCluster, upto: int) -> dict[int, bytes]:
    """Entries up to ``upto``, from the first index the log still holds (with snapshots,
    retrieve(1) raises Compacted naming it)."""
    with Client.from_cluster_file(str(c.cluster_file)) as cl:
        try:
            ents = cl.retrieve(1, timeout=20.0)
        except Compacted as e:
            ents = cl.retrieve(e.first_index, timeout=20.0)
        return {e.index: e.data for e in ents if e.index <= upto}


@pytest.mark.parametrize("snapshots", [False, True])
def test_replace_a_killed_node_while_submits_run(tmp_path: Path, snapshots: bool) -> None:
    # With snapshots every 200 entries the new node catches up by snapshot, which must carry
    # the membership (it holds no CONFIG entry from before it). Without, every acknowledged
    # entry stays retrievable, so the check below covers all of them.
    extra = ["--snapshot-entries", "200"] if snapshots else []
    c = LocalCluster(tmp_path, 3, "file", extra_args=extra)
    sub = Submitter(str(c.cluster_file))
    try:
        c.start_all()
        c.wait_up()
        c.wait_leader()
        sub.start()
        wait_for(lambda: len(sub.acked) > 600, 30, "600 acknowledged submits")
        ld = c.wait_leader()
        victim = next(n for n in ("n3", "n2") if n != ld)
        c.kill(victim)  # kill -9: the machine died
        udp, http = c.add_node("n4")
        c.start("n4")
        adm = Admin.from_cluster_file(str(c.cluster_file))
        out = adm.add("n4", udp, http, catch_up_s=30)
        assert "n4" in out["membership"]["voters"], out
        out = adm.remove(victim)
        mem = out["membership"]
        assert sorted(mem["voters"]) == sorted({"n1", "n2", "n3", "n4"} - {victim})
        assert victim in mem["removed"] and mem["members"]["n4"]["udp"] == udp
        n_before = len(sub.acked)
        wait_for(lambda: len(sub.acked) > n_before + 300, 30, "submits after the change")
        # The new member counts: with it, the cluster survives losing one more old node.
        other = next(n for n in ("n1", "n2", "n3") if n not in (victim,) and n != c.wait_leader())
        c.kill(other)
        n_before = len(sub.acked)
        wait_for(lambda: len(sub.acked) > n_before + 100, 30, "submits with n4 in the quorum")
        sub.stop.set()
        sub.join(10)
        st4 = c.status("n4")
        assert st4 is not None
        if snapshots:
            assert st4["counters"].get("snapshots_installed", 0) >= 1, "n4 caught up by snapshot"
        # Nothing acknowledged was lost on the surviving nodes (with snapshots: from the
        # first index still in the log; retrieve says where that is).
        top = max(i for i, _ in sub.acked)
        got = entries_of(c, top)
        first = min(got) if snapshots else 1
        assert first <= top - 100, (first, top)
        checked = 0
        for idx, data in sub.acked:
            if idx >= first:
                assert got.get(idx) == data, f"acknowledged entry {idx} lost"
                checked += 1
        assert checked >= 100
        # Everyone (the new node included) agrees on the membership after a restart.
        c.start(other)
        for n in ("n1", "n2", "n3", "n4"):
            if n != victim:
                c.kill(n)
        for n in ("n1", "n2", "n3", "n4"):
            if n != victim:
                c.start(n)
        ld = c.wait_leader(15, among=[n for n in c.ids if n != victim])
        st = c.status(ld)
        assert st is not None
        assert sorted(st["membership"]["voters"]) == sorted({"n1", "n2", "n3", "n4"} - {victim})
        with Client.from_cluster_file(str(c.cluster_file)) as cl:
            assert cl.submit(b"after restart", timeout=10).index > top
    finally:
        sub.stop.set()
        c.stop_all()


def post(http: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(f"http://{http}/members", data=json.dumps(body).encode(),
                                 method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_remove_the_leader_and_the_refusals(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path, 3, "file")
    try:
        c.start_all()
        c.wait_up()
        ld = c.wait_leader()
        follower = next(n for n in c.ids if n != ld)
        # A follower points at the leader.
        code, got = post(c.http[follower], {"op": "remove", "id": ld})
        assert code == 421 and got["leader"] == ld and got["leader_http"] == c.http[ld]
        # Nonsense is refused with a reason.
        for body, want in [
            ({"op": "frob", "id": "n9"}, "unknown membership change"),
            ({"op": "add_learner", "id": "n9"}, "needs the new node's udp and http"),
            ({"op": "add_learner", "id": "n9", "udp": "nohost", "http": "127.0.0.1:1"}, "bad address"),
            ({"op": "add_learner", "id": "n9", "udp": c.udp[follower], "http": "127.0.0.1:1"},
             "belongs to another member"),
            ({"op": "remove", "id": "n9"}, "not a member"),
            ({"op": "promote", "id": "n2", "udp": "127.0.0.1:1"}, "takes no addresses"),
            ({"id": "n9"}, "want"),
        ]:
            code, got = post(c.http[ld], body)
            assert code == 400 and want in got["error"], (body, code, got)
        with Client.from_cluster_file(str(c.cluster_file)) as cl:
            acked = [cl.submit(b"a%d" % i).index for i in range(50)]
        adm = Admin.from_cluster_file(str(c.cluster_file))
        # A change the new configuration could not commit is refused unless forced: with a
        # follower down, a fourth voter that is not running would need 3 of 4 up.
        other = next(n for n in c.ids if n not in (ld, follower))
        c.kill(other)
        time.sleep(1.2)  # longer than ACTIVE_S: the leader no longer counts it as up
        with pytest.raises(MembershipError, match="must be up to commit"):
            adm.change("add_voter", "n9", "127.0.0.1:9", "127.0.0.1:10")
        c.start(other)
        wait_for(lambda: (c.status(other) or {}).get("commit_index", 0) >= max(acked), 10,
                 "the restarted follower")
        # Three voters down to two is refused unless forced (no failure tolerated).
        with pytest.raises(MembershipError, match="leaves two voters"):
            adm.remove(ld)
        # Remove the leader: it commits its own removal, steps down, the others elect.
        out = adm.remove(ld, force=True)
        assert ld in out["membership"]["removed"]
        rest = [n for n in c.ids if n != ld]
        new = c.wait_leader(10, among=rest)
        assert new != ld
        wait_for(lambda: (c.status(ld) or {}).get("role") != "leader", 10, "the old leader to step down")
        secret = (tmp_path / "secret").read_bytes().strip()
        cid = json.loads(c.cluster_file.read_text())["cluster"]
        with Client([c.udp[n] for n in rest], secret=secret, cluster_id=cid) as cl:
            r = cl.submit(b"after removal", timeout=10)
        assert r.index > max(acked)
        # The removed id is gone for good; the two-voter cluster keeps working.
        with pytest.raises(MembershipError, match="never reused"):
            adm.add_learner(ld, "127.0.0.1:1", "127.0.0.1:2")
        # The CLI lists the membership.
        cp = subprocess.run(
            [sys.executable, "-m", "udpraft", "--cluster", str(c.cluster_file), "member", "list"],
            capture_output=True, text=True, timeout=30, cwd=ROOT,
        )
        assert cp.returncode == 0, cp.stderr
        listed = json.loads(cp.stdout)
        assert sorted(listed["voters"]) == sorted(rest) and listed["removed"] == [ld]
    finally:
        c.stop_all()
