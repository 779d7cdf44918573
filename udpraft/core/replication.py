"""Replication: the leader's side (progress, pipelining, commit, snapshots) and the
follower's (the consistency check, truncation only at a real conflict, the commit rule).

Part of RaftNode (see base.py). The leader batches what was proposed since the last Ready
into as few appends as ``max_msg_bytes`` allows (``_flush``), pipelines them per follower
within ``max_inflight_msgs``, backs up a term at a time on a conflict hint, and commits only
current-term entries by counting (Figure 8). A follower needing compacted entries gets
InstallSnapshot (Raft §7).
"""

from __future__ import annotations

from operator import attrgetter

from udpraft.core.base import NodeBase
from udpraft.core.errors import NotLeader, ProposalDropped
from udpraft.core.membership import Membership
from udpraft.core.messages import (
    AppendEntries,
    AppendResp,
    Heartbeat,
    HeartbeatResp,
    InstallSnapshot,
    TimeoutNow,
)
from udpraft.core.progress import ProgressState
from udpraft.core.ready import Role
from udpraft.core.types import EntryKind, SnapshotMeta


class Replication(NodeBase):
    def report_snapshot(self, peer: str, ok: bool) -> None:
        """The runtime's transfer of a snapshot to ``peer`` ended (ok=False: it gave up)."""
        pr = self.progress.get(peer)
        if self.role != Role.LEADER or pr is None or pr.state != ProgressState.SNAPSHOT:
            return
        if not ok:
            pr.pending_snapshot = 0
            pr.become_probe()
        # on success wait for the follower's AppendResp, which moves it on

    def _tick_leader(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        for p, pr in self.progress.items():
            if pr.state == ProgressState.SNAPSHOT:
                pr.snapshot_ticks += 1
                if pr.snapshot_ticks > 10 * self.cfg.election_ticks:
                    self._count("snapshot_timeout")  # the runtime never reported: try again
                    self.report_snapshot(p, False)
        if self.election_elapsed >= self.cfg.election_ticks:
            self.election_elapsed = 0
            if self.cfg.check_quorum:
                # Only voters count; a leader being removed does not count itself.
                active = (self.id in self.voters) + sum(
                    1 for v, pr in self.progress.items() if pr.recent_active and v in self.voters
                )
                for pr in self.progress.values():
                    pr.recent_active = False
                if active < self.quorum:
                    # Check-quorum: we cannot reach a majority; stop pretending to lead.
                    self._count("check_quorum_step_down")
                    self._become_follower(self.term, "", reset_timer=True)
                    return
            self.lead_transferee = ""  # a transfer that did not finish in time is abandoned
        if self.heartbeat_elapsed >= self.cfg.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            # Reads still unconfirmed (their round's heartbeats or answers were lost): this
            # heartbeat is a new round for them, sent after they arrived, so an answer to it
            # confirms them all (ReadOnly.ack). Otherwise they waited for another read.
            self._bcast_heartbeat(self.reads.start_round() if self.reads.pending else 0)

    def _bcast_heartbeat(self, ctx: int) -> None:
        commit = self.log.committed
        for p, pr in self.progress.items():
            self._send(Heartbeat(self.id, p, self.term, min(pr.match, commit), ctx))

    def _send_append(self, peer: str, allow_empty: bool = False) -> bool:
        """Send the next append to ``peer`` if its progress allows; True when sent."""
        pr = self.progress[peer]
        if pr.paused():
            return False
        last = self.log.last_index()
        prev = pr.next - 1
        prev_term = self.log.term(prev)
        if prev_term is None:
            if prev < self.log.offset:
                # Raft §7: what the follower needs was compacted; send the snapshot instead.
                pr.become_snapshot(self.log.offset)
                # Always name the configuration: a joining node knows no one until told.
                conf = self._base_conf.encode().decode() if self._base_conf.voters else ""
                self._send(
                    InstallSnapshot(
                        self.id, peer, self.term, self.log.offset, self.log.offset_term, conf
                    )
                )
                self._count("snapshots_sent")
            else:
                self._count("append_prev_missing")
            return False
        entries = self.log.slice(pr.next, last + 1, self.cfg.max_msg_bytes)
        if not entries and not allow_empty and pr.state == ProgressState.REPLICATE:
            return False
        batch = self.log.batch_of(entries[0].index, entries[-1].index) if entries else None
        self._send(
            AppendEntries(
                self.id, peer, self.term, prev, prev_term, tuple(entries), self.log.committed,
                batch,
            )
        )
        pr.sent(prev + len(entries), len(entries))
        return bool(entries)

    def _pump(self, peer: str, allow_empty: bool = False) -> None:
        """Send as much as the window allows (one message in PROBE, many in REPLICATE)."""
        sent = self._send_append(peer, allow_empty)
        while sent and self.progress[peer].state == ProgressState.REPLICATE:
            sent = self._send_append(peer)

    def _on_append_resp(self, m: AppendResp) -> None:
        if self.role != Role.LEADER:
            return
        pr = self.progress.get(m.src)
        if pr is None:
            self._count("drop_not_member")  # removed from the configuration
            return
        pr.recent_active = True
        last = self.log.last_index()
        if m.index > last:
            self._count("drop_bad_ack")  # concerns entries we never had: a broken peer
            return
        if not m.success:
            if pr.lost_log_suspect and m.hint_index < pr.match:
                # The follower lost entries it had acknowledged (its disk was wiped): its
                # old match is void. Lowering match only delays commits, never makes one.
                self._count("follower_lost_log")
                pr.match = m.hint_index
                pr.lost_log_suspect = False
                pr.become_probe()
                pr.next = m.hint_index + 1
                self._pump(m.src)
                return
            hint_next = min(m.hint_index, last) + 1
            if m.hint_term > 0:
                idx, _ = self.log.find_conflict_by_term(min(m.hint_index, last), m.hint_term)
                hint_next = idx + 1
            if pr.maybe_decr(m.index, hint_next):
                self._pump(m.src)
            else:
                self._count("stale_reject")
            return
        if pr.state == ProgressState.SNAPSHOT:
            if m.index < pr.pending_snapshot:
                self._count("stale_ack_during_snapshot")
                return
            pr.become_probe()  # the snapshot arrived; next = after it
        pr.lost_log_suspect = False
        advanced = pr.update(m.index)
        if pr.state == ProgressState.PROBE:
            pr.become_replicate()
        if advanced:
            self._maybe_commit()
            if self.role != Role.LEADER:
                return  # removed from the configuration: stepped down on its commit
        if self.lead_transferee == m.src and pr.match == self.log.last_index():
            self._send(TimeoutNow(self.id, m.src, self.term))
        self._pump(m.src)

    def _on_heartbeat_resp(self, m: HeartbeatResp) -> None:
        if self.role != Role.LEADER:
            return
        pr = self.progress.get(m.src)
        if pr is None:
            self._count("drop_not_member")
            return
        pr.recent_active = True
        last = self.log.last_index()
        if pr.state == ProgressState.REPLICATE and pr.match < last and pr.inflight:
            pr.stall += 1
            if pr.stall >= 2:
                pr.become_probe()  # appends were lost: fall back and resend from match
        elif pr.state == ProgressState.PROBE:
            pr.probe_sent = False
        if pr.match < last:
            self._pump(m.src)
        if m.ctx > self.reads.ctx:
            self._count("drop_bad_ctx")  # answers a read round we never started
        elif m.ctx and m.src in self.voters:
            for r in self.reads.ack(m.ctx, m.src, self.quorum):
                self._release_read(r, True)

    def _maybe_commit(self) -> None:
        matches = sorted(
            (self.progress[v].match if v != self.id else self.log.stable for v in self.voters),
            reverse=True,
        )
        q = matches[self.quorum - 1]
        # Raft §5.4.2 / Figure 8: only an entry of the current term commits by counting.
        if q > self.log.committed and self.log.term(q) == self.term:
            self.log.commit_to(q)
            self._need_bcast = True  # followers learn the new commit index promptly
            if self.reads.waiting_commit:
                waiting, self.reads.waiting_commit = self.reads.waiting_commit, []
                for r in waiting:
                    if self.id not in self.voters:
                        self._release_read(r, False)
                    elif self.quorum == 1:
                        r.index = self.log.committed  # no peers to confirm with
                        self._release_read(r, True)
                    else:
                        self.reads.add(r, self.log.committed, self.id)
            if self.id not in self.voters and self._conf_index <= self.log.committed:
                # Dissertation §4.2.2: a leader removed from the configuration steps down
                # once that configuration is committed — after telling the others.
                self._need_bcast = False
                for p in self.peers:
                    self._pump(p, allow_empty=True)
                self._count("removed_leader_step_down")
                self._become_follower(self.term, "", reset_timer=True)

    def _flush(self) -> None:
        if self.role != Role.LEADER:
            return
        if self._need_bcast:
            self._need_bcast = False
            for p in self.peers:
                self._pump(p, allow_empty=True)
        if self.reads.round_needed:
            self._bcast_heartbeat(self.reads.start_round())

    def _check_can_propose(self, n: int) -> None:
        if self.role != Role.LEADER:
            raise NotLeader(self.leader)
        if self.lead_transferee:
            raise ProposalDropped("leadership transfer in progress")
        if self.log.last_index() - self.log.committed + n > self.cfg.max_uncommitted_entries:
            self._count("proposal_dropped_uncommitted")
            raise ProposalDropped("too many uncommitted entries")

    def _on_append(self, m: AppendEntries) -> None:
        if self.role == Role.LEADER:
            self._count("drop_second_leader")  # impossible in a correct cluster (§5.2)
            return
        self._become_follower(self.term, m.src, reset_timer=True)
        if not _entries_ok(m):
            self._count("drop_bad_entries")
            return
        if self.log.term(m.prev_index) != m.prev_term:
            # Raft §5.3 consistency check failed; hint where our log could match (one term
            # back at a time rather than one entry).
            hint_idx, hint_term = self.log.find_conflict_by_term(
                min(m.prev_index, self.log.last_index()), m.prev_term
            )
            self._send(
                AppendResp(self.id, m.src, self.term, False, m.prev_index, hint_idx, hint_term)
            )
            return
        try:
            truncated = self.log.maybe_append(m.prev_index, m.entries, m.batch)
        except ValueError:
            self._count("drop_conflict_below_commit")
            return
        if truncated is not None or EntryKind.CONFIG in map(_KIND, m.entries):
            self._refresh_conf()  # a configuration is effective once appended (§4.1)
        last_new = m.prev_index + len(m.entries)
        # Commit = min(leader commit, last index *this append* covered), never our last index:
        # entries past it may be stale leftovers from an old term.
        self.log.commit_to(min(m.commit, last_new))
        self._send(AppendResp(self.id, m.src, self.term, True, last_new))

    def _on_install_snapshot(self, m: InstallSnapshot) -> None:
        if self.role == Role.LEADER:
            self._count("drop_second_leader")
            return
        self._become_follower(self.term, m.src, reset_timer=True)
        if m.index <= self.log.committed or m.snap_term > m.term or m.snap_term < 1:
            # Stale or duplicated (dissertation §5.4.1: ignore an older snapshot); tell the
            # leader how far we are so it replicates from there.
            self._count("snapshot_stale")
            self._send(AppendResp(self.id, m.src, self.term, True, self.log.committed))
            return
        conf = Membership.decode(m.conf.encode()) if m.conf else None
        kept = self.log.restore(m.index, m.snap_term)
        self._count("snapshot_kept_suffix" if kept else "snapshot_replaced_log")
        if conf is None:
            meta = SnapshotMeta(m.index, m.snap_term)
        else:
            self._base_conf = conf
            meta = SnapshotMeta(m.index, m.snap_term, conf.encode().decode())
        self._refresh_conf()
        self._snapshot_to_install = meta
        self.snapshot = meta
        self._send(AppendResp(self.id, m.src, self.term, True, m.index))

    def _on_heartbeat(self, m: Heartbeat) -> None:
        if self.role == Role.LEADER:
            self._count("drop_second_leader")
            return
        self._become_follower(self.term, m.src, reset_timer=True)
        # The leader sends min(our match, its commit), which our log is known to match.
        self.log.commit_to(min(m.commit, self.log.last_index()))
        self._send(HeartbeatResp(self.id, m.src, self.term, m.ctx))


_KIND = attrgetter("kind")


def _entries_ok(m: AppendEntries) -> bool:
    """Entries must continue prev_index contiguously with terms in [prev_term, m.term]."""
    expect = m.prev_index + 1
    term = m.prev_term
    for e in m.entries:
        if e.index != expect or e.term < term or e.term > m.term:
            return False
        expect += 1
        term = e.term
    return True
