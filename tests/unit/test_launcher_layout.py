"""Ports, cluster files and their reuse, the fault log, and refusals that start nothing."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import orjson
import psutil  # type: ignore[import-untyped]
import pytest

from launcher import layout
from launcher.__main__ import main as launcher_main
from launcher.cluster import ClusterSupervisor, SupervisorOptions
from launcher.events import Event, EventLog
from launcher.faults import cut_sides, partition_specs
from udpraft.config import load_cluster


def test_ports_follow_the_base_port() -> None:
    assert layout.node_ports(7001, 1) == (7001, 7101)
    assert layout.node_ports(7001, 5) == (7005, 7105)
    assert layout.dashboard_url("127.0.0.1", 7001) == "http://127.0.0.1:8080/"
    assert layout.dashboard_url("::1", 7001) == "http://[::1]:8080/"
    with pytest.raises(layout.LayoutError, match="outside"):
        layout.node_ports(65_500, 1)
    with pytest.raises(ValueError):
        layout.node_ports(7001, 0)


def test_fresh_layout(tmp_path: Path) -> None:
    cfg = layout.fresh_layout(3, tmp_path, "127.0.0.1", 7001)
    assert cfg.ids == ["n1", "n2", "n3"]
    assert [n.udp for n in cfg.nodes] == [("127.0.0.1", p) for p in (7001, 7002, 7003)]
    assert [n.http for n in cfg.nodes] == [("127.0.0.1", p) for p in (7101, 7102, 7103)]
    assert [n.data_dir for n in cfg.nodes] == [str(tmp_path / f"n{i}") for i in (1, 2, 3)]
    assert all(n.pid == 0 for n in cfg.nodes)
    assert cfg.dashboard == "http://127.0.0.1:8080/"
    assert cfg.cluster.startswith("udpraft-")
    assert cfg.cluster != layout.fresh_layout(3, tmp_path, "127.0.0.1", 7001).cluster


def test_written_cluster_file_round_trips_atomically(tmp_path: Path) -> None:
    cfg = layout.with_pids(layout.fresh_layout(3, tmp_path, "127.0.0.1", 7001), {"n2": 4242})
    path = tmp_path / layout.CLUSTER_FILE
    layout.write_cluster(path, cfg)
    raw = orjson.loads(path.read_bytes())
    assert set(raw) == {"cluster", "nodes", "dashboard", "initial_voters"}
    assert raw["initial_voters"] == ["n1", "n2", "n3"]
    assert raw["nodes"][1] == {"id": "n2", "udp": "127.0.0.1:7002", "http": "127.0.0.1:7102",
                               "pid": 4242, "data_dir": str(tmp_path / "n2")}
    back = load_cluster(path)
    assert back.cluster == cfg.cluster and back.node("n2").pid == 4242
    assert [p.name for p in tmp_path.iterdir()] == [layout.CLUSTER_FILE]  # no temp files left


def test_plan_reuses_id_ids_and_ports(tmp_path: Path) -> None:
    fresh = layout.plan_cluster(tmp_path, 3, base_port=9001)
    assert not fresh.reused and fresh.config.nodes[0].udp[1] == 9001
    layout.write_cluster(tmp_path / layout.CLUSTER_FILE, layout.with_pids(fresh.config, {"n1": 7}))
    again = layout.plan_cluster(tmp_path, None, base_port=7001)
    assert again.reused
    assert again.config.cluster == fresh.config.cluster
    assert [(n.id, n.udp, n.http) for n in again.config.nodes] == [
        (n.id, n.udp, n.http) for n in fresh.config.nodes]
    assert all(n.pid == 0 for n in again.config.nodes)
    assert again.previous_pids == (("n1", 7),)
    assert any("keeping the ports" in note for note in again.notes)
    assert layout.plan_cluster(tmp_path, 3).config.cluster == fresh.config.cluster


def test_plan_refuses_another_node_count(tmp_path: Path) -> None:
    cfg = layout.plan_cluster(tmp_path, 3).config
    layout.write_cluster(tmp_path / layout.CLUSTER_FILE, cfg)
    with pytest.raises(layout.LayoutError, match=r"3-node cluster.*--nodes 5"):
        layout.plan_cluster(tmp_path, 5)


def test_plan_falls_back_to_the_boot_file_and_rejects_garbage(tmp_path: Path) -> None:
    cfg = layout.plan_cluster(tmp_path, 4).config
    layout.write_cluster(tmp_path / layout.BOOT_FILE, cfg)
    assert layout.plan_cluster(tmp_path, None).config.cluster == cfg.cluster
    (tmp_path / layout.CLUSTER_FILE).write_text("{not json")
    with pytest.raises(layout.LayoutError, match="cannot reuse"):
        layout.plan_cluster(tmp_path, None)


def children_using(path: Path) -> list[int]:
    out = []
    for c in psutil.Process().children(recursive=True):
        try:
            if str(path) in " ".join(c.cmdline()):
                out.append(c.pid)
        except psutil.Error:
            pass
    return out


def free_port() -> int:
    """A free port below the ephemeral range (see the integration tests for why)."""
    import random

    lo, _ = layout.ephemeral_range()
    rng = random.Random(os.getpid() ^ id(object()))
    for _ in range(200):
        base = rng.randrange(10_000, lo - 1200)
        ports = [base + i for i in range(3)] + [base + 100 + i for i in range(3)]
        if all(layout.port_is_free("127.0.0.1", p, k) for p in ports for k in ("udp", "tcp")):
            return base
    raise RuntimeError("no free port range")


def test_busy_ports_are_named(tmp_path: Path) -> None:
    base = free_port()
    cfg = layout.fresh_layout(2, tmp_path, "127.0.0.1", base)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
        try:
            u.bind(("127.0.0.1", base + 1))  # n2's udp
            t.bind(("127.0.0.1", base + 100))  # n1's http
            t.listen()
        except OSError:
            pytest.skip("the ports next to a free one are taken on this machine")
        busy = layout.busy_ports(cfg)
        assert f"port {base + 1} (udp of n2, 127.0.0.1) is busy" in busy
        assert f"port {base + 100} (http of n1, 127.0.0.1) is busy" in busy


def test_start_on_a_busy_port_fails_cleanly_and_spawns_nothing(tmp_path: Path) -> None:
    base = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        try:
            u.bind(("127.0.0.1", base))
        except OSError:
            pytest.skip("port taken meanwhile")
        sup = ClusterSupervisor(SupervisorOptions(data_dir=tmp_path, nodes=3, base_port=base))
        with pytest.raises(layout.LayoutError, match=f"port {base} \\(udp of n1"):
            sup.start()
        sup.stop()
    assert children_using(tmp_path) == []
    assert not (tmp_path / layout.CLUSTER_FILE).exists()
    assert not (tmp_path / layout.BOOT_FILE).exists()  # the next try may pick other ports
    assert layout.plan_cluster(tmp_path, 3, base_port=base + 10).config.nodes[0].udp[1] == base + 10


def test_a_failed_start_keeps_a_reused_cluster_identity(tmp_path: Path) -> None:
    base = free_port()
    cfg = layout.plan_cluster(tmp_path, 3, base_port=base).config
    layout.write_cluster(tmp_path / layout.CLUSTER_FILE, cfg)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        try:
            u.bind(("127.0.0.1", base + 2))
        except OSError:
            pytest.skip("port taken meanwhile")
        sup = ClusterSupervisor(SupervisorOptions(data_dir=tmp_path, nodes=3))
        with pytest.raises(layout.LayoutError, match=f"port {base + 2} \\(udp of n3"):
            sup.start()
        sup.stop()
    again = layout.plan_cluster(tmp_path, 3)
    assert again.reused and again.config.cluster == cfg.cluster


def test_cli_refuses_a_different_node_count(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    layout.write_cluster(tmp_path / layout.CLUSTER_FILE, layout.plan_cluster(tmp_path, 3).config)
    assert launcher_main(["--nodes", "5", "--data-dir", str(tmp_path)]) == 2
    assert "refusing" in capsys.readouterr().err
    assert children_using(tmp_path) == []


def test_fault_log_lines(tmp_path: Path) -> None:
    seen: list[Event] = []
    log = EventLog(tmp_path / "faults.jsonl", echo=seen.append)
    log.fault("kill", ["n2"], signal="SIGKILL", pid=12)
    log.fault("heal", ["n2"], heals="kill")
    log.close()
    lines = [orjson.loads(ln) for ln in (tmp_path / "faults.jsonl").read_bytes().splitlines()]
    assert [ln["kind"] for ln in lines] == ["kill", "heal"]
    assert lines[0]["targets"] == ["n2"] and lines[0]["signal"] == "SIGKILL"
    assert all(isinstance(ln["ts"], float) and ln["ts"] > 1.6e9 for ln in lines)
    assert [e.kind for e in seen] == ["fault", "heal"]
    assert "heal kill n2" in seen[1].text
    assert [e.kind for e in log.recent(faults_only=True)] == ["fault", "heal"]


def test_partition_sides_cut_both_ways() -> None:
    ids = ["n1", "n2", "n3", "n4", "n5"]
    sides = cut_sides(ids, [["n2", "n4"]])
    assert sides == [["n2", "n4"], ["n1", "n3", "n5"]]
    specs = partition_specs(ids, sides)
    assert specs["n2"] == ["n1", "n3", "n5"] and specs["n1"] == ["n2", "n4"]
    for a in ids:
        for b in specs[a]:
            assert a in specs[b]  # symmetric: both ends drop the link
    with pytest.raises(KeyError):
        cut_sides(ids, [["n9"]])


def test_secret_is_private_after_ensure(tmp_path: Path) -> None:
    from udpraft.config import ensure_secret

    ensure_secret(tmp_path)
    assert stat.S_IMODE(os.stat(tmp_path / "secret").st_mode) == 0o600


def test_a_second_launcher_on_the_same_dir_is_refused(tmp_path: Path) -> None:
    from launcher.procs import lock_dir, unlock_dir

    fd = lock_dir(tmp_path / ".launcher.lock")
    try:
        sup = ClusterSupervisor(SupervisorOptions(data_dir=tmp_path, nodes=3, base_port=free_port()))
        with pytest.raises(layout.LayoutError, match=f"another launcher \\(pid {os.getpid()}\\)"):
            sup.start()
        sup.stop()
    finally:
        unlock_dir(fd)
    assert children_using(tmp_path) == []


# ---------------------------------------------------------------------------- membership


def test_plan_follows_a_changed_membership_whatever_nodes_says(tmp_path: Path) -> None:
    from dataclasses import replace

    cfg = layout.plan_cluster(tmp_path, 3, base_port=9001).config
    cfg = replace(cfg, initial=cfg.initial_voters)
    n4 = replace(cfg.nodes[0], id="n4", udp=("127.0.0.1", 9004), http=("127.0.0.1", 9104),
                 data_dir=str(tmp_path / "n4"))
    grown = replace(cfg, nodes=(*cfg.nodes[1:], n4))  # n1 retired, n4 added
    layout.write_cluster(tmp_path / layout.CLUSTER_FILE, grown)
    for asked in (None, 3, 5):
        plan = layout.plan_cluster(tmp_path, asked)
        assert plan.config.ids == ["n2", "n3", "n4"]
        assert plan.config.initial_voters == ("n1", "n2", "n3")
        assert any("membership" in note for note in plan.notes)
    assert any("--nodes 5 ignored" in note for note in layout.plan_cluster(tmp_path, 5).notes)


def test_new_ids_are_never_reused(tmp_path: Path) -> None:
    from launcher import members

    cfg = layout.fresh_layout(3, tmp_path, "127.0.0.1", 9001)
    assert members.next_id(members.used_ids(cfg, None, tmp_path)) == "n4"
    mem = {"voters": ["n1", "n2", "n3"], "learners": [], "removed": ["n7"], "members": {}}
    assert members.next_id(members.used_ids(cfg, mem, tmp_path)) == "n8"
    (tmp_path / "n11").mkdir()  # a retired node's data dir
    (tmp_path / "n12.log").write_text("")
    (tmp_path / "notes").mkdir()
    assert members.next_id(members.used_ids(cfg, mem, tmp_path)) == "n13"
    assert members.next_id([]) == "n1" and members.next_id(["a", "b"]) == "n1"


def test_new_node_ports_follow_the_scheme_and_skip_busy_ones(tmp_path: Path) -> None:
    from launcher import members

    base = 20_000 + os.getpid() % 5_000
    cfg = layout.fresh_layout(3, tmp_path, "127.0.0.1", base)
    assert members.scheme_base(cfg) == base
    assert members.pick_ports(cfg, "n4") == (("127.0.0.1", base + 3), ("127.0.0.1", base + 103))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", base + 5))
        except OSError:
            pytest.skip("port taken by someone else")
        udp, http = members.pick_ports(cfg, "n6")
        assert (udp[1], http[1]) == (base + 6, base + 106)  # n6's slot is busy: the next
    # a cluster not laid out by the scheme: kernel-chosen free ports
    from dataclasses import replace

    odd = replace(cfg, nodes=(replace(cfg.nodes[0], http=("127.0.0.1", base + 500)),
                              *cfg.nodes[1:]))
    assert members.scheme_base(odd) is None
    udp, http = members.pick_ports(odd, "n4")
    assert udp[0] == "127.0.0.1" and udp[1] > 0 and http[1] > 0
    assert udp not in {n.udp for n in odd.nodes}


def test_membership_goals_and_catching_up() -> None:
    from launcher import members

    mem = {"voters": ["n1", "n2", "n4"], "learners": ["n5"], "removed": ["n3"],
           "config_committed": True, "commit_index": 1000,
           "members": {"n5": {"match": 950}, "n4": {"match": 1000}}}
    assert members.goal_reached("add_learner", "n5", mem)
    assert members.goal_reached("add_learner", "n4", mem)
    assert not members.goal_reached("promote", "n5", mem)
    assert members.goal_reached("promote", "n4", mem)
    assert members.goal_reached("remove", "n3", mem) and not members.goal_reached("remove", "n1", mem)
    assert not members.goal_reached("promote", "n4", {**mem, "config_committed": False})
    assert members.caught_up(mem, "n5", floor=900)
    assert not members.caught_up(mem, "n5", floor=990)  # not yet past its own addition
    assert not members.caught_up({**mem, "commit_index": 2000}, "n5", floor=900)
    assert not members.caught_up(mem, "n9", floor=0)
