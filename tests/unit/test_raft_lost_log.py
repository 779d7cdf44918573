"""A follower that comes back without the log it acknowledged (wiped disk) is caught up.

Raft assumes a restarted node kept what it acknowledged. When it did not, the leader would
believe it in sync forever (its match says so and heartbeats carry no log position). The
runtime reports a restarted peer (a new incarnation) with ``peer_restarted``; the leader
then probes it and takes a shorter log as the truth.
"""

from __future__ import annotations

import random

from tests.helpers.raftkit import IDS3, Network, config
from udpraft.core.raft import RaftNode


def _wipe(net: Network, nid: str) -> None:
    net.nodes[nid] = RaftNode(nid, IDS3, random.Random(99), config())


def test_wiped_follower_is_probed_and_refilled() -> None:
    net = Network.of()
    leader = net.elect("n1")
    for k in range(20):
        leader.propose(b"x%d" % k)
    net.run()
    assert leader.progress["n2"].match == leader.log.last_index()
    _wipe(net, "n2")
    leader.peer_restarted("n2")
    net.run()
    assert leader.counters.get("follower_lost_log") == 1
    assert net["n2"].log.last_index() == leader.log.last_index()
    assert [e.data for e in net["n2"].log.slice(1, 100)] == [e.data for e in leader.log.slice(1, 100)]


def test_restart_with_intact_log_does_not_lower_match() -> None:
    net = Network.of()
    leader = net.elect("n1")
    for k in range(5):
        leader.propose(b"y%d" % k)
    net.run()
    before = leader.progress["n3"].match
    leader.peer_restarted("n3")
    net.run()
    assert leader.progress["n3"].match == before
    assert "follower_lost_log" not in leader.counters


def test_without_the_restart_signal_the_leader_never_notices() -> None:
    # documents why the runtime must report restarts: heartbeats alone don't reveal it
    net = Network.of()
    leader = net.elect("n1")
    for k in range(5):
        leader.propose(b"z%d" % k)
    net.run()
    _wipe(net, "n2")
    net.tick(30)
    net.run()
    assert net["n2"].log.last_index() == 0
