"""The supervisor's restart policy, with a stand-in "node" that crashes at once (no Raft)."""

from __future__ import annotations

import os
import random
import re
import stat
from pathlib import Path

from launcher import layout
from launcher.cluster import ClusterSupervisor, SupervisorOptions


def crashing_node(tmp_path: Path) -> str:
    script = tmp_path / "fake-python"
    script.write_text("#!/bin/sh\necho \"boom: cannot start $*\" >&2\nexit 3\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def free_base() -> int:
    lo, _ = layout.ephemeral_range()
    rng = random.Random(os.getpid() ^ id(object()))
    for _ in range(200):
        base = rng.randrange(10_000, lo - 1200)
        cfg = layout.fresh_layout(1, "x", "127.0.0.1", base)
        if not layout.busy_ports(cfg):
            return base
    raise RuntimeError("no free port")


def delays(sup: ClusterSupervisor) -> list[float]:
    return [float(m.group(1)) for e in sup.events.recent(100) if e.kind == "died"
            for m in [re.search(r"restart in ([0-9.]+)s", e.text)] if m]


def test_a_crashing_node_is_restarted_with_doubling_backoff(tmp_path: Path) -> None:
    data = tmp_path / "data"
    opts = SupervisorOptions(data_dir=data, nodes=1, base_port=free_base(),
                             python=crashing_node(tmp_path), backoff_s_max=0.8)
    sup = ClusterSupervisor(opts)
    try:
        sup.start()
        assert sup.wait_until(lambda: len(delays(sup)) >= 5, 10)
    finally:
        sup.stop()
    assert delays(sup)[:5] == [0.2, 0.4, 0.8, 0.8, 0.8]
    assert sup.restarts("n1") >= 5
    died = [e.text for e in sup.events.recent(100) if e.kind == "died"]
    assert "exit code 3" in died[0] and "boom: cannot start -m udpraft.node --id n1" in died[0]
    log = (data / "n1.log").read_text()
    assert log.count("=== launcher") >= 5 and "boom" in log  # appended, one header per start
    assert not sup.published and not (data / "cluster.json").exists()


def test_backoff_resets_after_a_stable_run(tmp_path: Path) -> None:
    opts = SupervisorOptions(data_dir=tmp_path / "data", nodes=1, base_port=free_base(),
                             python=crashing_node(tmp_path), stable_s=0.0)
    sup = ClusterSupervisor(opts)
    try:
        sup.start()
        assert sup.wait_until(lambda: len(delays(sup)) >= 3, 10)
    finally:
        sup.stop()
    assert delays(sup)[:3] == [0.2, 0.2, 0.2]


def test_a_held_node_stays_down_until_started(tmp_path: Path) -> None:
    opts = SupervisorOptions(data_dir=tmp_path / "data", nodes=1, base_port=free_base(),
                             python=crashing_node(tmp_path))
    sup = ClusterSupervisor(opts)
    try:
        sup.start()
        sup.stop_node("n1")
        assert sup.wait_until(lambda: sup.snapshot()[0].state == "held", 5)
        before = sup.restarts("n1")
        assert not sup.wait_until(lambda: sup.restarts("n1") > before, 0.6)
        sup.start_node("n1")
        assert sup.wait_until(lambda: sup.restarts("n1") > before, 5)
    finally:
        sup.stop()


def test_the_live_view_renders_every_node_and_the_dashboard(tmp_path: Path) -> None:
    from rich.console import Console

    from launcher.view import PlainPrinter, render

    sup = ClusterSupervisor(SupervisorOptions(data_dir=tmp_path / "d", nodes=3, base_port=7001))
    sup.events.fault("kill", ["n2"], signal="SIGKILL")
    console = Console(record=True, width=160, force_terminal=False)
    console.print(render(sup, footer="chaos seed 4"))
    text = console.export_text()
    for word in ("n1", "n2", "n3", "down", "http://127.0.0.1:8080/", "recent faults",
                 "kill n2", "chaos seed 4", "restarts", "cpu", "rss", "last fault"):
        assert word in text, word

    import io

    out = io.StringIO()
    PlainPrinter(out)(sup.events.recent(1)[0])
    assert out.getvalue().startswith("launcher ") and "kill n2" in out.getvalue()
    sup.events.close()
