"""A whole Raft cluster in one process, on virtual time, driven by one seeded generator.

How this works: an event heap orders ticks, message deliveries, disk completions and
scheduled calls by virtual milliseconds. Each node is a real ``RaftNode`` with a simulated
disk that keeps *synced* state apart from writes still in flight: a Ready's hard state and
entries become durable only when its disk completion fires (in order); a crash throws away
whatever was not yet durable — except that, as a real OS may, it can flush a random prefix
of the in-flight writes first. A restart rebuilds the node from durable state only, with a
fresh state machine that re-applies the log. Every step is checked by ``Invariants``.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from udpraft.core.errors import RaftError
from udpraft.core.messages import Message
from udpraft.core.raft import RaftNode
from udpraft.core.ready import Config, ReadState, Ready, Role
from udpraft.core.sessions import SessionTable, Verdict
from udpraft.core.types import EMPTY_HARD_STATE, Entry, EntryKind, HardState
from udpraft.sim.invariants import Invariants
from udpraft.sim.network import NetConfig, Network

SIM_RAFT_CONFIG = Config(election_ticks=10, heartbeat_ticks=2, max_inflight_msgs=64)


@dataclass(slots=True)
class SimConfig:
    nodes: int = 5
    tick_ms: float = 10.0
    disk_ms_min: float = 0.05
    disk_ms_max: float = 2.0
    crash_flush_prefix: bool = True  # a crash may make part of the in-flight writes durable
    early_apply: bool = False  # apply committed entries when the Ready is taken, not after fsync
    raft: Config = SIM_RAFT_CONFIG
    net: NetConfig = field(default_factory=NetConfig)


class SimNode:
    __slots__ = (
        "applied",
        "applied_keys",
        "id",
        "incarnation",
        "last_commit",
        "last_disk_done",
        "led_terms",
        "pending",
        "raft",
        "read_waits",
        "sessions",
        "synced_hs",
        "synced_log",
        "up",
    )

    def __init__(self, node_id: str) -> None:
        self.id = node_id
        self.raft: RaftNode | None = None
        self.up = False
        self.incarnation = 0
        self.synced_hs: HardState = EMPTY_HARD_STATE
        self.synced_log: list[Entry] = []
        self.pending: deque[Ready] = deque()
        self.last_disk_done = 0.0
        self.last_commit = 0
        self.applied = 0
        self.applied_keys: set[tuple[str, int]] = set()
        self.sessions: SessionTable[int] = SessionTable()
        self.led_terms: set[int] = set()
        self.read_waits: list[tuple[ReadState, Callable[[SimNode], None]]] = []

    def persist(self, rd: Ready, n_entries: int | None = None) -> None:
        if rd.hard_state is not None:
            self.synced_hs = rd.hard_state
        ents = rd.entries if n_entries is None else rd.entries[:n_entries]
        if ents:
            del self.synced_log[ents[0].index - 1 :]
            self.synced_log.extend(ents)


class Cluster:
    """Public verbs for scenario tests: crash, restart, isolate, heal, propose, run_for."""

    def __init__(self, seed: int, cfg: SimConfig | None = None, trace: bool = False) -> None:
        self.seed = seed
        self.cfg = cfg or SimConfig()
        self.rng = random.Random(seed)
        self.net = Network(random.Random(f"{seed}/net"), self.cfg.net)
        self.now = 0.0
        self._events: list[tuple[float, int, str, Any, Any]] = []
        self._seq = 0
        self.inv = Invariants()
        self.ids = [f"n{i + 1}" for i in range(self.cfg.nodes)]
        self.nodes = {i: SimNode(i) for i in self.ids}
        self.trace: list[str] | None = [] if trace else None
        self.on_apply: Callable[[SimNode, Entry, Verdict, int], None] | None = None
        self.elections = 0
        for i in self.ids:
            self.restart(i)

    # ------------------------------------------------------------------ event loop

    def _push(self, t: float, kind: str, a: Any = None, b: Any = None) -> None:
        self._seq += 1
        heapq.heappush(self._events, (t, self._seq, kind, a, b))

    def at(self, delay_ms: float, fn: Callable[[], None]) -> None:
        self._push(self.now + delay_ms, "call", fn)

    def run_for(self, ms: float) -> None:
        self.run_until(self.now + ms)

    def run_until(self, t_end: float, stop: Callable[[], bool] | None = None) -> bool:
        ev = self._events
        while ev and ev[0][0] <= t_end:
            t, _, kind, a, b = heapq.heappop(ev)
            self.now = t
            if kind == "deliver":
                self._deliver(a)
            elif kind == "tick":
                self._tick(a, b)
            elif kind == "disk":
                self._disk_done(a, b)
            else:
                a()
            if stop is not None and stop():
                return True
        self.now = max(self.now, t_end)
        return stop() if stop is not None else False

    def log(self, text: str) -> None:
        if self.trace is not None:
            self.trace.append(f"{self.now:10.2f} {text}")

    # ------------------------------------------------------------------ node lifecycle

    def restart(self, nid: str) -> None:
        n = self.nodes[nid]
        if n.up:
            return
        n.incarnation += 1
        n.raft = RaftNode(
            nid,
            self.ids,
            random.Random(f"{self.seed}/{nid}/{n.incarnation}"),
            self.cfg.raft,
            n.synced_hs,
            list(n.synced_log),
        )
        n.up = True
        n.pending.clear()
        n.last_commit = 0
        n.applied = 0
        n.applied_keys = set()
        n.sessions = SessionTable()
        n.read_waits = []
        n.last_disk_done = self.now
        self.log(f"{nid} start (term {n.synced_hs.term}, log {len(n.synced_log)})")
        self._push(self.now + self.rng.uniform(0, self.cfg.tick_ms), "tick", nid, n.incarnation)

    def crash(self, nid: str) -> None:
        n = self.nodes[nid]
        if not n.up:
            return
        if self.cfg.crash_flush_prefix and n.pending and self.rng.random() < 0.5:
            k = self.rng.randrange(len(n.pending) + 1)
            for i, rd in enumerate(list(n.pending)[: k + 1]):
                if i < k:
                    n.persist(rd)
                elif i < len(n.pending) and rd.entries:
                    n.persist(rd, self.rng.randrange(len(rd.entries) + 1))
        n.up = False
        n.raft = None
        n.pending.clear()
        self.log(f"{nid} CRASH")

    def up_ids(self) -> list[str]:
        return [i for i in self.ids if self.nodes[i].up]

    # ------------------------------------------------------------------ network verbs

    def isolate(self, nid: str) -> None:
        self.net.isolate(nid, self.ids)
        self.log(f"isolate {nid}")

    def reconnect(self, nid: str) -> None:
        self.net.reconnect(nid)
        self.log(f"reconnect {nid}")

    def heal(self) -> None:
        self.net.heal()
        self.log("heal")

    # ------------------------------------------------------------------ queries

    def leader(self) -> str | None:
        """The up leader with the highest term, if any."""
        best: tuple[int, str] | None = None
        for i in self.up_ids():
            r = self.nodes[i].raft
            if r is not None and r.role == Role.LEADER and (best is None or r.term > best[0]):
                best = (r.term, i)
        return None if best is None else best[1]

    def raft(self, nid: str) -> RaftNode:
        r = self.nodes[nid].raft
        if r is None:
            raise RuntimeError(f"{nid} is down")
        return r

    def propose(self, nid: str, data: bytes, client_id: str = "", seq: int = 0) -> int | None:
        n = self.nodes[nid]
        if not n.up or n.raft is None:
            return None
        try:
            idx = n.raft.propose(data, client_id, seq)
        except RaftError:
            return None
        self._process(n)
        return idx

    def read(self, nid: str, rid: int, done: Callable[[SimNode], None]) -> bool:
        """Start a ReadIndex read on ``nid``; ``done(node)`` runs once it may be served."""
        n = self.nodes[nid]
        if not n.up or n.raft is None:
            return False
        n.raft.read_index(rid)
        n.read_waits.append((ReadState(rid, -1, False), done))
        self._process(n)
        return True

    def wait_for(self, cond: Callable[[], bool], limit_ms: float) -> bool:
        if cond():
            return True
        return self.run_until(self.now + limit_ms, cond)

    # ------------------------------------------------------------------ internals

    def _tick(self, nid: str, inc: int) -> None:
        n = self.nodes[nid]
        if not n.up or n.incarnation != inc or n.raft is None:
            return
        n.raft.tick(int(self.now))
        if n.raft.role == Role.LEADER:
            self._check_matches(n.raft)
        self._process(n)
        self._push(self.now + self.cfg.tick_ms, "tick", nid, inc)

    def _deliver(self, m: Message) -> None:
        n = self.nodes[m.dst]
        if not n.up or n.raft is None or not self.net.can_pass(m.src, m.dst):
            return
        n.raft.step(m)
        self._process(n)

    def _transmit(self, m: Message) -> None:
        for t in self.net.send(m.src, m.dst, type(m).__name__, self.now):
            self._push(t, "deliver", m)

    def _process(self, n: SimNode) -> None:
        r = n.raft
        assert r is not None
        while r.has_ready():
            rd = r.ready()
            self._check_ready(n, r, rd)
            for m in rd.messages:
                self._transmit(m)
            if self.cfg.early_apply:
                # As the real runtime does: committed entries are durable on a quorum, so
                # they may be applied before this node's own copy is.
                for e in rd.committed_entries:
                    self._apply(n, e)
                rd.committed_entries = []
            done = self.now
            if rd.must_sync:
                done += self.rng.uniform(self.cfg.disk_ms_min, self.cfg.disk_ms_max)
            done = max(done, n.last_disk_done)
            n.last_disk_done = done
            n.pending.append(rd)
            self._push(done, "disk", n.id, n.incarnation)

    def _check_ready(self, n: SimNode, r: RaftNode, rd: Ready) -> None:
        if r.role == Role.LEADER and r.term not in n.led_terms:
            n.led_terms.add(r.term)
            self.elections += 1
            self.log(f"{n.id} LEADER term {r.term}")
            self.inv.on_leader(
                n.id, r.term, [(i, r.log.term(i) or 0) for i in range(1, r.log.last_index() + 1)]
            )
        if rd.entries:
            first = rd.entries[0].index
            self.inv.on_entries(n.id, rd.entries, r.log.term(first - 1) or 0)
        c = r.log.committed
        if c < n.last_commit:
            self.inv.fail(f"{n.id} commit index went back from {n.last_commit} to {c}")
        if c > n.last_commit:
            self.inv.check_committed_range(n.id, n.last_commit + 1, c, r.log.entry)
            n.last_commit = c

    def _check_matches(self, r: RaftNode) -> None:
        """The leader's belief about a follower never exceeds the follower's durable log.

        A follower acknowledges only what it persisted, and nobody but a newer leader (which
        would have raised the follower's term) may truncate it. So while the follower's
        durable term equals the leader's, the entry at ``match`` must be on its disk.
        """
        for p, pr in r.progress.items():
            if pr.match == 0:
                continue
            peer = self.nodes[p]
            if peer.synced_hs.term != r.term:
                continue
            log = peer.synced_log
            if len(log) < pr.match or log[pr.match - 1].term != r.log.term(pr.match):
                self.inv.fail(
                    f"leader {r.id} term {r.term} believes {p} matches up to {pr.match}, "
                    f"but {p}'s durable log has {len(log)} entries"
                )

    def _disk_done(self, nid: str, inc: int) -> None:
        n = self.nodes[nid]
        if not n.up or n.incarnation != inc or n.raft is None or not n.pending:
            return
        rd = n.pending.popleft()
        n.persist(rd)
        for m in rd.persisted_messages:
            self._transmit(m)
        for e in rd.committed_entries:
            self._apply(n, e)
        n.raft.advance(rd)
        for rs in rd.read_states:
            self._on_read_state(n, rs)
        self._serve_reads(n)
        self._process(n)

    def _apply(self, n: SimNode, e: Entry) -> None:
        if e.index != n.applied + 1:
            self.inv.fail(f"{n.id} applied {e.index} after {n.applied}")
        self.inv.check_applied(n.id, e)
        n.applied = e.index
        if e.kind != EntryKind.NORMAL or not e.client_id:
            return
        verdict, cached = n.sessions.check(e.client_id, e.seq, e.ts_ms)
        result = e.index
        if verdict == Verdict.APPLY:
            key = (e.client_id, e.seq)
            if key in n.applied_keys:
                self.inv.fail(f"{n.id} applied client request {key} twice")
            n.applied_keys.add(key)
            n.sessions.record(e.client_id, e.seq, e.index)
        elif verdict == Verdict.DUPLICATE and cached is not None:
            result = cached
        if self.on_apply is not None:
            self.on_apply(n, e, verdict, result)

    def _on_read_state(self, n: SimNode, rs: ReadState) -> None:
        for i, (w, done) in enumerate(n.read_waits):
            if w.request_id == rs.request_id and w.index == -1:
                n.read_waits[i] = (rs, done)
                return

    def _serve_reads(self, n: SimNode) -> None:
        keep = []
        for rs, done in n.read_waits:
            if rs.index == -1:
                keep.append((rs, done))
            elif not rs.ok:
                continue  # refused: the caller's timeout retries elsewhere
            elif n.applied >= rs.index:
                done(n)
            else:
                keep.append((rs, done))
        n.read_waits = keep
