"""The runtime's membership view and change checks (udpraft/io/members.py), on a real core
without sockets."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from types import SimpleNamespace
from typing import Any

import pytest

from tests.helpers.raftkit import drain, make_leader
from udpraft.config import ClusterConfig, NodeAddr
from udpraft.core.errors import InvalidRequest
from udpraft.core.messages import AppendResp
from udpraft.core.raft import RaftNode
from udpraft.io.members import AddressBook, MemberChanges, decode_addr, encode_addr


def fake_runtime(raft: RaftNode) -> Any:
    cfg = ClusterConfig("c", tuple(
        NodeAddr(f"n{i}", ("127.0.0.1", 7000 + i), ("127.0.0.1", 8000 + i)) for i in (1, 2, 3)
    ))
    addr_of = {n.id: n.udp for n in cfg.nodes}
    id_of = {a: i for i, a in addr_of.items()}
    rt = SimpleNamespace(id=raft.id, raft=raft, addr_of=addr_of, id_of=id_of,
                         heard_at={}, counters=Counter())
    rt.book = AddressBook(cfg, addr_of, id_of)
    return rt


def committed_leader() -> RaftNode:
    n = make_leader("n1")
    n.step(AppendResp("n2", "n1", n.term, True, 1))
    drain(n)
    return n


def test_view_of_a_leader_removing_itself_before_the_commit() -> None:
    n = committed_leader()
    rt = fake_runtime(n)
    view = MemberChanges(rt)
    n.propose_conf_change("remove", "n1")  # effective on append: n1 is no longer a member
    got = view.describe()
    assert got["voters"] == ["n2", "n3"] and got["removed"] == ["n1"]
    assert "n1" not in got["members"] and got["config_committed"] is False


def test_addresses_from_the_configuration_reach_the_book() -> None:
    n = committed_leader()
    rt = fake_runtime(n)
    n.propose_conf_change("add_learner", "n4", encode_addr("127.0.0.1:7004", "127.0.0.1:8004"))
    rt.book.sync(n.conf)
    assert rt.addr_of["n4"] == ("127.0.0.1", 7004) and rt.id_of[("127.0.0.1", 7004)] == "n4"
    assert MemberChanges(rt).describe()["members"]["n4"] == {
        "role": "learner", "udp": "127.0.0.1:7004", "http": "127.0.0.1:8004", "match": 0}
    assert decode_addr("nonsense") is None and decode_addr("h:1/h:2") == (("h", 1), "h:2")
    # an authenticated stranger is learned once, and only up to the bound
    assert rt.book.learn("n9", ("127.0.0.1", 7009)) and not rt.book.learn("n9", ("x", 1))


def test_changes_that_could_not_commit_are_refused_unless_forced() -> None:
    async def main() -> None:
        n = committed_leader()
        rt = fake_runtime(n)
        view = MemberChanges(rt)
        rt.heard_at["n2"] = time.monotonic()  # n3 silent
        with pytest.raises(InvalidRequest, match="must be up to commit"):
            await view.change("add_voter", "n4", "127.0.0.1:7004", "127.0.0.1:8004")
        with pytest.raises(InvalidRequest, match="leaves two voters"):
            await view.change("remove", "n3")
        with pytest.raises(InvalidRequest, match="belongs to another member"):
            await view.change("add_learner", "n4", "127.0.0.1:7002", "127.0.0.1:8004")
        with pytest.raises(InvalidRequest, match="is still catching up"):
            n.propose_conf_change("add_learner", "n5")
            n.step(AppendResp("n2", "n1", n.term, True, n.log.last_index()))
            drain(n)
            for _ in range(1500):
                n.propose(b"x")
            n.step(AppendResp("n2", "n1", n.term, True, n.log.last_index()))
            drain(n)
            await view.change("promote", "n5")

    asyncio.run(main())
