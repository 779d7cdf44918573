"""A node whose data dir is wiped is replaced, never restarted under its old id.

``python -m launcher`` with real node processes and submits running: kill -9 a node and
``rm -rf`` its data dir (a follower; the leader), or ``launcher ctl wipe``, or wipe it while
the launcher is down: the supervisor adds a fresh node (learner, voter) and removes the old
id, cluster.json follows, the old id is in the cluster's removed list, its process is never
started again, and nothing acknowledged is lost.

Every process is found by pid and killed in a finally (the ``launch`` fixture)."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.test_launcher_cluster import (
    Launcher,
    free_base_port,
    launcher_processes,
    one_leader,
    published,
    wait_for,
)
from tests.integration.test_launcher_membership import Submitter, ctl, node_procs
from udpraft.client.blocking import Client
from udpraft.config import ClusterConfig, load_cluster

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Callable[..., Launcher]]:
    yield from launcher_processes(tmp_path)


def replaced(cluster_file: Path, old: str, new: str) -> ClusterConfig | None:
    """cluster.json once ``old`` is gone and ``new`` is listed, every node with a pid, and
    one leader agreed on by all."""
    cfg = published(cluster_file)
    if cfg is None or old in cfg.ids or new not in cfg.ids or one_leader(cfg) is None:
        return None
    return cfg


def check_replaced(data: Path, la: Launcher, old: str, new: str, voters: int) -> None:
    cfg = wait_for(lambda: replaced(data / "cluster.json", old, new), 40,
                   f"{old} replaced by {new}\n{la.output()[-4000:]}")
    members = ctl(data, "members")
    assert old in members["removed"], members
    assert new in members["voters"] and len(members["voters"]) == voters, members
    assert sorted(members["voters"]) == sorted(cfg.ids)
    assert f"{old}'s data dir is gone: replacing it with {new}" in la.output()
    assert node_procs(data.parent, old) == [], f"{old} was started again"


def no_loss(cluster_file: Path, sub: Submitter) -> None:
    with Client.from_cluster_file(str(cluster_file)) as c:
        got = {e.index: e.data for e in c.retrieve(1, timeout=20)}
    lost = [(i, d) for i, d in sub.acked if got.get(i) != d]
    assert not lost, f"{len(lost)} acknowledged entries lost, e.g. {lost[:3]}"


def start(data: Path, launch: Callable[..., Launcher]) -> tuple[Launcher, ClusterConfig, str]:
    la = launch(data, "--nodes", "3", "--base-port", str(free_base_port(6)),
                "--duration-s", "110", "--plain")
    cfg = wait_for(lambda: published(data / "cluster.json"), 20, f"cluster.json\n{la.output()}")
    leader = wait_for(lambda: one_leader(cfg), 15, "a leader")
    return la, cfg, leader


def wipe_by_hand(cfg: ClusterConfig, node: str) -> None:
    os.kill(cfg.node(node).pid, signal.SIGKILL)
    shutil.rmtree(cfg.node(node).data_dir)


def test_a_wiped_follower_is_replaced_also_when_wiped_while_the_launcher_was_down(
    tmp_path: Path, launch: Callable[..., Launcher]
) -> None:
    data = tmp_path / "data"
    la, cfg, leader = start(data, launch)
    sub = Submitter(data / "cluster.json")
    sub.start()
    try:
        sub.more(100, 20, "before the wipe")
        follower = next(n for n in cfg.ids if n != leader)
        wipe_by_hand(cfg, follower)
        check_replaced(data, la, follower, "n4", 3)
        sub.more(100, 20, "after the replacement")
    finally:
        sub.stop.set()
        sub.join(10)
    no_loss(data / "cluster.json", sub)

    # the launcher stopped, a node's dir wiped, the launcher started again on the same dir:
    # the node is not started; it is replaced (by n5) once the others elect a leader
    la.proc.send_signal(signal.SIGTERM)
    assert la.wait(20) == 0
    victim = load_cluster(data / "cluster.json").ids[0]
    shutil.rmtree(data / victim)
    la2 = launch(data, "--duration-s", "60", "--plain")
    check_replaced(data, la2, victim, "n5", 3)
    no_loss(data / "cluster.json", sub)
    la2.proc.send_signal(signal.SIGTERM)
    assert la2.wait(20) == 0


def test_a_wiped_leader_is_replaced_and_ctl_wipe_does_the_same(
    tmp_path: Path, launch: Callable[..., Launcher]
) -> None:
    data = tmp_path / "data"
    la, cfg, leader = start(data, launch)
    sub = Submitter(data / "cluster.json")
    sub.start()
    try:
        sub.more(100, 20, "before the wipe")
        wipe_by_hand(cfg, leader)
        check_replaced(data, la, leader, "n4", 3)
        sub.more(100, 20, "after the leader's replacement")
        # the same through the launcher: launcher ctl wipe ID
        now = load_cluster(data / "cluster.json")
        victim = next(n for n in now.ids if n != "n4")
        out = ctl(data, "wipe", victim)
        assert out["ok"] and out["node"] == victim and out["pid"] == now.node(victim).pid, out
        check_replaced(data, la, victim, "n5", 3)
    finally:
        sub.stop.set()
        sub.join(10)
    no_loss(data / "cluster.json", sub)
    la.proc.send_signal(signal.SIGTERM)
    assert la.wait(20) == 0
