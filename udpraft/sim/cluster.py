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
from dataclasses import dataclass, field, replace
from typing import Any

from udpraft.core.batch import EntryBatch
from udpraft.core.errors import RaftError
from udpraft.core.membership import Membership
from udpraft.core.messages import AppendEntries, InstallSnapshot, Message
from udpraft.core.raft import RaftNode
from udpraft.core.ready import Config, ReadState, Ready, Role
from udpraft.core.sessions import SessionSnapshot, SessionTable, Verdict
from udpraft.core.types import (
    EMPTY_HARD_STATE,
    NO_SNAPSHOT,
    Entry,
    EntryKind,
    HardState,
    SnapshotMeta,
)
from udpraft.sim.invariants import Invariants
from udpraft.sim.network import NetConfig, Network

SIM_RAFT_CONFIG = Config(election_ticks=10, heartbeat_ticks=2, max_inflight_msgs=64)
_MASK = (1 << 64) - 1
# Events one seed may run. Measured: the heaviest of 120 seeds (40 each of 3, 5, 7 nodes) ran
# 167,000, of 40 five-node seeds with membership changes 587,000. A livelock fails here
# (in about a minute) instead of hanging the sweep while its event heap grows.
MAX_EVENTS = 10_000_000
SnapState = tuple[frozenset[tuple[str, int]], SessionSnapshot[int]]


@dataclass(slots=True)
class SimConfig:
    nodes: int = 5
    tick_ms: float = 10.0
    disk_ms_min: float = 0.05
    disk_ms_max: float = 2.0
    crash_flush_prefix: bool = True  # a crash may make part of the in-flight writes durable
    early_apply: bool = False  # apply committed entries when the Ready is taken, not after fsync
    snapshot_every: int = 0  # take a snapshot and compact the log every N applied entries
    # Deliver AppendEntries with their entries in column form too, as the wire decoder
    # does (core/batch.py): the logs then fill their cold columns from the batches.
    batches: bool = False
    raft: Config = SIM_RAFT_CONFIG
    net: NetConfig = field(default_factory=NetConfig)


class SimNode:
    __slots__ = (
        "applied",
        "applied_keys",
        "id",
        "incarnation",
        "incoming_snap",
        "installed",
        "last_commit",
        "last_disk_done",
        "led_terms",
        "pending",
        "raft",
        "read_waits",
        "sessions",
        "snap",
        "snap_state",
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
        # Durable snapshot: its meta and the state machine at its index (applied client keys,
        # session table). The durable log (synced_log) holds the entries after it.
        self.snap = NO_SNAPSHOT
        self.snap_state: SnapState = (frozenset(), SessionTable[int]().snapshot())
        self.incoming_snap: tuple[SnapshotMeta, SnapState] | None = None
        self.installed = 0  # index of the last snapshot restored into the state machine

    def persist(self, rd: Ready, n_entries: int | None = None, snap_state: SnapState | None = None) -> None:
        if rd.snapshot is not None and snap_state is not None and rd.snapshot.index > self.snap.index:
            meta = rd.snapshot
            pos = meta.index - self.snap.index  # synced_log[pos - 1] is the entry at meta.index
            keep = 0 < pos <= len(self.synced_log) and self.synced_log[pos - 1].term == meta.term
            self.synced_log = self.synced_log[pos:] if keep else []
            self.snap, self.snap_state = meta, snap_state
        if rd.hard_state is not None:
            self.synced_hs = rd.hard_state
        ents = rd.entries if n_entries is None else rd.entries[:n_entries]
        if ents:
            del self.synced_log[ents[0].index - self.snap.index - 1 :]
            self.synced_log.extend(ents)

    def take_snapshot(self, meta: SnapshotMeta) -> None:
        """Make a snapshot of the current state machine (at ``meta.index``) durable."""
        drop = meta.index - self.snap.index
        self.snap = meta
        self.snap_state = (frozenset(self.applied_keys), self.sessions.snapshot())
        del self.synced_log[:drop]


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
        self.events_run = 0
        self.max_events = MAX_EVENTS
        self.inv = Invariants()
        self.ids = [f"n{i + 1}" for i in range(self.cfg.nodes)]
        self.nodes = {i: SimNode(i) for i in self.ids}
        # Membership: the initial voters; nodes added later start empty and learn the
        # configuration from the leader. ``committed_conf`` follows the committed log.
        self.initial_ids = list(self.ids)
        self.joiners: set[str] = set()
        self.committed_conf = Membership.of(self.ids)
        self._conf_scan = 0
        self.trace: list[str] | None = [] if trace else None
        self.on_apply: Callable[[SimNode, Entry, Verdict, int], None] | None = None
        self.elections = 0
        self._snap_data: dict[int, tuple[SnapshotMeta, SnapState]] = {}
        # Snapshot state travelling with a Ready from _process to its disk completion.
        self._rd_state: dict[int, SnapState] = {}
        self._digests: list[tuple[int, int]] = [(0, 0)]  # per committed index, see _digest_upto
        self._digest_sessions: SessionTable[int] = SessionTable()
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
            self.events_run += 1
            if self.events_run > self.max_events:
                # A livelock (nodes answering each other forever at one instant, a message
                # storm) would otherwise hang the sweep and grow without bound.
                self.inv.fail(f"over {self.max_events:,} simulator events "
                              f"(at {self.now:.1f} ms): a livelock or a message storm")
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
            [] if nid in self.joiners else self.initial_ids,
            random.Random(f"{self.seed}/{nid}/{n.incarnation}"),
            self.cfg.raft,
            n.synced_hs,
            list(n.synced_log),
            n.snap,
        )
        n.up = True
        n.pending.clear()
        n.last_commit = n.snap.index
        n.applied = n.snap.index
        n.applied_keys = set(n.snap_state[0])
        n.sessions = SessionTable()
        n.sessions.restore(n.snap_state[1])
        n.incoming_snap = None
        n.installed = n.snap.index
        n.read_waits = []
        n.last_disk_done = self.now
        self.log(f"{nid} start (term {n.synced_hs.term}, log {len(n.synced_log)})")
        self._push(self.now + self.rng.uniform(0, self.cfg.tick_ms), "tick", nid, n.incarnation)
        for other in self.up_ids():  # as the runtime does when it sees a new incarnation
            r = self.nodes[other].raft
            if other != nid and r is not None:
                r.peer_restarted(nid)
                self._process(self.nodes[other])

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

    def add_node(self) -> str:
        """Start a fresh, empty node with a never-used id; it joins once a leader adds it."""
        nid = f"n{len(self.ids) + 1}"
        self.ids.append(nid)
        self.nodes[nid] = SimNode(nid)
        self.joiners.add(nid)
        self.log(f"new node {nid}")
        self.restart(nid)
        return nid

    def conf_change(self, nid: str, op: str, target: str) -> int | None:
        """Propose a membership change on ``nid``; the entry's index, or None if refused."""
        n = self.nodes[nid]
        if not n.up or n.raft is None:
            return None
        try:
            idx = n.raft.propose_conf_change(op, target)
        except RaftError as e:
            self.log(f"{nid} refuses {op} {target}: {e}")
            return None
        self.log(f"{nid} proposes {op} {target} at {idx}")
        self._process(n)
        return idx

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
        if isinstance(m, InstallSnapshot):
            n.incoming_snap = self._snap_data.get(id(m))
        elif self.cfg.batches and isinstance(m, AppendEntries) and m.entries:
            m = replace(m, batch=EntryBatch.of(m.entries))
        n.raft.step(m)
        self._process(n)

    def _transmit(self, m: Message) -> None:
        if isinstance(m, InstallSnapshot):
            # As the runtime does: ship the sender's latest durable snapshot (data and all).
            sender = self.nodes[m.src]
            if sender.snap.index < m.index:
                return
            sn = sender.snap
            m = InstallSnapshot(m.src, m.dst, m.term, sn.index, sn.term, sn.conf)
            self._snap_data[id(m)] = (sender.snap, sender.snap_state)
        for t in self.net.send(m.src, m.dst, type(m).__name__, self.now):
            self._push(t, "deliver", m)

    def _process(self, n: SimNode) -> None:
        r = n.raft
        assert r is not None
        while r.has_ready():
            rd = r.ready()
            if rd.snapshot is not None:
                self._install_snapshot(n, rd)
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

    def _install_snapshot(self, n: SimNode, rd: Ready) -> None:
        meta = rd.snapshot
        assert meta is not None
        if n.incoming_snap is None or n.incoming_snap[0] != meta:
            self.inv.fail(f"{n.id} installs snapshot {meta} it never received")
        _m, state = n.incoming_snap  # type: ignore[misc]
        if self._digest(state[0]) != self._digest_upto(meta.index):
            self.inv.fail(f"snapshot {meta} from the leader does not hold the committed prefix")
        n.applied_keys = set(state[0])
        n.sessions = SessionTable()
        n.sessions.restore(state[1])
        n.applied = max(n.applied, meta.index)
        n.installed = max(n.installed, meta.index)
        n.last_commit = max(n.last_commit, meta.index)
        n.incoming_snap = None
        self._rd_state[id(rd)] = state
        self.log(f"{n.id} installs snapshot at {meta.index}/{meta.term}")

    def _digest_upto(self, index: int) -> tuple[int, int]:
        """(count, order-free hash) of the client requests the committed prefix applies.

        Built incrementally over the global committed log with its own session table, so
        each snapshot check costs only the snapshot's own keys.
        """
        if index > len(self.inv.committed):
            self.inv.fail(f"snapshot at {index} beyond the committed log ({len(self.inv.committed)})")
        dig = self._digests
        while len(dig) <= index:
            e = self.inv.committed[len(dig) - 1]
            count, h = dig[-1]
            if e.kind == EntryKind.NORMAL and e.client_id:
                v, _ = self._digest_sessions.check(e.client_id, e.seq, e.ts_ms)
                if v == Verdict.APPLY:
                    self._digest_sessions.record(e.client_id, e.seq, e.index)
                    count, h = count + 1, (h + hash((e.client_id, e.seq))) & _MASK
            dig.append((count, h))
        return dig[index]

    @staticmethod
    def _digest(keys: set[tuple[str, int]] | frozenset[tuple[str, int]]) -> tuple[int, int]:
        return len(keys), sum(hash(k) for k in keys) & _MASK

    def _maybe_snapshot(self, n: SimNode) -> None:
        r = n.raft
        every = self.cfg.snapshot_every
        if not every or r is None or n.applied - n.snap.index < every:
            return
        if n.applied != r.log.applied or r.log.stable < n.applied or n.applied <= r.log.offset:
            return  # the state machine must sit exactly at a durable, applied index
        conf = r.conf_at(n.applied)
        meta = SnapshotMeta(n.applied, r.log.term(n.applied) or 0, conf.encode().decode())
        if self._digest(n.applied_keys) != self._digest_upto(meta.index):
            self.inv.fail(f"{n.id}'s state at {meta.index} differs from the committed prefix")
        n.take_snapshot(meta)
        r.compact(meta)
        self.log(f"{n.id} snapshot at {meta.index}/{meta.term}; log compacted")

    def _check_ready(self, n: SimNode, r: RaftNode, rd: Ready) -> None:
        if r.role == Role.LEADER and r.term not in n.led_terms:
            n.led_terms.add(r.term)
            self.elections += 1
            self.log(f"{n.id} LEADER term {r.term}")
            self.inv.on_leader(n.id, r.term, r.log.offset, r.log.term)
        if rd.entries:
            first = rd.entries[0].index
            self.inv.on_entries(n.id, rd.entries, r.log.term(first - 1) or 0)
        c = r.log.committed
        if c < n.last_commit:
            self.inv.fail(f"{n.id} commit index went back from {n.last_commit} to {c}")
        if c > n.last_commit:
            lo = max(n.last_commit, r.log.offset) + 1
            self.inv.check_committed_range(n.id, lo, c, r.log.entry)
            n.last_commit = c
            com = self.inv.committed
            while self._conf_scan < len(com):
                e = com[self._conf_scan]
                self._conf_scan += 1
                if e.kind == EntryKind.CONFIG:
                    m = Membership.decode(e.data)
                    if m is None:
                        self.inv.fail(f"committed CONFIG entry {e.index} does not decode")
                    else:
                        self.committed_conf = m

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
            if peer.synced_hs.term != r.term or pr.match <= peer.snap.index:
                continue
            log = peer.synced_log
            pos = pr.match - peer.snap.index
            leader_term = r.log.term(pr.match)
            if leader_term is None:
                continue  # compacted on the leader: covered by snapshots
            if len(log) < pos or log[pos - 1].term != leader_term:
                self.inv.fail(
                    f"leader {r.id} term {r.term} believes {p} matches up to {pr.match}, "
                    f"but {p}'s durable log has {len(log)} entries"
                )

    def _disk_done(self, nid: str, inc: int) -> None:
        n = self.nodes[nid]
        if not n.up or n.incarnation != inc or n.raft is None or not n.pending:
            return
        rd = n.pending.popleft()
        n.persist(rd, snap_state=self._rd_state.pop(id(rd), None))
        for m in rd.persisted_messages:
            self._transmit(m)
        for e in rd.committed_entries:
            self._apply(n, e)
        n.raft.advance(rd)
        for rs in rd.read_states:
            self._on_read_state(n, rs)
        self._serve_reads(n)
        self._maybe_snapshot(n)
        self._process(n)

    def _apply(self, n: SimNode, e: Entry) -> None:
        if e.index <= n.applied and e.index <= max(n.snap.index, n.installed):
            return  # handed out before a snapshot covering it was installed
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
