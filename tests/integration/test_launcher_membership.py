"""``python -m launcher`` grows and shrinks a running cluster: ``launcher ctl add-node`` and
``retire-node`` (the leader) while submits run, cluster.json kept current, nothing
acknowledged lost, the new node supervised like the others, and a restart of the launcher
on the same data dir (with the original ``--nodes``) coming back with the new membership.

Every process is found by pid (the launcher's children, the pids in the cluster files, any
process whose command line names the test's temp dir) and killed in a finally."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
import pytest

from tests.integration.test_launcher_cluster import (
    Launcher,
    alive_node,
    free_base_port,
    launcher_processes,
    one_leader,
    published,
    status,
    wait_for,
)
from udpraft.client.blocking import Client
from udpraft.config import load_cluster
from udpraft.errors import UdpRaftError

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Callable[..., Launcher]]:
    yield from launcher_processes(tmp_path)


def ctl(data: Path, *args: str, timeout_s: float = 120.0) -> dict[str, Any]:
    """``python -m launcher ctl --data-dir DATA ARGS`` in a subprocess (as a user runs it)."""
    cp = subprocess.run([sys.executable, "-m", "launcher", "ctl", "--data-dir", str(data), *args],
                        capture_output=True, text=True, timeout=timeout_s, cwd=ROOT)
    assert cp.returncode == 0, f"ctl {args}: rc {cp.returncode}\n{cp.stdout}\n{cp.stderr}"
    out: dict[str, Any] = json.loads(cp.stdout.strip().splitlines()[-1])
    return out


class Submitter(threading.Thread):
    """Submits continuously through the nodes the cluster file listed at its start."""

    def __init__(self, cluster_file: Path) -> None:
        super().__init__(daemon=True)
        self.cluster_file = cluster_file
        self.acked: list[tuple[int, bytes]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with Client.from_cluster_file(str(self.cluster_file)) as c:
            i = 0
            while not self.stop.is_set():
                data = b"m%d" % i
                i += 1
                try:
                    self.acked.append((c.submit(data, timeout=3.0).index, data))
                except UdpRaftError:
                    pass

    def more(self, n: int, timeout_s: float, what: str) -> None:
        start = len(self.acked)
        wait_for(lambda: len(self.acked) >= start + n, timeout_s, f"{n} submits {what}")


def node_procs(tmp_path: Path, node_id: str) -> list[int]:
    """Pids of live node processes of this test started with ``--id node_id``."""
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = p.info["cmdline"] or []
        if (str(tmp_path) in " ".join(cmd) and "udpraft.node" in cmd
                and cmd[cmd.index("--id") + 1:][:1] == [node_id] and alive_node(p.info["pid"])):
            found.append(int(p.info["pid"]))
    return found


def test_add_node_then_retire_the_leader_under_load_and_come_back(
    tmp_path: Path, launch: Callable[..., Launcher]
) -> None:
    data = tmp_path / "data"
    base = free_base_port(6)
    la = launch(data, "--nodes", "3", "--base-port", str(base), "--duration-s", "150")
    cluster_file = data / "cluster.json"
    cfg = wait_for(lambda: published(cluster_file), 20, f"cluster.json\n{la.output()}")
    wait_for(lambda: one_leader(cfg), 15, "a leader")
    sub = Submitter(cluster_file)
    sub.start()
    try:
        sub.more(200, 30, "before the changes")

        # add-node: n4, the next slot of the port scheme, supervised, a voter
        out = ctl(data, "add-node")
        assert out["ok"] and out["node"] == "n4", out
        assert out["udp"] == f"127.0.0.1:{base + 3}" and out["http"] == f"127.0.0.1:{base + 103}"
        assert sorted(out["voters"]) == ["n1", "n2", "n3", "n4"] and out["learners"] == []
        now = load_cluster(cluster_file)
        assert now.ids == ["n1", "n2", "n3", "n4"]
        assert now.initial_voters == ("n1", "n2", "n3")  # n4 joined: not an initial voter
        n4 = now.node("n4")
        assert n4.data_dir == str(data / "n4") and alive_node(n4.pid)
        wait_for(lambda: (status(n4.http) or {}).get("pid") == n4.pid, 10, "n4 answering")
        sub.more(100, 30, "with n4 a voter")

        # the launcher restarts n4 like any other node
        os.kill(n4.pid, signal.SIGKILL)

        def n4_back() -> bool:
            c = published(cluster_file)
            if c is None or c.node("n4").pid in (0, n4.pid):
                return False
            return (status(c.node("n4").http) or {}).get("pid") == c.node("n4").pid

        wait_for(n4_back, 20, f"n4 restarted\n{la.output()}")

        # retire-node of the leader: removed (committed), its process stopped for good
        leader = wait_for(lambda: one_leader(load_cluster(cluster_file)), 15, "a leader")
        old_pid = load_cluster(cluster_file).node(leader).pid
        out = ctl(data, "retire-node", leader)
        assert out["ok"] and out["node"] == leader and leader in out["removed"], out
        assert len(out["voters"]) == 3 and leader not in out["voters"]
        after = load_cluster(cluster_file)
        assert leader not in after.ids and "n4" in after.ids and len(after.ids) == 3
        assert after.initial_voters == ("n1", "n2", "n3")
        assert not alive_node(old_pid)
        assert (data / leader).is_dir()  # its data stays
        sub.more(100, 30, "after retiring the leader")
        time.sleep(1.0)
        assert node_procs(tmp_path, leader) == [], "a retired node was started again"
        # a removed id is never handed out again: the next is n5
        members = ctl(data, "members")
        assert leader in members["removed"]
    finally:
        sub.stop.set()
        sub.join(10)

    # nothing acknowledged was lost
    top = max(i for i, _ in sub.acked)
    with Client.from_cluster_file(str(cluster_file)) as c:
        got = {e.index: e.data for e in c.retrieve(1, timeout=20)}
    lost = [(i, d) for i, d in sub.acked if got.get(i) != d]
    assert not lost, f"{len(lost)} acknowledged entries lost, e.g. {lost[:3]}"
    assert len(sub.acked) >= 400 and top > 400

    # the same command again (original --nodes 3): the cluster as it is now
    la.proc.send_signal(signal.SIGTERM)
    assert la.wait(20) == 0
    ids_now = load_cluster(cluster_file).ids
    la2 = launch(data, "--nodes", "3", "--base-port", str(base), "--duration-s", "90")
    cfg2 = wait_for(lambda: published(cluster_file), 20, f"cluster.json again\n{la2.output()}")
    assert cfg2.ids == ids_now and leader not in cfg2.ids
    assert node_procs(tmp_path, leader) == []
    wait_for(lambda: one_leader(cfg2), 20, f"a leader after the restart\n{la2.output()}")
    with Client.from_cluster_file(str(cluster_file)) as c:
        got = {e.index: e.data for e in c.retrieve(1, timeout=20)}
        assert all(got.get(i) == d for i, d in sub.acked)
        assert c.submit(b"after the restart", timeout=10).index > top
    out = ctl(data, "add-node")
    assert out["node"] == "n5" and "n5" in out["voters"], out
    assert len(load_cluster(cluster_file).ids) == 4
    # a 4-node membership started with the original --nodes 3: accepted, with a note
    la2.proc.send_signal(signal.SIGTERM)
    assert la2.wait(20) == 0
    la3 = launch(data, "--nodes", "3", "--duration-s", "60")
    cfg3 = wait_for(lambda: published(cluster_file), 20, f"cluster.json, 3rd run\n{la3.output()}")
    assert cfg3.ids == [*ids_now, "n5"]
    assert "--nodes 3 ignored" in la3.output()
    wait_for(lambda: one_leader(cfg3), 20, f"a leader, 3rd run\n{la3.output()}")
    la3.proc.send_signal(signal.SIGTERM)
    assert la3.wait(20) == 0
    assert not any(alive_node(n.pid) for n in cfg3.nodes)
