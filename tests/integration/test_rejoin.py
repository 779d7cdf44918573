"""A follower whose disk is wiped rejoins and catches up — even when the leader believed it
fully in sync (its match was the leader's last index when the data vanished)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from tests.helpers.procs import LocalCluster
from udpraft.client.blocking import Client

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("snapshots", [False, True])
def test_wiped_follower_catches_up_when_leader_thought_it_in_sync(
    tmp_path: Path, snapshots: bool
) -> None:
    extra = ["--snapshot-entries", "100"] if snapshots else []
    c = LocalCluster(tmp_path, 3, "file", extra_args=extra)
    try:
        c.start_all()
        c.wait_up()
        ld = c.wait_leader()
        with Client.from_cluster_file(str(c.cluster_file)) as cl:
            acked = [cl.submit(b"w%d" % i).index for i in range(300)]
        victim = next(n for n in c.ids if n != ld)
        deadline = time.time() + 10
        while (c.status(victim) or {}).get("applied_index", 0) < max(acked):
            assert time.time() < deadline
            time.sleep(0.05)
        time.sleep(0.3)  # the leader's progress for the victim now says: fully matched
        c.kill(victim)
        shutil.rmtree(tmp_path / victim)
        c.start(victim)
        deadline = time.time() + 15
        while (c.status(victim) or {}).get("applied_index", 0) < max(acked):
            assert time.time() < deadline, f"wiped {victim} never caught up: {c.status(victim)}"
            time.sleep(0.05)
        st = c.status(ld)
        assert st is not None and st["counters"].get("raft_follower_lost_log", 0) >= 1
    finally:
        c.stop_all()
