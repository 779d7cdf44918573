"""Snapshots at run time: taking them, shipping them to lagging followers, installing them.

How this works — the runtime owns one ``Snapshotter`` and calls it at a few hook points.

Taking (``on_drive``, after every drive of the core). With ``--snapshot-entries N`` > 0, once
the state machine has applied N entries past the latest snapshot, and the index it sits at
is durable in the local log, the state is serialized on the loop (it is in memory) and the
file is written in the disk thread (snapshots.py). When that completes, the log is
compacted up to the *previous* snapshot: in memory (``raft.compact``) and on disk (the
disk thread's ``store.compact``). Keeping one interval more than the newest snapshot covers
means a damaged newest snapshot can be recovered from the older one plus the log, and a
follower that is less than N entries behind catches up from the log rather than by a whole
snapshot (etcd keeps "catch-up entries" for the same reason). The file backend drops whole
segments only; the stored log stays within about three snapshot intervals.

Sending (``send_snapshot``, for every InstallSnapshot the core emits instead of an append).
The newest snapshot file covering the requested index is opened (an open file survives
pruning) and streamed to the follower as ``SnapshotChunk`` messages of 32 KiB on the
reliable channel, at most ``WINDOW_CHUNKS`` beyond what the follower acknowledged. The
follower's ``SnapshotAck`` carries the offset up to which it holds every byte (so a
transfer resumes where it stopped) and, finally, DONE (or STALE: it needs no snapshot).
Then the core hears ``report_snapshot(peer, True)`` and waits for the follower's AppendResp;
while it waits, an empty chunk every ``RESEND_S`` makes the follower answer again (that
AppendResp travels unreliably, like every Raft message, and the core would otherwise wait
for its own timeout of ten election timeouts). No progress for ``RESEND_S`` resends the window from the acknowledged offset; none for
``GIVE_UP_S`` abandons the transfer with ``report_snapshot(peer, False)`` (the core probes
again and asks for a snapshot again if it must).

Receiving (``on_chunk``). Chunks are written at their offsets into
``snapshots/incoming-<index>-<term>-<tag>.part`` (memory stays bounded: only the offsets of
chunks ahead of a gap are remembered). A transfer for a snapshot at or below what this node
has (its commit index, its latest snapshot) is answered STALE, and stepped into the core once
so it tells the leader where this node is. When every byte is there, the disk thread
fsyncs and verifies the file (header, size, body checksum) and loads the body; only then is
``InstallSnapshot`` stepped into the core. The core answers with ``Ready.snapshot``:
``restore_for_ready`` restores the state machine from the received body before that Ready's
committed entries are applied, and ``persist_install`` (disk thread, as part of the Ready's
write) renames the file into place and compacts the stored log to the snapshot (if the core
kept the matching suffix) or resets it to start after it. The Ready's AppendResp goes out only
after that write is durable.

A damaged assembled file is deleted and answered FAILED; the sender starts over once, then
gives up (and avoids that file). A failing disk operation ends the process (crash-only), as
everywhere in the runtime.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from udpraft.core.errors import InvalidRequest
from udpraft.core.messages import InstallSnapshot
from udpraft.core.progress import ProgressState
from udpraft.core.ready import Ready, Role
from udpraft.core.types import NO_SNAPSHOT, SnapshotMeta
from udpraft.io.snapshots import (
    HEADER_SIZE,
    MAX_SNAPSHOT_BYTES,
    SnapshotDamaged,
    SnapshotStore,
    parse_header,
)
from udpraft.wire.messages import SnapshotAck, SnapshotChunk, SnapshotStatus

if TYPE_CHECKING:
    import asyncio

    from udpraft.io.runtime import NodeRuntime

log = logging.getLogger("udpraft.snapshots")

CHUNK_BYTES = 32 * 1024
WINDOW_CHUNKS = 8
RESEND_S = 1.0
GIVE_UP_S = 5.0
STALE_STEP_S = 0.3  # a follower re-answers a stale transfer at most this often
INCOMING_IDLE_S = 2.0  # a partial transfer idle this long yields to a different one
MAX_AHEAD = 2 * WINDOW_CHUNKS  # out-of-order chunks remembered by a receiver


def _failure(fut: asyncio.Future[Any]) -> BaseException | None:
    if fut.cancelled():
        return RuntimeError("cancelled")
    return fut.exception()


def _fatal(what: str) -> None:
    log.critical("%s; stopping (crash-only)", what, exc_info=True)
    os._exit(70)


@dataclass(slots=True)
class _Outgoing:
    peer: str
    meta: SnapshotMeta
    term: int
    path: str
    fd: int
    size: int
    checksum: str
    acked: int = 0
    sent: int = 0
    failures: int = 0
    progress_at: float = field(default_factory=time.monotonic)
    sent_at: float = 0.0


@dataclass(slots=True)
class _Awaiting:
    meta: SnapshotMeta
    term: int
    size: int
    checksum: str
    since: float
    poked: float


@dataclass(slots=True)
class _Incoming:
    leader: str
    term: int
    meta: SnapshotMeta
    total: int
    checksum: str
    path: str
    fd: int
    next: int = 0
    ahead: dict[int, int] = field(default_factory=dict)
    last: float = field(default_factory=time.monotonic)
    verifying: bool = False


class Snapshotter:
    def __init__(
        self, rt: NodeRuntime, snaps: SnapshotStore, every: int, disk: Executor,
        latest: SnapshotMeta,
    ) -> None:
        self.rt = rt
        self.snaps = snaps
        self.every = max(0, every)
        self.disk = disk
        self.latest = latest  # newest durable snapshot, taken here or installed
        files = [m for m, _p in snaps.files() if m.index < latest.index]
        self._prev = files[-1] if files else NO_SNAPSHOT  # the stored log keeps what follows it
        self._writing = False
        self._compact_next: SnapshotMeta | None = None
        self._out: dict[str, _Outgoing] = {}
        self._bad_files: set[str] = set()
        self._in: _Incoming | None = None
        self._stale_told: dict[str, float] = {}
        self._awaiting: dict[str, _Awaiting] = {}  # sent; the follower's AppendResp is due
        # (index, term) -> (path, membership, state): verified, stepped into the core
        self._verified: dict[tuple[int, int], tuple[str, str, bytes]] = {}
        self._reset_needed = False  # an install since the last Ready.snapshot cut the log
        self._installing = 0  # highest index restored and not yet durable
        self._to_persist: dict[SnapshotMeta, tuple[str, bool]] = {}  # read by the disk thread

    # ================================================================== taking

    def on_drive(self) -> None:
        if self.rt._stopping:
            return
        if self._compact_next is not None:
            self._try_compact()
        if self.every <= 0 or self._writing or self._compact_next is not None:
            return
        x = self.rt.service.applied_index
        if x - self.latest.index < self.every or self._verified or self._installing:
            return
        lg = self.rt.raft.log
        term = lg.term(x)
        if x <= lg.offset or x > lg.stable or not term:
            return  # the state must sit at an index that is in the log and durable there
        # The membership at x goes into the file: its CONFIG entries will be compacted away.
        meta = SnapshotMeta(x, term, self.rt.raft.conf_at(x).encode().decode())
        data = self.rt.service.snapshot()
        self._writing = True
        loop = self._loop()
        fut = loop.run_in_executor(self.disk, self.snaps.write, meta, data)
        fut.add_done_callback(lambda f: self._written(meta, f))

    def _written(self, meta: SnapshotMeta, fut: asyncio.Future[str]) -> None:
        self._writing = False
        exc = _failure(fut)
        if exc is not None:
            log.critical("node %s: writing snapshot %s failed: %r", self.rt.id, meta, exc)
            os._exit(70)
        self.rt.counters["snapshots_taken"] += 1
        if meta.index <= self.latest.index:
            return  # an installed snapshot overtook this one
        self._prev, self.latest = self.latest, meta
        if self._prev.index > 0:
            self._compact_next = self._prev
            self._try_compact()
        self.rt._kick()

    def _try_compact(self) -> None:
        meta = self._compact_next
        raft = self.rt.raft
        lg = raft.log
        if meta is None or self.rt._stopping:  # (the store is being closed)
            return
        if meta.index <= lg.offset:
            self._compact_next = None
            return
        if meta.index > lg.applied or meta.index > lg.stable:
            return  # the core has not yet been told the entries were applied: later
        self._compact_next = None
        try:
            raft.compact(meta)
        except InvalidRequest as e:
            log.error("node %s: cannot compact the log to %s: %s", self.rt.id, meta, e)
            return
        self.rt.service.prune_hidden(meta.index)
        self._loop().run_in_executor(self.disk, self._compact_store, meta.index)

    def _compact_store(self, upto: int) -> None:  # disk thread
        if self.rt._stopping:
            return  # compaction is an optimisation; recovery copes with a longer log
        try:
            self.rt.store.compact(upto)
            self.rt.store.sync()
        except Exception:
            _fatal(f"node {self.rt.id}: compacting the stored log to {upto} failed")

    # ================================================================== sending

    def send_snapshot(self, m: InstallSnapshot) -> None:
        """The core wants ``m.dst`` to get a snapshot covering at least ``m.index``."""
        peer = m.dst
        found = self._pick_file(m.index)
        if found is None:
            self.rt.counters["snapshot_missing"] += 1
            log.warning("node %s: no snapshot file covers index %d for %s", self.rt.id, m.index, peer)
            self.rt.raft.report_snapshot(peer, False)
            return
        meta, path = found
        cur = self._out.get(peer)
        if cur is not None and cur.meta == meta and cur.term == m.term:
            return  # already under way (the core asked again after its own timeout)
        if cur is not None:
            self._close_out(cur)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            self.rt.raft.report_snapshot(peer, False)
            return
        try:
            hdr = parse_header(os.pread(fd, HEADER_SIZE, 0), path)
            if hdr.meta != meta:
                raise SnapshotDamaged(path, f"header says {hdr.meta}")
        except (OSError, SnapshotDamaged) as e:
            os.close(fd)
            log.warning("node %s: cannot send %s: %s", self.rt.id, path, e)
            self._bad_files.add(path)
            self.rt.raft.report_snapshot(peer, False)
            return
        out = _Outgoing(peer, meta, m.term, path, fd, hdr.file_size, hdr.checksum.hex())
        self._out[peer] = out
        self.rt.counters["snapshot_transfers_started"] += 1
        log.info("node %s: sending snapshot %d/%d (%d bytes) to %s",
                 self.rt.id, meta.index, meta.term, out.size, peer)
        self._pump(out)

    def _pick_file(self, min_index: int) -> tuple[SnapshotMeta, str] | None:
        for meta, path in reversed(self.snaps.files()):
            if meta.index >= min_index and path not in self._bad_files:
                return meta, path
        return None

    def _pump(self, out: _Outgoing) -> None:
        limit = out.acked + WINDOW_CHUNKS * CHUNK_BYTES
        while out.sent < out.size and out.sent < limit:
            n = min(CHUNK_BYTES, out.size - out.sent)
            data = os.pread(out.fd, n, out.sent)
            if len(data) != n:
                self._give_up(out, "snapshot file shrank while sending")
                return
            meta = out.meta
            self._send(out.peer, SnapshotChunk(
                out.term, meta.index, meta.term, out.sent, out.size, out.checksum, data
            ))
            out.sent += n
            out.sent_at = time.monotonic()

    def on_ack(self, sender: str, a: SnapshotAck) -> None:
        out = self._out.get(sender)
        if out is None or (a.index, a.snap_term) != (out.meta.index, out.meta.term):
            self.rt.counters["snapshot_ack_unknown"] += 1
            return
        if a.status in (SnapshotStatus.DONE, SnapshotStatus.STALE):
            self.rt.counters[f"snapshot_sent_{a.status.name.lower()}"] += 1
            log.info("node %s: snapshot %d to %s: %s", self.rt.id, out.meta.index, sender,
                     a.status.name.lower())
            self._close_out(out)
            self.rt.raft.report_snapshot(sender, True)
            now = time.monotonic()
            self._awaiting[sender] = _Awaiting(out.meta, out.term, out.size, out.checksum, now, now)
            return
        if a.status == SnapshotStatus.FAILED:
            out.failures += 1
            if out.failures >= 2:
                self._bad_files.add(out.path)
                self._give_up(out, "the follower found the snapshot damaged twice")
                return
            out.acked = out.sent = 0
        elif a.next_offset > out.acked:
            out.acked = min(a.next_offset, out.size)
            out.sent = max(out.sent, out.acked)
            out.progress_at = time.monotonic()
        elif a.next_offset == 0 and out.acked > 0:
            out.acked = out.sent = 0  # the follower restarted and lost its partial file
        self._pump(out)

    def _give_up(self, out: _Outgoing, why: str) -> None:
        log.warning("node %s: giving up sending snapshot %d to %s: %s",
                    self.rt.id, out.meta.index, out.peer, why)
        self.rt.counters["snapshot_send_gave_up"] += 1
        self._close_out(out)
        self.rt.raft.report_snapshot(out.peer, False)

    def _close_out(self, out: _Outgoing) -> None:
        if self._out.get(out.peer) is out:
            del self._out[out.peer]
        with contextlib.suppress(OSError):
            os.close(out.fd)

    def _send(self, peer: str, msg: SnapshotChunk | SnapshotAck) -> None:
        rt = self.rt
        addr = rt.addr_of.get(peer)
        delay = rt.faults.outbound(peer) if rt.faults.active() else 0.0
        if addr is None or delay is None:
            return
        if delay > 0 and rt._loop is not None:  # injected delay applies to chunks too
            rt.counters["snapshot_msgs_delayed"] += 1
            rt._loop.call_later(delay, self._send_now, addr, peer, msg)
            return
        rt.ep.send(addr, msg, True, time.monotonic(), dst=peer)

    def _send_now(self, addr: tuple[str, int], peer: str, msg: SnapshotChunk | SnapshotAck) -> None:
        if not self.rt._stopping:
            self.rt.ep.send(addr, msg, True, time.monotonic(), dst=peer)
            self.rt._flush_net()

    # ================================================================== timers

    def tick(self) -> None:
        """Every ~100 ms: resend stalled windows, abandon dead transfers."""
        now = time.monotonic()
        raft = self.rt.raft
        for out in list(self._out.values()):
            if raft.role != Role.LEADER or raft.term != out.term:
                self._close_out(out)  # no longer ours to send
            elif now - out.progress_at > (GIVE_UP_S if out.acked < out.size else 6 * GIVE_UP_S):
                # (once every byte is there the follower verifies the file: allow for that)
                self._give_up(out, "no progress")
            elif out.acked < out.size and now - out.sent_at > RESEND_S:
                self.rt.counters["snapshot_resends"] += 1
                out.sent = out.acked
                self._pump(out)
        for peer, w in list(self._awaiting.items()):
            pr = raft.progress.get(peer)
            if (raft.role != Role.LEADER or raft.term != w.term or pr is None or peer in self._out
                    or pr.state != ProgressState.SNAPSHOT or now - w.since > 6 * GIVE_UP_S):
                del self._awaiting[peer]
            elif now - w.poked > RESEND_S:
                # The follower has the snapshot but its AppendResp (unreliable, like all
                # Raft messages) has not come: an empty chunk makes it answer again.
                w.poked = now
                self.rt.counters["snapshot_pokes"] += 1
                meta = w.meta
                self._send(peer, SnapshotChunk(w.term, meta.index, meta.term, 0, w.size,
                                               w.checksum, b""))

    # ================================================================== receiving

    def on_chunk(self, sender: str, c: SnapshotChunk) -> None:
        raft = self.rt.raft
        cnt = self.rt.counters
        if c.term < raft.term:
            cnt["snapshot_chunk_old_term"] += 1
            return
        if c.index < 1 or c.snap_term < 1 or not HEADER_SIZE <= c.total <= MAX_SNAPSHOT_BYTES:
            cnt["snapshot_chunk_bad"] += 1
            return
        meta = SnapshotMeta(c.index, c.snap_term)
        if c.index <= max(raft.log.committed, self.latest.index, self._installing) or any(
            i >= c.index for i, _t in self._verified
        ):
            self._ack(sender, meta, c.total, SnapshotStatus.STALE)
            told = self._stale_told.get(sender)
            now = time.monotonic()
            if c.index <= raft.log.committed and (told is None or now - told > STALE_STEP_S):
                # Let the core tell the leader where we are (its AppendResp may have been
                # lost), but not once per retransmitted chunk.
                self._stale_told[sender] = now
                self._step_install(sender, c.term, meta)
            return
        inc = self._in
        now = time.monotonic()
        if inc is not None and (inc.meta, inc.checksum, inc.total) != (meta, c.checksum, c.total):
            if inc.verifying or (inc.meta.index > c.index and now - inc.last < INCOMING_IDLE_S):
                cnt["snapshot_chunk_other_transfer"] += 1
                return
            self._drop_incoming(inc)
            inc = None
        if inc is None:
            path = self.snaps.incoming_path(meta, secrets.token_hex(4))
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            except OSError:
                _fatal(f"node {self.rt.id}: cannot create {path}")
                return
            inc = self._in = _Incoming(sender, c.term, meta, c.total, c.checksum, path, fd)
            log.info("node %s: receiving snapshot %d/%d (%d bytes) from %s",
                     self.rt.id, meta.index, meta.term, c.total, sender)
        inc.leader, inc.term, inc.last = sender, max(inc.term, c.term), now
        if not inc.verifying and c.data and inc.next <= c.offset and c.offset not in inc.ahead:
            if c.offset >= inc.next + MAX_AHEAD * CHUNK_BYTES or len(inc.ahead) >= MAX_AHEAD:
                cnt["snapshot_chunk_too_far"] += 1
            else:
                try:
                    os.pwrite(inc.fd, c.data, c.offset)
                except OSError:
                    _fatal(f"node {self.rt.id}: writing {inc.path} failed")
                inc.ahead[c.offset] = len(c.data)
                while inc.next in inc.ahead:
                    inc.next += inc.ahead.pop(inc.next)
        self._ack(sender, meta, inc.next, SnapshotStatus.PROGRESS)
        if inc.next >= inc.total and not inc.verifying:
            inc.verifying = True
            fut = self._loop().run_in_executor(self.disk, self._verify, inc)
            fut.add_done_callback(lambda f: self._verified_cb(inc, f))

    def _ack(self, peer: str, meta: SnapshotMeta, nxt: int, status: SnapshotStatus) -> None:
        self._send(peer, SnapshotAck(self.rt.raft.term, meta.index, meta.term, nxt, status))

    def _verify(self, inc: _Incoming) -> tuple[SnapshotMeta, bytes]:  # disk thread
        if self.rt._stopping:
            os.close(inc.fd)
            raise SnapshotDamaged(inc.path, "not verified: the node is stopping")
        try:
            os.fsync(inc.fd)
        finally:
            os.close(inc.fd)
        meta, state = self.snaps.read(inc.path, expect=inc.meta)
        hdr = self.snaps.header(inc.path)
        if hdr.checksum.hex() != inc.checksum:
            raise SnapshotDamaged(inc.path, "checksum differs from the one the leader announced")
        return meta, state

    def _verified_cb(self, inc: _Incoming, fut: asyncio.Future[tuple[SnapshotMeta, bytes]]) -> None:
        if self._in is inc:
            self._in = None
        exc = _failure(fut)
        if isinstance(exc, SnapshotDamaged):
            log.warning("node %s: received %s", self.rt.id, exc)
            self.rt.counters["snapshot_received_damaged"] += 1
            with contextlib.suppress(OSError):
                os.unlink(inc.path)
            self._ack(inc.leader, inc.meta, 0, SnapshotStatus.FAILED)
        elif exc is not None:
            log.critical("node %s: verifying %s failed: %r", self.rt.id, inc.path, exc)
            os._exit(70)
        elif inc.meta.index <= self.rt.raft.log.committed:
            with contextlib.suppress(OSError):
                os.unlink(inc.path)
            self._ack(inc.leader, inc.meta, inc.total, SnapshotStatus.STALE)
        else:
            meta, state = fut.result()
            self._verified[(meta.index, meta.term)] = (inc.path, meta.conf, state)
            self.rt.counters["snapshots_received"] += 1
            if not self._step_install(inc.leader, inc.term, meta):
                self._discard_verified(meta)
            self._ack(inc.leader, inc.meta, inc.total, SnapshotStatus.DONE)
        self.rt._kick()

    def _step_install(self, leader: str, term: int, meta: SnapshotMeta) -> bool:
        """Step InstallSnapshot into the core; True when it took the snapshot."""
        raft = self.rt.raft
        kept = raft.log.term(meta.index) == meta.term
        before = raft.snapshot
        raft.step(InstallSnapshot(leader, self.rt.id, term, meta.index, meta.term, meta.conf))
        at = (meta.index, meta.term)
        accepted = (raft.snapshot.index, raft.snapshot.term) == at and (before.index, before.term) != at
        if accepted and not kept:
            self._reset_needed = True  # the stored log must go, not just its prefix
        return accepted

    def _discard_verified(self, meta: SnapshotMeta) -> None:
        got = self._verified.pop((meta.index, meta.term), None)
        if got is not None:
            with contextlib.suppress(OSError):
                os.unlink(got[0])

    def _drop_incoming(self, inc: _Incoming) -> None:
        if self._in is inc:
            self._in = None
        with contextlib.suppress(OSError):
            os.close(inc.fd)
        with contextlib.suppress(OSError):
            os.unlink(inc.path)

    # ================================================================== installing

    def restore_for_ready(self, rd: Ready) -> None:
        """Ready.snapshot: the state machine takes the received state (before the Ready's
        committed entries, which follow the snapshot, are applied)."""
        meta = rd.snapshot
        assert meta is not None
        got = self._verified.pop((meta.index, meta.term), None)
        if got is None:
            log.critical("node %s: the core installs snapshot %s that never arrived", self.rt.id, meta)
            os._exit(70)
        path, _conf, state = got
        try:
            self.rt.service.restore(state)
        except Exception:
            _fatal(f"node {self.rt.id}: restoring snapshot {meta} failed")
        if self.rt.service.applied_index != meta.index:
            log.critical("node %s: snapshot %s holds the state at %d", self.rt.id, meta,
                         self.rt.service.applied_index)
            os._exit(70)
        for i, t in [k for k in self._verified if k[0] <= meta.index]:
            self._discard_verified(SnapshotMeta(i, t))
        self._to_persist[meta] = (path, self._reset_needed)
        self._reset_needed = False
        self._installing = max(self._installing, meta.index)
        self.rt.counters["snapshots_installed"] += 1
        log.info("node %s: installed snapshot %d/%d", self.rt.id, meta.index, meta.term)

    def persist_install(self, meta: SnapshotMeta) -> None:
        """Disk thread, as part of the Ready's write: snapshot file first, then the log."""
        path, reset = self._to_persist.pop(meta)
        self.snaps.install(path, meta)
        store = self.rt.store
        if reset or store.last_index() < meta.index:
            store.reset(meta.index + 1)
        else:
            store.compact(meta.index)

    def on_installed(self, meta: SnapshotMeta) -> None:
        """Loop, after the Ready holding ``meta`` was persisted."""
        if meta.index > self.latest.index:
            self._prev, self.latest = self.latest, meta
        if self._installing <= meta.index:
            self._installing = 0

    # ================================================================== misc

    def _loop(self) -> asyncio.AbstractEventLoop:
        loop = self.rt._loop
        assert loop is not None
        return loop

    def close(self) -> None:
        for out in list(self._out.values()):
            self._close_out(out)
        if self._in is not None and not self._in.verifying:
            self._drop_incoming(self._in)

    def status(self) -> dict[str, Any]:
        st: dict[str, Any] = {
            "index": self.latest.index,
            "term": self.latest.term,
            "every": self.every,
            "sending": {p: {"index": o.meta.index, "acked": o.acked, "size": o.size}
                        for p, o in self._out.items()},
        }
        if self._in is not None:
            st["receiving"] = {"index": self._in.meta.index, "from": self._in.leader,
                               "next": self._in.next, "size": self._in.total}
        return st
