"""Small, clock-free toolkit for driving RaftNode directly in unit tests.

Nothing here sleeps or reads a clock: a "network" is a FIFO of messages handed from one
node's Ready to another node's ``step``; time is ``tick()``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from udpraft.core import (
    EMPTY_HARD_STATE,
    Config,
    Entry,
    HardState,
    Message,
    RaftNode,
    Ready,
    Role,
)
from udpraft.core.messages import PreVoteResp, RequestVoteResp

IDS3: tuple[str, ...] = ("n1", "n2", "n3")
IDS5: tuple[str, ...] = ("n1", "n2", "n3", "n4", "n5")

ELECTION = 10
HEARTBEAT = 2


def config(**overrides: Any) -> Config:
    """A test config: short timeouts (10 ticks election, 2 ticks heartbeat)."""
    base: dict[str, Any] = {"election_ticks": ELECTION, "heartbeat_ticks": HEARTBEAT}
    base.update(overrides)
    return Config(**base)


def ents(terms: Iterable[int], start: int = 1) -> list[Entry]:
    """Entries with the given terms at consecutive indices from ``start``."""
    return [Entry(start + i, t, f"{start + i}@{t}".encode()) for i, t in enumerate(terms)]


def make_node(
    node_id: str = "n1",
    ids: Sequence[str] = IDS3,
    *,
    seed: int = 1,
    term: int = 0,
    vote: str = "",
    log_terms: Iterable[int] = (),
    hard_state: HardState | None = None,
    entries: Sequence[Entry] | None = None,
    **cfg: Any,
) -> RaftNode:
    hs = (
        hard_state
        if hard_state is not None
        else (HardState(term, vote) if (term or vote) else EMPTY_HARD_STATE)
    )
    es = entries if entries is not None else ents(log_terms)
    return RaftNode(node_id, list(ids), random.Random(seed), config(**cfg), hs, es)


def all_msgs(rd: Ready) -> list[Message]:
    """Every message a Ready asks to send (both lists)."""
    return [*rd.messages, *rd.persisted_messages]


def drain(node: RaftNode) -> Ready:
    """Take one Ready and advance it at once (as a runtime with an instant disk would)."""
    rd = node.ready()
    node.advance(rd)
    return rd


def drain_msgs(node: RaftNode) -> list[Message]:
    return all_msgs(drain(node))


def of_type(msgs: Iterable[Message], kind: type | tuple[type, ...]) -> list[Any]:
    return [m for m in msgs if isinstance(m, kind)]


def log_terms(node: RaftNode) -> list[int]:
    """Terms of the node's log entries after its snapshot point, oldest first."""
    return [node.log.entry(i).term for i in range(node.log.offset + 1, node.log.last_index() + 1)]


def log_entries(node: RaftNode) -> list[Entry]:
    return node.log.slice(1, node.log.last_index() + 1)


def make_leader(
    node_id: str = "n1",
    ids: Sequence[str] = IDS3,
    *,
    grants: Sequence[str] | None = None,
    settle: bool = True,
    **kw: Any,
) -> RaftNode:
    """A leader built without a network: campaign and step forged (pre-)vote grants.

    With ``settle`` the leader's first Ready (its no-op and first appends) is taken and
    advanced, so the no-op is durable locally; the followers have acknowledged nothing.
    """
    kw.setdefault("pre_vote", False)
    n = make_node(node_id, ids, **kw)
    voters = list(grants) if grants is not None else list(n.peers[: n.quorum - 1])
    n.campaign()
    if n.role == Role.PRE_CANDIDATE:
        want = n.term + 1
        for p in voters:
            n.step(PreVoteResp(p, node_id, want, True))
    drain(n)
    for p in voters:
        n.step(RequestVoteResp(p, node_id, n.term, True))
    assert n.role == Role.LEADER, n.role
    if settle:
        drain(n)
    return n


@dataclass
class Network:
    """An in-memory network of RaftNodes, delivering messages in FIFO order.

    ``drop`` decides per message whether it is lost; ``isolated`` nodes neither send nor
    receive. Every message handed to the network is recorded in ``sent``; every entry a node
    was told to apply is recorded in ``applied[node_id]``.
    """

    nodes: dict[str, RaftNode]
    drop: Callable[[Message], bool] | None = None
    isolated: set[str] = field(default_factory=set)
    sent: list[Message] = field(default_factory=list)
    applied: dict[str, list[Entry]] = field(default_factory=dict)
    read_states: dict[str, list[Any]] = field(default_factory=dict)
    queue: list[Message] = field(default_factory=list)
    disks: dict[str, Disk] | None = None  # when set, every Ready is persisted there

    @classmethod
    def of(cls, ids: Sequence[str] = IDS3, *, seed: int = 1, **kw: Any) -> Network:
        nodes = {i: make_node(i, ids, seed=seed + k, **kw) for k, i in enumerate(ids)}
        return cls(nodes)

    def __getitem__(self, node_id: str) -> RaftNode:
        return self.nodes[node_id]

    def _lost(self, m: Message) -> bool:
        if m.src in self.isolated or m.dst in self.isolated:
            return True
        return bool(self.drop and self.drop(m))

    def collect(self) -> bool:
        """Take and advance a Ready from every node with one; queue the messages."""
        any_ready = False
        for nid, n in self.nodes.items():
            if not n.has_ready():
                continue
            any_ready = True
            rd = n.ready()
            if self.disks is not None:
                self.disks.setdefault(nid, Disk()).save(rd)
            n.advance(rd)
            self.applied.setdefault(nid, []).extend(rd.committed_entries)
            self.read_states.setdefault(nid, []).extend(rd.read_states)
            for m in all_msgs(rd):
                self.sent.append(m)
                if not self._lost(m):
                    self.queue.append(m)
        return any_ready

    def deliver_all(self) -> int:
        batch, self.queue = self.queue, []
        for m in batch:
            if m.dst in self.nodes and not self._lost(m):
                self.nodes[m.dst].step(m)
        return len(batch)

    def run(self, max_rounds: int = 1000) -> None:
        """Deliver messages and advance Readies until nothing moves."""
        for _ in range(max_rounds):
            moved = self.collect()
            moved = self.deliver_all() > 0 or moved
            if not moved:
                return
        raise AssertionError("network did not quiesce")

    def tick(self, n: int = 1, only: Iterable[str] | None = None) -> None:
        """Tick the nodes ``n`` times, running the network to quiescence after each tick."""
        who = list(only) if only is not None else list(self.nodes)
        for _ in range(n):
            for nid in who:
                self.nodes[nid].tick()
            self.run()

    def elect(self, node_id: str) -> RaftNode:
        n = self.nodes[node_id]
        n.campaign()
        self.run()
        assert n.role == Role.LEADER, f"{node_id} is {n.role.name}"
        return n

    def leaders(self) -> list[str]:
        return [i for i, n in self.nodes.items() if n.role == Role.LEADER]

    def sent_of(self, kind: type | tuple[type, ...]) -> list[Any]:
        return [m for m in self.sent if isinstance(m, kind)]


@dataclass
class Disk:
    """What a runtime would have persisted from a node's Readies (hard state + log)."""

    hard_state: HardState = EMPTY_HARD_STATE
    log: list[Entry] = field(default_factory=list)

    def save(self, rd: Ready) -> None:
        if rd.hard_state is not None:
            self.hard_state = rd.hard_state
        if rd.entries:
            del self.log[rd.entries[0].index - 1 :]
            self.log.extend(rd.entries)

    def step(self, node: RaftNode) -> Ready:
        """Take a Ready, persist it here, advance it."""
        rd = node.ready()
        self.save(rd)
        node.advance(rd)
        return rd

    def restart(self, node: RaftNode, seed: int | None = None, **cfg: Any) -> RaftNode:
        """A fresh node with the same id and voters, rebuilt from this disk."""
        rng = random.Random(seed if seed is not None else sum(map(ord, node.id)) * 31)
        return RaftNode(
            node.id, list(node.voters), rng, config(**cfg), self.hard_state, list(self.log)
        )
