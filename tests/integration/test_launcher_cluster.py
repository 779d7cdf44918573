"""``python -m launcher`` with real node processes: start, elect, restart, stop, reuse, chaos.

Every process is found by pid (the launcher's own, the pids in cluster.json, and any process
whose command line names the test's temp dir) and killed in a finally, even on failure.
"""

from __future__ import annotations

import http.client
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import psutil  # type: ignore[import-untyped]
import pytest

from launcher import layout
from launcher.cluster import ClusterSupervisor, SupervisorOptions
from launcher.ctl import main as ctl_main
from udpraft.client.blocking import Client
from udpraft.config import ClusterConfig, load_cluster

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------ helpers


def free_base_port(nodes: int) -> int:
    """A base port P with P..P+N-1 (udp+tcp) and P+100..P+100+N-1 free right now, found by
    binding each. P is drawn below the kernel's ephemeral range: a port the kernel lends to
    outgoing connections (every HTTP poll takes one) could be taken when a node binds it."""
    lo, _ = layout.ephemeral_range()
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    for _ in range(200):
        base = rng.randrange(10_000, max(10_001, lo - layout.DASHBOARD_PORT_OFFSET - nodes))
        ports = [base + i for i in range(nodes)]
        ports += [base + layout.HTTP_PORT_OFFSET + i for i in range(nodes)]
        if all(layout.port_is_free("127.0.0.1", p, k) for p in ports for k in ("udp", "tcp")):
            return base
    raise RuntimeError("no free port range")


def status(addr: tuple[str, int], timeout_s: float = 0.5) -> dict[str, Any] | None:
    conn = http.client.HTTPConnection(addr[0], addr[1], timeout=timeout_s)
    try:
        conn.request("GET", "/status")
        resp = conn.getresponse()
        body = resp.read()
        st = orjson.loads(body) if resp.status == 200 else None
        return st if isinstance(st, dict) else None
    except (OSError, http.client.HTTPException, orjson.JSONDecodeError):
        return None
    finally:
        conn.close()


def wait_for(cond: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def published(cluster_file: Path) -> ClusterConfig | None:
    """cluster.json once it exists with every pid set."""
    try:
        cfg = load_cluster(cluster_file)
    except (OSError, ValueError):
        return None
    return cfg if all(n.pid for n in cfg.nodes) else None


def one_leader(cfg: ClusterConfig) -> str | None:
    """The leader, if every node answers, exactly one says it leads, and all agree."""
    sts = [status(n.http) for n in cfg.nodes]
    if any(s is None for s in sts):
        return None
    leaders = [s["id"] for s in sts if s and s["role"] == "leader"]
    if len(leaders) != 1 or {s["leader"] for s in sts if s} != set(leaders):
        return None
    return str(leaders[0])


def alive_node(pid: int) -> bool:
    try:
        p = psutil.Process(pid)
        return p.status() != psutil.STATUS_ZOMBIE and "udpraft.node" in " ".join(p.cmdline())
    except psutil.Error:
        return False


class Launcher:
    """One ``python -m launcher`` subprocess, its output in a file."""

    def __init__(self, data_dir: Path, args: list[str]) -> None:
        self.data_dir = data_dir
        self.out_path = data_dir.parent / f"launcher-{time.monotonic_ns()}.out"
        self.out = open(self.out_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "launcher", "--data-dir", str(data_dir), *args],
            stdout=self.out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT,
        )

    def output(self) -> str:
        return self.out_path.read_text(errors="replace")

    def wait(self, timeout_s: float) -> int:
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"launcher still running:\n{self.output()}") from None


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Callable[..., Launcher]]:
    yield from launcher_processes(tmp_path)


def launcher_processes(tmp_path: Path) -> Iterator[Callable[..., Launcher]]:
    """Yields a function that starts ``python -m launcher``; afterwards kills, by pid, every
    launcher it started, their nodes, and any process naming ``tmp_path``."""
    started: list[Launcher] = []

    def start(data_dir: Path, *args: str) -> Launcher:
        la = Launcher(data_dir, list(args))
        started.append(la)
        return la

    try:
        yield start
    finally:
        pids: set[int] = set()
        for la in started:
            try:
                pids |= {c.pid for c in psutil.Process(la.proc.pid).children(recursive=True)}
            except psutil.Error:
                pass
            for f in (layout.CLUSTER_FILE, layout.BOOT_FILE):
                try:
                    pids |= {n.pid for n in load_cluster(la.data_dir / f).nodes if n.pid}
                except (OSError, ValueError):
                    pass
            if la.proc.poll() is None:
                la.proc.send_signal(signal.SIGTERM)
                try:
                    la.proc.wait(8)
                except subprocess.TimeoutExpired:
                    la.proc.kill()
                    la.proc.wait()
            la.out.close()
        for p in psutil.process_iter(["pid", "cmdline"]):
            if str(tmp_path) in " ".join(p.info["cmdline"] or []):
                pids.add(p.info["pid"])
        for pid in pids:
            if alive_node(pid):
                os.kill(pid, signal.SIGKILL)


# ------------------------------------------------------------------------ tests


def test_start_restart_stop_and_come_back(tmp_path: Path, launch: Callable[..., Launcher]) -> None:
    data = tmp_path / "data"
    base = free_base_port(3)
    la = launch(data, "--nodes", "3", "--base-port", str(base), "--duration-s", "90")
    cluster_file = data / "cluster.json"
    cfg = wait_for(lambda: published(cluster_file), 20, f"cluster.json\n{la.output()}")

    # the file: ports from the base port, data dirs, dashboard, private secret
    assert cfg.ids == ["n1", "n2", "n3"]
    assert [n.udp for n in cfg.nodes] == [("127.0.0.1", base + i) for i in range(3)]
    assert [n.http for n in cfg.nodes] == [("127.0.0.1", base + 100 + i) for i in range(3)]
    assert [n.data_dir for n in cfg.nodes] == [str(data / f"n{i}") for i in (1, 2, 3)]
    assert cfg.dashboard == f"http://127.0.0.1:{base + 1079}/"
    assert (data / "secret").stat().st_mode & 0o777 == 0o600
    first_pids = [n.pid for n in cfg.nodes]
    assert all(alive_node(p) for p in first_pids)
    for n in cfg.nodes:
        st = status(n.http)
        assert st is not None and st["id"] == n.id and st["pid"] == n.pid

    wait_for(lambda: one_leader(cfg), 15, "exactly one leader")
    with Client.from_cluster_file(str(cluster_file)) as c:
        acked = [c.submit(b"launcher-%d" % i, timeout=10).index for i in range(3)]

    # kill -9 from outside: restarted, new pid in cluster.json, answering
    victim = cfg.node("n2")
    os.kill(victim.pid, signal.SIGKILL)

    def restarted() -> ClusterConfig | None:
        now = published(cluster_file)
        if now is None or now.node("n2").pid == victim.pid:
            return None
        st = status(now.node("n2").http)
        return now if st and st["pid"] == now.node("n2").pid else None

    cfg2 = wait_for(restarted, 15, f"n2 restarted\n{la.output()}")
    assert alive_node(cfg2.node("n2").pid)
    assert [n.pid for n in cfg2.nodes if n.id != "n2"] == [first_pids[0], first_pids[2]]
    assert "n2 restarted as pid" in la.output()

    # SIGTERM: everything stops, nothing is left behind
    la.proc.send_signal(signal.SIGTERM)
    assert la.wait(15) == 0
    for pid in [*first_pids, cfg2.node("n2").pid]:
        assert not alive_node(pid), f"node pid {pid} survived the launcher"
    assert all(n.pid == 0 for n in load_cluster(cluster_file).nodes)

    # the same command again: same cluster, same ports, same committed entries
    la2 = launch(data, "--nodes", "3", "--base-port", str(base), "--duration-s", "90")
    cfg3 = wait_for(lambda: published(cluster_file), 20, f"cluster.json again\n{la2.output()}")
    assert cfg3.cluster == cfg.cluster
    assert [(n.id, n.udp, n.http) for n in cfg3.nodes] == [(n.id, n.udp, n.http) for n in cfg.nodes]
    wait_for(lambda: one_leader(cfg3), 15, "a leader after the restart")
    with Client.from_cluster_file(str(cluster_file)) as c:
        entries = c.retrieve(1, timeout=10)
    by_index = {e.index: e.data for e in entries}
    assert [by_index.get(i) for i in acked] == [b"launcher-0", b"launcher-1", b"launcher-2"]
    la2.proc.send_signal(signal.SIGINT)  # Ctrl-C works too
    assert la2.wait(15) == 0
    assert not any(alive_node(n.pid) for n in cfg3.nodes)


def test_short_chaos_run(tmp_path: Path, launch: Callable[..., Launcher]) -> None:
    # seed 7 on 3 nodes opens with: kill, partition, kill_leader (launcher.nemesis)
    data = tmp_path / "data"
    base = free_base_port(3)
    la = launch(data, "--nodes", "3", "--base-port", str(base), "--chaos", "--seed", "7",
                "--duration-s", "10")
    cfg = wait_for(lambda: published(data / "cluster.json"), 20, f"cluster.json\n{la.output()}")
    pids = {n.pid for n in cfg.nodes}
    assert la.wait(30) == 0
    out = la.output()
    lines = [orjson.loads(ln) for ln in (data / "faults.jsonl").read_bytes().splitlines()]
    faults = [ln for ln in lines if ln["kind"] != "heal"]
    heals = {ln["fault_id"]: ln for ln in lines if ln["kind"] == "heal"}
    assert len(faults) >= 2, out
    assert {f["kind"] for f in faults} <= {"kill", "partition", "kill_leader"}, out
    assert all(isinstance(ln["ts"], float) and isinstance(ln["targets"], list) for ln in lines)
    assert [ln["ts"] for ln in lines] == sorted(ln["ts"] for ln in lines)
    assert all(f["seed"] == 7 and len(f["targets"]) == 1 for f in faults)  # minority of 3
    for f in faults:
        assert f["fault_id"] in heals, f"fault {f} never healed"
        if f["kind"].startswith("kill"):
            assert heals[f["fault_id"]]["back"] is True, "a killed node did not come back"
    assert "healthy_at_end=true" in out.strip().splitlines()[-1], out
    assert "chaos seed 7" in out
    restarted = [ln for ln in out.splitlines() if "restarted as pid" in ln]
    assert len(restarted) >= sum(1 for f in faults if f["kind"].startswith("kill"))
    for pid in pids | {int(w.split()[-3]) for w in restarted}:
        assert not alive_node(pid)


def test_nodes_orphaned_by_a_killed_launcher_are_stopped_by_the_next(
    tmp_path: Path, launch: Callable[..., Launcher]
) -> None:
    data = tmp_path / "data"
    base = free_base_port(3)
    la = launch(data, "--nodes", "3", "--base-port", str(base), "--duration-s", "60")
    cfg = wait_for(lambda: published(data / "cluster.json"), 20, f"cluster.json\n{la.output()}")
    orphans = [n.pid for n in cfg.nodes]
    # Paused, the orphans cannot notice their parent is gone and exit by themselves (which
    # they do within ~0.5 s, racing the second launcher): it must find and stop them.
    for p in orphans:
        os.kill(p, signal.SIGSTOP)
    la.proc.kill()  # SIGKILL: no chance to stop its nodes
    la.wait(5)
    assert all(alive_node(p) for p in orphans)
    la2 = launch(data, "--nodes", "3", "--duration-s", "60")

    def republished() -> ClusterConfig | None:
        now = published(data / "cluster.json")
        return now if now and not {n.pid for n in now.nodes} & set(orphans) else None

    cfg2 = wait_for(republished, 25, f"second start\n{la2.output()}")
    assert cfg2.cluster == cfg.cluster and cfg2.nodes[0].udp == ("127.0.0.1", base)
    assert not any(alive_node(p) for p in orphans)
    assert "left running by an earlier launcher" in la2.output()
    la2.proc.send_signal(signal.SIGTERM)
    assert la2.wait(15) == 0
    assert not any(alive_node(n.pid) for n in cfg2.nodes)


def test_python_api_partition_pause_heal(tmp_path: Path) -> None:
    opts = SupervisorOptions(data_dir=tmp_path / "data", nodes=3, base_port=free_base_port(3))
    sup = ClusterSupervisor(opts)
    pids: list[int] = []
    try:
        sup.start()
        assert sup.wait_ready(20) and sup.cluster_file.exists()
        pids = list(sup.pids().values())
        leader = sup.wait_leader(15)
        assert leader is not None
        # cut the leader off: the majority side elects someone else
        assert sup.partition([leader]) == []
        assert sup.wait_until(lambda: sup.leader() not in (None, leader), 10), sup.snapshot()
        sup.heal()
        assert sup.wait_healthy(10)
        # a paused node is faulty until resumed; the others carry on
        other = next(n for n in sup.ids if n != sup.leader())
        sup.pause(other)
        assert sup.wait_until(lambda: other in sup.faulty(), 5)
        assert [v.state for v in sup.snapshot() if v.id == other] == ["paused"]
        sup.heal([other])
        assert sup.wait_healthy(10)
        # the shell's way in: launcher ctl, seen by the running supervisor
        ctl = ["--data-dir", str(opts.data_dir)]
        assert ctl_main([*ctl, "leader"]) == 0
        assert ctl_main([*ctl, "pause", other]) == 0
        assert sup.wait_until(lambda: other in sup.faulty(), 5)
        assert sup.wait_until(lambda: any("pause" in e.text and "by=ctl" in e.text
                                          for e in sup.events.recent(50)), 5)
        assert ctl_main([*ctl, "heal"]) == 0
        assert sup.wait_healthy(10)
        kinds = [orjson.loads(ln)["kind"] for ln in
                 (opts.data_dir / "faults.jsonl").read_bytes().splitlines()]
        assert kinds == ["partition", "heal", "pause", "heal", "pause", "heal"]
    finally:
        sup.stop()
        pids += list(sup.pids().values())
    assert not any(alive_node(p) for p in pids if p)
    assert all(n.pid == 0 for n in load_cluster(sup.cluster_file).nodes)


def node_faults(addr: tuple[str, int]) -> dict[str, Any] | None:
    conn = http.client.HTTPConnection(addr[0], addr[1], timeout=0.5)
    try:
        conn.request("GET", "/fault")
        resp = conn.getresponse()
        body = orjson.loads(resp.read())
        return body if resp.status == 200 and isinstance(body, dict) else None
    except (OSError, http.client.HTTPException, orjson.JSONDecodeError):
        return None
    finally:
        conn.close()


def test_a_node_restarted_inside_a_fault_is_put_back_in_it(tmp_path: Path) -> None:
    """The fault hook lives in a node's memory; the faults stand for the network, which a
    process restart does not mend: the supervisor sets them again on the new process,
    whether it ordered them itself or ``launcher ctl`` did. After a heal, a restart comes
    back clean."""
    opts = SupervisorOptions(data_dir=tmp_path / "data", nodes=3, base_port=free_base_port(3))
    sup = ClusterSupervisor(opts)
    pids: list[int] = []

    def restart(nid: str) -> None:
        before = sup.restarts(nid)
        assert sup.kill(nid)
        assert sup.wait_until(lambda: sup.restarts(nid) > before and sup.answering(nid), 30), \
            sup.snapshot()

    try:
        sup.start()
        assert sup.wait_ready(20)
        pids = list(sup.pids().values())
        a, b, c = sup.ids
        http_of = {n.id: n.http for n in sup.config.nodes}
        # ordered here: c cut off from a and b; c restarts inside the cut
        assert sup.partition([c]) == []
        restart(c)
        wait_for(lambda: (f := node_faults(http_of[c])) and f["partition"] == [a, b], 10,
                 f"{c} partitioned again after its restart")
        # ordered by launcher ctl (another process): a lossy a; learnt from faults.jsonl
        assert ctl_main(["--data-dir", str(opts.data_dir), "degrade", a, "--drop-pct", "10"]) == 0
        wait_for(lambda: any(s.get("drop_pct") == 10.0 for s in sup.net_faults(a)), 10,
                 "the supervisor to learn ctl's fault")
        restart(a)
        wait_for(lambda: (f := node_faults(http_of[a])) and f["all"]["drop_pct"] == 10.0
                 and f["partition"] == [c], 10, f"{a} lossy and cut from {c} again")
        assert any(f"{a} restarted inside a fault" in e.text for e in sup.events.recent(50))
        # healed: a restart comes back with nothing set
        assert sup.heal() == []
        restart(c)
        time.sleep(1.0)  # the supervisor has had its chance to (wrongly) set faults again
        f = node_faults(http_of[c])
        assert f is not None and f["partition"] == [] and f["all"]["drop_pct"] == 0.0
        assert sup.wait_healthy(15)
    finally:
        sup.stop()
        pids += list(sup.pids().values())
        for p in psutil.process_iter(["pid", "cmdline"]):
            if str(tmp_path) in " ".join(p.info["cmdline"] or []) and alive_node(p.info["pid"]):
                os.kill(p.info["pid"], signal.SIGKILL)
    assert not any(alive_node(p) for p in pids if p)
