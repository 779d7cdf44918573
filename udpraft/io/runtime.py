"""NodeRuntime: the pure Raft core wired to a UDP socket, a disk and a clock.

How this works — one asyncio loop (uvloop in production), three kinds of work:

1. Inputs. A datagram is authenticated, deduplicated (reliability layer) and either stepped
   into the core (peer messages) or handled as a client request (clients.py, a mixin;
   linearizable reads are reads.py, another). A
   timer ticks the core every ``tick_s``. Client submits are collected and proposed as one
   batch per loop turn.
2. Drive. After inputs, ``_drive`` takes every Ready: messages that may leave now go now (a
   leader's appends and heartbeats never wait for the disk, §10.2.1), the rest of the Ready
   joins the persist queue.
3. Persist. One task writes the queued Readies and fsyncs once for all of them (group
   commit) in a single disk thread, so the loop keeps receiving, ticking and heartbeating
   during the fsync. Then, in order: send what needed durability (votes, append answers),
   apply committed entries and answer waiting clients, ``advance``.

A failed disk write ends the process (crash-only): the launcher restarts it and recovery
runs from the durable log.

Snapshots (snapshot_transfer.py does the work; the hooks here are marked ``[snapshots]``):
start-up joins the newest valid snapshot with the log, ``_drive`` gives the Snapshotter its
turn and installs a received snapshot before applying a Ready's committed entries, the disk
thread persists it with the Ready, and InstallSnapshot / snapshot chunks are routed to it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import secrets
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from udpraft.config import ClusterConfig
from udpraft.core.errors import NotLeader, ProposalDropped
from udpraft.core.messages import (
    MESSAGE_TYPES,
    InstallSnapshot,
    Message,
    coalesce_append_resps,
)
from udpraft.core.raft import RaftNode
from udpraft.core.ready import Config, ReadState, Ready, Role
from udpraft.core.sessions import Verdict
from udpraft.core.types import Entry
from udpraft.io.appforward import AppForwarding
from udpraft.io.clients import ClientHandling
from udpraft.io.disk import DiskThread
from udpraft.io.faults import FaultHook
from udpraft.io.hist import Histogram
from udpraft.io.local import LocalBatch, LocalProposals, Waiter
from udpraft.io.members import AddressBook, MemberChanges
from udpraft.io.reads import LinearizableReads
from udpraft.io.snapshot_transfer import Snapshotter
from udpraft.io.snapshots import SnapshotStore, recover
from udpraft.reliability.endpoint import ReliableEndpoint
from udpraft.service.logservice import Application, LogService, Outcome
from udpraft.storage.base import LogStore
from udpraft.wire import (
    AppForward,
    AppForwardResp,
    ClientKind,
    ClientRequest,
    ClientResponse,
    Forward,
    WireContext,
)
from udpraft.wire.messages import SnapshotAck, SnapshotChunk

log = logging.getLogger("udpraft.node")


Addr = tuple[str, int]
_RAFT = frozenset(MESSAGE_TYPES)
# 32 appends of up to 56 KB in flight per follower (~1.8 MB) stay well inside the 4 MiB
# socket buffers: a deeper window let a burst overflow a follower's buffer, starving
# heartbeats until the leader lost its term (seen with 1 KB x 10,000 in flight). 56 KB of
# entries (by Entry.size_bytes, which over-counts the columnar encoding) fill most of a
# 60 KB datagram; an append that still encodes larger is split by the endpoint.
DEFAULT_RAFT_CONFIG = Config(
    election_ticks=50, heartbeat_ticks=5, max_msg_bytes=56_000, max_inflight_msgs=32,
    max_apply_entries=1024,
)
FSYNC_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
BATCH_BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 5000.0)
# Committed entries whose client answers go out together (NodeRuntime._apply).
ANSWER_CHUNK = 256


class NodeRuntime(LinearizableReads, ClientHandling, LocalProposals, AppForwarding):
    def __init__(
        self,
        node_id: str,
        cluster: ClusterConfig,
        secret: bytes,
        store: LogStore,
        *,
        raft_config: Config | None = None,
        tick_s: float = 0.01,
        app: Application | None = None,
        snapshot_dir: str | None = None,
        snapshot_entries: int = 0,
    ) -> None:
        self.id = node_id
        self.cluster = cluster
        self.store = store
        self.tick_s = tick_s
        # [snapshots] the newest valid snapshot, then the log after it
        snaps = SnapshotStore(snapshot_dir) if snapshot_dir else None
        rec = recover(store, snaps)
        # A node of the initial configuration starts with it; one added later starts empty
        # and learns the membership from the leader (members.py).
        initial = cluster.initial_voters
        self.raft = RaftNode(
            node_id,
            initial if node_id in initial else (),
            random.Random(secrets.token_bytes(16)),
            raft_config or DEFAULT_RAFT_CONFIG,
            rec.hard_state,
            rec.entries,
            rec.snapshot,
        )
        self.service = LogService(app)
        if rec.body is not None:  # [snapshots]
            self.service.restore(rec.body)
            if self.service.applied_index != rec.snapshot.index:
                raise RuntimeError(f"snapshot {rec.snapshot} holds the state at {self.service.applied_index}")
        self.ctx = WireContext(
            cluster_id=cluster.cluster,
            secret=secret,
            node_id=node_id,
            incarnation=secrets.randbelow(2**62) + 1,
        )
        self.ep: ReliableEndpoint[Addr] = ReliableEndpoint(self.ctx)
        self.addr_of: dict[str, Addr] = {n.id: n.udp for n in cluster.nodes}
        self.id_of: dict[Addr, str] = {a: i for i, a in self.addr_of.items()}
        self.book = AddressBook(cluster, self.addr_of, self.id_of)
        self.book.sync(self.raft.conf)
        self.members = MemberChanges(self)
        self.faults = FaultHook(random.Random(secrets.token_bytes(8)))
        self.counters: Counter[str] = Counter()
        self.fsync_s = Histogram(FSYNC_BUCKETS)
        self.batch_sizes = Histogram(BATCH_BUCKETS)
        self.started_at = time.time()
        self.transport: asyncio.DatagramTransport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._disk = DiskThread(f"disk-{node_id}")
        self.snapper = (  # [snapshots]
            Snapshotter(self, snaps, snapshot_entries, self._disk, rec.snapshot) if snaps else None
        )
        self._persist_q: list[Ready] = []
        self._persist_task: asyncio.Task[None] | None = None
        self._drive_scheduled = False
        self._proposals: list[tuple[bytes, str, int]] = []
        self._waiters: dict[tuple[str, int], list[tuple[int, Addr, float]]] = {}
        self._reads: dict[int, Callable[[ReadState], None]] = {}
        # local proposals (local.py): this turn's payloads and waiters, proposed batches
        self._local_datas: list[bytes] = []
        self._local_waits: list[Waiter] = []
        self._local_tos: list[float] = []
        self._local_batches: deque[LocalBatch] = deque()
        self._local_waiters: dict[int, tuple[int, Waiter]] = {}
        self._ready_reads: list[tuple[int, Callable[[ReadState], None], ReadState]] = []
        self._read_ids = 0
        self._tick_handle: asyncio.TimerHandle | None = None
        self._ep_timer: asyncio.Handle | None = None  # a TimerHandle, or a Handle when due
        self._ep_timer_at = 0.0  # loop time it is due at
        self._stopping = False
        self.on_event: Callable[[str, dict[str, Any]], None] | None = None
        self.on_app_forward: Callable[[str, AppForward], None] | None = None  # appforward.py
        self.on_app_forward_resp: Callable[[str, AppForwardResp], None] | None = None
        self.events: deque[dict[str, Any]] = deque(maxlen=200)  # role/term changes, for views
        self.link_out: Counter[str] = Counter()  # Raft messages sent, per peer
        self.link_in: Counter[str] = Counter()  # Raft messages received, per peer
        self._peer_inc: dict[str, int] = {}  # last incarnation seen per peer
        self.heard_at: dict[str, float] = {}  # monotonic time of the last Raft message per peer
        self._last_role = self.raft.role
        self._last_term = self.raft.term

    # ================================================================== lifecycle

    def attach(self, transport: asyncio.DatagramTransport) -> None:
        self.transport = transport
        self._loop = asyncio.get_running_loop()
        self._tick_handle = self._loop.call_later(self.tick_s, self._tick)

    async def stop(self) -> None:
        self._stopping = True
        if self._tick_handle:
            self._tick_handle.cancel()
        if self._persist_task is not None:
            try:
                await asyncio.wait_for(self._persist_task, 5.0)
            except (TimeoutError, asyncio.CancelledError):
                pass
        if self.snapper is not None:  # [snapshots]
            self.snapper.close()
        loop = asyncio.get_running_loop()
        await self._disk.call(loop, self.store.close)
        self._disk.shutdown(wait=True)
        if self.transport is not None:
            self.transport.close()

    # ================================================================== inputs

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        self.counters["datagrams_in"] += 1
        peer = self.id_of.get(addr, "")
        if self.faults.partitioned and not self.faults.inbound(peer):
            return
        now = time.monotonic()
        for d in self.ep.receive_datagram(data, addr, now):
            m = d.msg
            if type(m) in _RAFT:
                rm: Message = m  # type: ignore[assignment]
                if rm.src != d.sender:
                    self.counters["drop_src_mismatch"] += 1
                    continue
                if rm.src not in self.addr_of and not self.book.learn(rm.src, addr):
                    self.counters["drop_unknown_peer"] += 1
                    continue
                self.link_in[rm.src] += 1
                self.heard_at[rm.src] = now
                known = self._peer_inc.get(rm.src)
                if known != d.incarnation:
                    self._peer_inc[rm.src] = d.incarnation
                    if known is not None:  # the peer restarted: it may have lost its disk
                        self.raft.peer_restarted(rm.src)
                self.raft.step(rm)
            elif isinstance(m, ClientRequest):
                self._on_client(m, addr, forwarded=False)
            elif isinstance(m, Forward):
                if d.sender not in self.addr_of:
                    self.counters["drop_forward_from_stranger"] += 1
                    continue
                self._on_client(m.request, (m.client_host, m.client_port), forwarded=True)
            elif type(m) is AppForward or type(m) is AppForwardResp:
                self._on_app_forward(d.sender, m)
            elif isinstance(m, SnapshotChunk | SnapshotAck):  # [snapshots]
                if d.sender not in self.addr_of or self.snapper is None:
                    self.counters["drop_snapshot_msg"] += 1
                elif isinstance(m, SnapshotChunk):
                    self.snapper.on_chunk(d.sender, m)
                else:
                    self.snapper.on_ack(d.sender, m)
            else:
                self.counters["drop_unexpected"] += 1
        self._kick()

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable (a dead peer), EPERM from a firewall: counted, never fatal.
        self.counters[f"icmp_{getattr(exc, 'errno', 0)}"] += 1

    def _tick(self) -> None:
        if self._stopping or self._loop is None:
            return
        self._tick_handle = self._loop.call_later(self.tick_s, self._tick)
        self.raft.tick(int(time.time() * 1000))
        self._note_role()
        self.counters["ticks"] += 1
        if self.counters["ticks"] % 10 == 0:
            self._expire_local()
        if self.counters["ticks"] % 100 == 0:
            self._expire_waiters()
        if self.snapper is not None and self.counters["ticks"] % 10 == 0:  # [snapshots]
            self.snapper.tick()
        self._kick()

    # ================================================================== drive

    def _kick(self) -> None:
        if not self._drive_scheduled and self._loop is not None:
            self._drive_scheduled = True
            self._loop.call_soon(self._drive)

    def _drive(self) -> None:
        self._drive_scheduled = False
        if self._proposals:
            props, self._proposals = self._proposals, []
            self._propose(props)
        if self._local_datas:
            self._propose_local_batch()
        if self.raft.has_ready():
            # One Ready per loop turn, with at most ``max_apply_entries`` (1,024) committed
            # entries: the callbacks of those (new proposals), acks, the disk task and the
            # appends they produce get a turn before the next chunk, so the leader, its disk
            # and the followers work side by side instead of in waves of a whole window
            # (tools.bench embedded, W=10,000: +20-35% proposals/s, p99 -30%).
            rd = self.raft.ready()
            self.book.sync(self.raft.conf)  # a new member's address, before we send to it
            if rd.snapshot is not None and self.snapper is not None:  # [snapshots]
                self.snapper.restore_for_ready(rd)  # before its committed entries apply
            for m in rd.messages:
                self._send_raft(m)
            # Committed entries are durable on a quorum, so they are applied (and clients
            # answered) at once rather than behind this node's own fsync: the state machine
            # is volatile and rebuilt from the log, so nothing depends on the local copy.
            if rd.committed_entries:
                self._apply(rd.committed_entries)
            self._take_read_states(rd)
            if (rd.entries or rd.hard_state is not None or rd.persisted_messages
                    or rd.snapshot is not None or self._persist_q):
                self._persist_q.append(rd)
            else:
                self.raft.advance(rd)
            if self.raft.has_ready():
                self._kick()  # the rest on the next turn
        if self.snapper is not None:  # [snapshots] take one, compact the log
            self.snapper.on_drive()
        self._serve_reads()
        self._note_role()
        self._flush_net()
        if self._persist_q and self._persist_task is None and not self._stopping:
            assert self._loop is not None
            self._persist_task = self._loop.create_task(self._persist_loop())

    def _propose(self, props: list[tuple[bytes, str, int]]) -> None:
        try:
            self.raft.propose_batch(props)
            self.batch_sizes.observe(len(props))
        except NotLeader as e:
            self._fail_waiters(props, "not_leader", e.leader)
        except ProposalDropped:
            self._fail_waiters(props, "busy", self.raft.leader)

    async def _persist_loop(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._persist_q:
                batch, self._persist_q = self._persist_q, []
                if any(rd.entries or rd.hard_state or rd.snapshot for rd in batch):
                    t0 = time.perf_counter()
                    try:
                        await self._disk.call(loop, self._write_batch, batch)
                    except Exception:
                        log.critical("node %s: disk write failed; stopping (crash-only)", self.id,
                                     exc_info=True)
                        os._exit(70)
                    self.fsync_s.observe(time.perf_counter() - t0)
                self._after_persist(batch)
                self._serve_reads()
                self._drive()
        except Exception:  # a bug: say so, not "disk write failed"; still crash-only
            log.critical("node %s: internal error after a durable write; stopping (crash-only)",
                         self.id, exc_info=True)
            os._exit(70)
        finally:
            self._persist_task = None

    def _write_batch(self, batch: list[Ready]) -> None:
        for rd in batch:
            if rd.snapshot is not None and self.snapper is not None:  # [snapshots]
                self.snapper.persist_install(rd.snapshot)  # file, then log reset/compact
            if rd.entries:
                self.store.append(rd.entries, rd.entry_batches)
            if rd.hard_state is not None:
                self.store.set_hard_state(rd.hard_state)
        self.store.sync()
        self.counters["fsyncs"] += 1

    def _after_persist(self, batch: list[Ready]) -> None:
        """The batch is durable: send what waited for it, then advance each Ready. One
        group commit acknowledged every append of the batch, so one answer per leader and
        term says all of it (coalesce_append_resps). A batch installing a snapshot goes
        Ready by Ready: each install settles before the messages after it."""
        if any(rd.snapshot is not None for rd in batch):  # [snapshots]
            for rd in batch:
                if rd.snapshot is not None and self.snapper is not None:
                    self.snapper.on_installed(rd.snapshot)
                for m in rd.persisted_messages:
                    self._send_raft(m)
                self.raft.advance(rd)
            return
        msgs = batch[0].persisted_messages if len(batch) == 1 else coalesce_append_resps(
            [m for rd in batch for m in rd.persisted_messages])  # one Ready's: already cut
        for m in msgs:
            self._send_raft(m)
        for rd in batch:
            self.raft.advance(rd)

    # ================================================================== apply

    def _apply(self, entries: list[Entry]) -> None:
        if not (self._local_batches or self._local_waiters or self._waiters):
            self.service.apply_quietly(entries)  # nobody here waits for an outcome
            self.counters["applied"] += len(entries)
            return
        n = len(entries)
        if self._waiters and n > ANSWER_CHUNK:
            # Answer clients piece by piece, each piece's answers sent before the next
            # piece applies: a client starts its next requests while this node applies the
            # rest, so the clients, this node and the followers work side by side instead
            # of in lockstep rounds of a whole window (tools.bench submit 64 clients x 8
            # in flight: every round was one datagram of 512 submits and one of answers).
            for i in range(0, n, ANSWER_CHUNK):
                self._apply_part(entries[i : i + ANSWER_CHUNK])
                if i + ANSWER_CHUNK < n:
                    self._flush_net()
        else:
            self._apply_part(entries)
        self.counters["applied"] += n

    def _apply_part(self, entries: list[Entry]) -> None:
        outs = self.service.apply_all(entries)
        if self._local_batches or self._local_waiters:
            self._resolve_local(entries, outs)
        if self._waiters:
            self._answer_clients(entries, outs)

    def _answer_clients(self, entries: list[Entry], outs: list[Outcome | None]) -> None:
        replies: dict[tuple[Addr, int], list[list[int]]] = {}
        pop = self._waiters.pop
        expired = Verdict.EXPIRED
        for e, out in zip(entries, outs):
            if out is None:
                continue
            cid = e.client_id
            if not cid:
                continue
            seq = e.seq
            ws = pop((cid, seq), None)
            if not ws:
                continue
            if out.verdict == expired:
                for req_id, addr, _t in ws:
                    self._reply_error(ClientKind.SUBMIT, req_id, addr, "expired", "session expired")
                continue
            done = [seq, out.index, out.term]
            for req_id, addr, _t in ws:
                key = (addr, req_id)
                got = replies.get(key)
                if got is None:
                    replies[key] = [done]
                else:
                    got.append(done)
        for (addr, req_id), done_all in replies.items():
            self._reply(ClientResponse(ClientKind.SUBMIT, req_id, True, {"done": done_all}, self.id), addr)

    # ================================================================== sending

    def _send_raft(self, m: Message) -> None:
        if isinstance(m, InstallSnapshot):  # [snapshots] carried as chunks of the file
            if self.snapper is not None:
                self.snapper.send_snapshot(m)
            else:
                self.raft.report_snapshot(m.dst, False)
            return
        addr = self.addr_of.get(m.dst)
        if addr is None:
            return
        delay = self.faults.outbound(m.dst) if self.faults.active() else 0.0
        if delay is None:
            return
        self.link_out[m.dst] += 1
        if delay > 0 and self._loop is not None:
            self._loop.call_later(delay, self._send_later, addr, m)
            return
        self.ep.send(addr, m, False, time.monotonic())

    def _send_later(self, addr: Addr, m: Message) -> None:
        self.ep.send(addr, m, False, time.monotonic())
        self._flush_net()

    def _flush_net(self) -> None:
        tr = self.transport
        if tr is None:
            return
        now = time.monotonic()
        out = self.ep.datagrams_to_send(now)
        for data, addr in out:
            try:
                tr.sendto(data, addr)
            except OSError as e:  # EPERM from a firewall drop rule: count, carry on
                self.counters[f"send_error_{e.errno}"] += 1
        self.counters["datagrams_out"] += len(out)
        self._arm_ep_timer(now)

    def _arm_ep_timer(self, now: float) -> None:
        dl = self.ep.next_deadline()
        if dl is None or self._loop is None:
            return
        at = self._loop.time() + max(0.0, dl - now)
        if self._ep_timer is not None:
            if self._ep_timer_at <= at:
                return
            self._ep_timer.cancel()
        # The due time is kept here, not read back with TimerHandle.when(): uvloop's
        # call_later with a delay of 0 (a deadline already due) returns a plain Handle,
        # which has no when(); reading it killed the node (seen under KV load).
        self._ep_timer_at = at
        self._ep_timer = self._loop.call_later(at - self._loop.time(), self._on_ep_timer)

    def _on_ep_timer(self) -> None:
        self._ep_timer = None
        self.ep.handle_timer(time.monotonic())
        self._flush_net()

    # ================================================================== status

    def _note_role(self) -> None:
        r = self.raft
        if r.role != self._last_role or r.term != self._last_term:
            if self._last_role == Role.LEADER and self._waiters:
                self._lost_leadership()  # clients.py: tell them to retry at the leader
            if r.role == Role.LEADER and self._last_role != Role.LEADER:
                log.info("node %s: leader for term %d", self.id, r.term)
            ev = {"ts": time.time(), "role": r.role.name.lower(), "term": r.term,
                  "leader": r.leader}
            self.events.append(ev)
            if self.on_event is not None:
                self.on_event("role", ev)
            self._last_role = r.role
            self._last_term = r.term

    def status(self) -> dict[str, Any]:
        st = self.raft.status()
        st["applied_index"] = self.service.applied_index
        st["pid"] = os.getpid()
        st["uptime_s"] = round(time.time() - self.started_at, 3)
        st["counters"] = {
            **{f"raft_{k}": v for k, v in self.raft.counters.items()},
            **dict(self.counters),
            **{f"transport_{k}": v for k, v in self.ep.counters.items() if v},
            "session_duplicates": self.service.duplicates,
            "session_expired": self.service.expired,
            "waiters": len(self._waiters),
        }
        if self.snapper is not None:  # [snapshots]
            st["snapshot"] = self.snapper.status()
            st["first_log_index"] = self.raft.log.first_index()
        st["faults"] = self.faults.describe()
        st["links"] = {
            p: {"out": self.link_out[p], "in": self.link_in[p]} for p in self.addr_of if p != self.id
        }
        st["events"] = list(self.events)[-20:]
        return st

    def log_tail(self, n: int) -> list[dict[str, Any]]:
        """The last ``n`` log entries, for views: index, term, kind, data prefix, committed."""
        lg = self.raft.log
        hi = lg.last_index()
        lo = max(lg.first_index(), hi - max(0, min(n, 1000)) + 1)
        out = []
        for i in range(lo, hi + 1):
            e = lg.entry(i)
            out.append({
                "index": e.index, "term": e.term, "kind": e.kind.name.lower(),
                "data": e.data[:32].decode("utf-8", "replace"), "size": len(e.data),
                "committed": e.index <= lg.committed,
            })
        return out

    def transfer_leadership(self, target: str) -> None:
        self.raft.transfer_leadership(target)
        self._kick()
