"""RaftNode: the whole Raft algorithm as a deterministic state machine.

How this works: inputs are ``step(message)``, ``tick()``, ``propose(...)``, ``read_index(...)``
and ``transfer_leadership(...)``; outputs are collected into a ``Ready`` (see ready.py) that
the runtime persists, sends and applies before calling ``advance``. Nothing here touches a
socket, a disk, a clock or the global random module: randomness is the injected
``random.Random`` and time is ticks (plus an optional ``now_ms`` the leader stamps on
entries for deterministic session expiry).

Peer input is never trusted: a message from an unknown sender, addressed to someone else or
with nonsense fields is dropped and counted in ``counters``; nothing a peer sends can raise.

Role handlers live in one method per message type; the rules cite the paper (Raft §x) or
Ongaro's dissertation (§x.y where the paper has no such section).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from udpraft.core.errors import InvalidRequest, NotLeader, ProposalDropped
from udpraft.core.log import RaftLog
from udpraft.core.messages import (
    AppendEntries,
    AppendResp,
    Heartbeat,
    HeartbeatResp,
    InstallSnapshot,
    Message,
    PreVote,
    PreVoteResp,
    ReadIndexReq,
    ReadIndexResp,
    RequestVote,
    RequestVoteResp,
    TimeoutNow,
)
from udpraft.core.progress import Progress, ProgressState
from udpraft.core.readonly import PendingRead, ReadOnly
from udpraft.core.ready import Config, ReadState, Ready, Role
from udpraft.core.types import (
    EMPTY_HARD_STATE,
    NO_SNAPSHOT,
    Entry,
    EntryKind,
    HardState,
    SnapshotMeta,
)

# Messages that always wait for the Ready's persistence: they vouch for durable state.
_AFTER_PERSIST = (AppendResp, RequestVote, RequestVoteResp)
_MAX_FOLLOWER_READS = 10_000


class RaftNode:
    def __init__(
        self,
        node_id: str,
        voters: Sequence[str],
        rng: random.Random,
        config: Config | None = None,
        hard_state: HardState = EMPTY_HARD_STATE,
        entries: Sequence[Entry] = (),
        snapshot: SnapshotMeta = NO_SNAPSHOT,
    ) -> None:
        self.cfg = config or Config()
        self.cfg.validate()
        self.id = node_id
        self.voters: tuple[str, ...] = tuple(sorted(set(voters) | {node_id}))
        self.peers: tuple[str, ...] = tuple(v for v in self.voters if v != node_id)
        self._peer_set = frozenset(self.peers)
        self.quorum = len(self.voters) // 2 + 1
        self.rng = rng
        # Raft Figure 2 persistent state. Commit is *not* trusted from disk: a hard state
        # written ahead of its entries must never make us apply entries that are not
        # committed, so commit is re-learned from the leader after a restart.
        self.term = hard_state.term
        self.vote = hard_state.vote
        # After a restart from a snapshot, everything it covers is committed and applied
        # (the runtime restored the state machine from it); the log continues after it.
        self.log = RaftLog(entries, snapshot.index, snapshot.term)
        self.snapshot = snapshot  # the latest snapshot this node holds durably
        self._snapshot_to_install: SnapshotMeta | None = None
        self.role = Role.FOLLOWER
        self.leader = ""
        self.votes: dict[str, bool] = {}
        self.progress: dict[str, Progress] = {}
        self.lead_transferee = ""
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_timeout = 0
        self._reset_randomized_timeout()
        self.reads = ReadOnly()
        self._follower_reads: set[int] = set()
        self.now_ms = 0
        self._need_bcast = False
        self._hs_handed = HardState(hard_state.term, hard_state.vote, 0)
        self._hs_durable = self._hs_handed
        self._msgs: list[Message] = []
        self._pmsgs: list[Message] = []
        self._read_states: list[ReadState] = []
        self.counters: dict[str, int] = {}
        self._handlers: dict[type, Callable[[Any], None]] = {
            PreVote: self._on_pre_vote,
            PreVoteResp: self._on_pre_vote_resp,
            RequestVote: self._on_request_vote,
            RequestVoteResp: self._on_vote_resp,
            AppendEntries: self._on_append,
            AppendResp: self._on_append_resp,
            Heartbeat: self._on_heartbeat,
            HeartbeatResp: self._on_heartbeat_resp,
            TimeoutNow: self._on_timeout_now,
            ReadIndexReq: self._on_read_index_req,
            ReadIndexResp: self._on_read_index_resp,
            InstallSnapshot: self._on_install_snapshot,
        }

    # ================================================================== public inputs

    def tick(self, now_ms: int | None = None) -> None:
        if now_ms is not None and now_ms > self.now_ms:
            self.now_ms = now_ms
        if self.role == Role.LEADER:
            self._tick_leader()
        else:
            self._tick_election()

    def step(self, m: Message) -> None:
        handler = self._handlers.get(type(m))
        if handler is None:
            self._count("drop_unknown_type")
            return
        if m.dst != self.id:
            self._count("drop_wrong_dst")
            return
        if m.src not in self._peer_set:
            self._count("drop_unknown_sender")
            return
        if not _sane(m):
            self._count("drop_bad_field")
            return
        if m.term > self.term:
            if not self._accept_higher_term(m):
                return
        elif m.term < self.term:
            self._on_lower_term(m)
            return
        handler(m)

    def propose(self, data: bytes, client_id: str = "", seq: int = 0) -> int:
        """Append one entry (leader only); returns its index. Raises NotLeader/ProposalDropped."""
        return self.propose_batch([(data, client_id, seq)])

    def propose_batch(self, items: Sequence[tuple[bytes, str, int]]) -> int:
        """Append several entries at once; returns the index of the first one."""
        self._check_can_propose(len(items))
        first = self.log.last_index() + 1
        ts = self._timestamp()
        term = self.term
        self.log.append_new(
            [
                Entry(first + i, term, data, EntryKind.NORMAL, cid, seq, ts)
                for i, (data, cid, seq) in enumerate(items)
            ]
        )
        self._need_bcast = True
        return first

    def read_index(self, request_id: int) -> None:
        """Ask for a linearizable read point; the answer arrives as a ReadState (§6.4)."""
        if self.role == Role.LEADER:
            self._leader_read(PendingRead(request_id, ""))
        elif self.leader and len(self._follower_reads) < _MAX_FOLLOWER_READS:
            self._follower_reads.add(request_id)
            self._send(ReadIndexReq(self.id, self.leader, self.term, request_id))
        else:
            self._read_states.append(ReadState(request_id, 0, False))

    def transfer_leadership(self, target: str) -> None:
        """Dissertation §3.10: bring ``target`` up to date, then tell it to time out now."""
        if self.role != Role.LEADER:
            raise NotLeader(self.leader)
        if target == self.id:
            return
        if target not in self._peer_set:
            raise InvalidRequest(f"unknown transfer target {target!r}")
        self.lead_transferee = target
        self.election_elapsed = 0  # the transfer is abandoned after one election timeout
        pr = self.progress[target]
        if pr.match == self.log.last_index():
            self._send(TimeoutNow(self.id, target, self.term))
        else:
            self._send_append(target)

    def campaign(self) -> None:
        """Start an election now (as if the election timer fired)."""
        if self.role != Role.LEADER:
            self._campaign(pre=self.cfg.pre_vote, transfer=False)

    def compact(self, snapshot: SnapshotMeta) -> None:
        """The runtime made a snapshot at ``snapshot.index`` durable: drop the log up to it.

        The index must be applied here (the snapshot holds its effect) and durable in the log
        (so no gap can open between snapshot and log across a crash).
        """
        if snapshot.index <= self.log.offset:
            return
        if self.log.term(snapshot.index) != snapshot.term:
            raise InvalidRequest(f"snapshot {snapshot} does not match the log")
        try:
            self.log.compact(snapshot.index)
        except ValueError as e:
            raise InvalidRequest(str(e)) from None
        self.snapshot = snapshot

    def report_snapshot(self, peer: str, ok: bool) -> None:
        """The runtime's transfer of a snapshot to ``peer`` ended (ok=False: it gave up)."""
        pr = self.progress.get(peer)
        if self.role != Role.LEADER or pr is None or pr.state != ProgressState.SNAPSHOT:
            return
        if not ok:
            pr.pending_snapshot = 0
            pr.become_probe()
        # on success wait for the follower's AppendResp, which moves it on

    # ================================================================== ready / advance

    def has_ready(self) -> bool:
        return bool(
            self._need_bcast
            or self.reads.round_needed
            or self._msgs
            or self._pmsgs
            or self._read_states
            or self._snapshot_to_install is not None
            or self.log.has_unstable()
            or self.log.committed > self.log.applying
            or (self.term, self.vote) != (self._hs_handed.term, self._hs_handed.vote)
        )

    def ready(self) -> Ready:
        self._flush()
        rd = Ready()
        if (self.term, self.vote) != (self._hs_handed.term, self._hs_handed.vote):
            self._hs_handed = HardState(self.term, self.vote, self.log.committed)
            rd.hard_state = self._hs_handed
        rd.snapshot, self._snapshot_to_install = self._snapshot_to_install, None
        rd.entries = self.log.take_unstable()
        rd.must_sync = rd.hard_state is not None or bool(rd.entries) or rd.snapshot is not None
        rd.messages, self._msgs = self._msgs, []
        rd.persisted_messages, self._pmsgs = self._pmsgs, []
        rd.committed_entries = self.log.take_committed(self.cfg.max_apply_entries)
        rd.read_states, self._read_states = self._read_states, []
        return rd

    def advance(self, rd: Ready) -> None:
        """The runtime persisted ``rd`` (and sent/applied what it should)."""
        if rd.hard_state is not None:
            self._hs_durable = rd.hard_state
        if rd.snapshot is not None and rd.snapshot.index > self.snapshot.index:
            self.snapshot = rd.snapshot
        if rd.entries:
            last = rd.entries[-1]
            self.log.stable_to(last.index, last.term)
            if self.role == Role.LEADER:
                self._maybe_commit()
        if rd.committed_entries:
            self.log.applied_to(rd.committed_entries[-1].index)

    # ================================================================== status

    @property
    def committed(self) -> int:
        return self.log.committed

    def status(self) -> dict[str, Any]:
        st: dict[str, Any] = {
            "id": self.id,
            "role": self.role.name.lower(),
            "term": self.term,
            "vote": self.vote,
            "leader": self.leader,
            "commit_index": self.log.committed,
            "applied_index": self.log.applied,
            "last_log_index": self.log.last_index(),
            "last_log_term": self.log.last_term(),
            "counters": dict(self.counters),
        }
        if self.role == Role.LEADER:
            st["progress"] = {
                p: {"match": pr.match, "next": pr.next, "state": pr.state.name.lower()}
                for p, pr in self.progress.items()
            }
        return st

    # ================================================================== term handling

    def _accept_higher_term(self, m: Message) -> bool:
        """Raft §5.1: a higher term makes us a follower — except where §9.6 says otherwise."""
        if isinstance(m, PreVote | RequestVote):
            forced = isinstance(m, RequestVote) and m.transfer
            if not forced and self._in_lease():
                # §9.6 / check-quorum: a live leader exists; a disruptive candidate is ignored.
                self._count("drop_vote_in_lease")
                return False
        if isinstance(m, PreVote):
            return True  # a pre-vote never changes our term
        if isinstance(m, PreVoteResp) and m.granted:
            return True  # a grant echoes the term we *would* use
        if isinstance(m, AppendEntries | Heartbeat | TimeoutNow):
            self._become_follower(m.term, m.src, reset_timer=False)
        else:
            self._become_follower(m.term, "", reset_timer=False)
        return True

    def _on_lower_term(self, m: Message) -> None:
        if isinstance(m, AppendEntries | Heartbeat):
            # A stale leader: tell it our term so it steps down. Without this, a node whose
            # term rose (while partitioned) could be ignored forever under check-quorum.
            self._send(AppendResp(self.id, m.src, self.term, False, 0))
        elif isinstance(m, PreVote):
            self._send(PreVoteResp(self.id, m.src, self.term, False))
        else:
            self._count("drop_stale_term")

    def _in_lease(self) -> bool:
        return (
            self.cfg.check_quorum
            and self.leader != ""
            and self.election_elapsed < self.cfg.election_ticks
        )

    # ================================================================== elections

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.election_elapsed >= self.randomized_timeout:
            self._campaign(pre=self.cfg.pre_vote, transfer=False)

    def _campaign(self, pre: bool, transfer: bool) -> None:
        if self.id not in self.voters:
            return
        if pre:
            self._become_pre_candidate()
            term = self.term + 1
        else:
            self._become_candidate()
            term = self.term
        if len(self.votes) >= self.quorum:  # single-voter cluster
            if pre:
                self._campaign(pre=False, transfer=False)
            else:
                self._become_leader()
            return
        li, lt = self.log.last_index(), self.log.last_term()
        for p in self.peers:
            if pre:
                self._send(PreVote(self.id, p, term, li, lt))
            else:
                self._send(RequestVote(self.id, p, term, li, lt, transfer))

    def _on_pre_vote(self, m: PreVote) -> None:
        # Raft §9.6: grant when the pre-candidate's term would be newer and its log is at
        # least as up to date (§5.4.1). Nothing is recorded; the timer is not reset.
        granted = m.term > self.term and self.log.is_up_to_date(m.last_index, m.last_term)
        self._send(PreVoteResp(self.id, m.src, m.term if granted else self.term, granted))

    def _on_request_vote(self, m: RequestVote) -> None:
        # Raft §5.2: one vote per term (a repeated request from the same candidate is
        # granted again); §5.4.1: only to a candidate whose log is at least as up to date.
        can_vote = self.vote == m.src or (self.vote == "" and self.leader == "")
        granted = can_vote and self.log.is_up_to_date(m.last_index, m.last_term)
        if granted:
            self.vote = m.src
            self._reset_election_timer()
        self._send(RequestVoteResp(self.id, m.src, self.term, granted))

    def _on_pre_vote_resp(self, m: PreVoteResp) -> None:
        if self.role != Role.PRE_CANDIDATE:
            return
        if m.granted and m.term != self.term + 1:
            self._count("drop_stale_vote")
            return
        self._tally(m.src, m.granted, on_win=lambda: self._campaign(pre=False, transfer=False))

    def _on_vote_resp(self, m: RequestVoteResp) -> None:
        if self.role != Role.CANDIDATE:
            return
        self._tally(m.src, m.granted, on_win=self._become_leader)

    def _tally(self, voter: str, granted: bool, on_win: Callable[[], None]) -> None:
        self.votes.setdefault(voter, granted)  # a set of voters: duplicates count once
        yes = sum(1 for g in self.votes.values() if g)
        no = len(self.votes) - yes
        if yes >= self.quorum:
            on_win()
        elif no >= self.quorum:
            self._become_follower(self.term, "", reset_timer=False)

    def _on_timeout_now(self, m: TimeoutNow) -> None:
        if self.role == Role.LEADER:
            return
        # Dissertation §3.10: skip pre-vote; voters ignore their lease for this election.
        self._campaign(pre=False, transfer=True)

    # ================================================================== role changes

    def _become_follower(self, term: int, leader: str, reset_timer: bool) -> None:
        was_leader = self.role == Role.LEADER
        if term != self.term:
            self.term = term
            self.vote = ""
        self.role = Role.FOLLOWER
        if leader != self.leader:
            self._fail_follower_reads()
        self.leader = leader
        self.lead_transferee = ""
        self.votes = {}
        if was_leader:
            self.progress = {}
            self._need_bcast = False
            self._fail_reads()
            self.election_elapsed = 0
            self._reset_randomized_timeout()
        if reset_timer:
            self._reset_election_timer()

    def _become_pre_candidate(self) -> None:
        self.role = Role.PRE_CANDIDATE
        self._fail_follower_reads()
        self.leader = ""
        self.votes = {self.id: True}
        self._reset_election_timer()

    def _become_candidate(self) -> None:
        self.role = Role.CANDIDATE
        self._fail_follower_reads()
        self.term += 1
        self.vote = self.id
        self.leader = ""
        self.votes = {self.id: True}
        self._reset_election_timer()

    def _become_leader(self) -> None:
        self.role = Role.LEADER
        self.leader = self.id
        self.lead_transferee = ""
        self.heartbeat_elapsed = 0
        self.election_elapsed = 0
        nxt = self.log.last_index() + 1
        self.progress = {p: Progress(nxt, self.cfg.max_inflight_msgs) for p in self.peers}
        # Raft §8: a no-op of the new term commits earlier terms' entries (which must never
        # be committed by counting replicas, Figure 8) and anchors ReadIndex.
        self.log.append_new([Entry(nxt, self.term, b"", EntryKind.NOOP, "", 0, self._timestamp())])
        self._need_bcast = True
        self._maybe_commit()

    def _reset_election_timer(self) -> None:
        self.election_elapsed = 0
        self._reset_randomized_timeout()

    def _reset_randomized_timeout(self) -> None:
        e = self.cfg.election_ticks
        self.randomized_timeout = e + self.rng.randrange(e)

    # ================================================================== replication (leader)

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
                active = 1 + sum(1 for pr in self.progress.values() if pr.recent_active)
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
            self._bcast_heartbeat(0)

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
                self._send(InstallSnapshot(self.id, peer, self.term, self.log.offset, self.log.offset_term))
                self._count("snapshots_sent")
            else:
                self._count("append_prev_missing")
            return False
        entries = self.log.slice(pr.next, last + 1, self.cfg.max_msg_bytes)
        if not entries and not allow_empty and pr.state == ProgressState.REPLICATE:
            return False
        self._send(
            AppendEntries(
                self.id, peer, self.term, prev, prev_term, tuple(entries), self.log.committed
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
        pr = self.progress[m.src]
        pr.recent_active = True
        last = self.log.last_index()
        if m.index > last:
            self._count("drop_bad_ack")  # concerns entries we never had: a broken peer
            return
        if not m.success:
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
        advanced = pr.update(m.index)
        if pr.state == ProgressState.PROBE:
            pr.become_replicate()
        if advanced:
            self._maybe_commit()
        if self.lead_transferee == m.src and pr.match == self.log.last_index():
            self._send(TimeoutNow(self.id, m.src, self.term))
        self._pump(m.src)

    def _on_heartbeat_resp(self, m: HeartbeatResp) -> None:
        if self.role != Role.LEADER:
            return
        pr = self.progress[m.src]
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
        elif m.ctx:
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
                    if self.quorum == 1:
                        r.index = self.log.committed  # no peers to confirm with
                        self._release_read(r, True)
                    else:
                        self.reads.add(r, self.log.committed, self.id)

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

    def _timestamp(self) -> int:
        return max(self.now_ms, self.log.entry(self.log.last_index()).ts_ms)

    # ================================================================== replication (follower)

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
            self.log.maybe_append(m.prev_index, m.entries)
        except ValueError:
            self._count("drop_conflict_below_commit")
            return
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
        kept = self.log.restore(m.index, m.snap_term)
        self._count("snapshot_kept_suffix" if kept else "snapshot_replaced_log")
        meta = SnapshotMeta(m.index, m.snap_term)
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

    # ================================================================== reads

    def _leader_read(self, r: PendingRead) -> None:
        if len(self.reads) >= self.cfg.max_pending_reads:
            self._count("read_dropped_full")
            self._release_read(r, False)
            return
        if self.quorum == 1:
            r.index = self.log.committed
            if self.log.term(self.log.committed) == self.term:
                self._release_read(r, True)
            else:
                self.reads.waiting_commit.append(r)
            return
        if self.log.term(self.log.committed) != self.term:
            self.reads.waiting_commit.append(r)  # Raft §8: wait for our no-op to commit
            return
        self.reads.add(r, self.log.committed, self.id)

    def _release_read(self, r: PendingRead, ok: bool) -> None:
        if r.requester:
            self._send(ReadIndexResp(self.id, r.requester, self.term, r.request_id, r.index, ok))
        else:
            self._read_states.append(ReadState(r.request_id, r.index, ok))

    def _fail_reads(self) -> None:
        for r in self.reads.drain():
            self._release_read(r, False)

    def _fail_follower_reads(self) -> None:
        for rid in sorted(self._follower_reads):
            self._read_states.append(ReadState(rid, 0, False))
        self._follower_reads.clear()

    def _on_read_index_req(self, m: ReadIndexReq) -> None:
        if self.role != Role.LEADER:
            self._send(ReadIndexResp(self.id, m.src, self.term, m.req_id, 0, False))
            return
        self._leader_read(PendingRead(m.req_id, m.src))

    def _on_read_index_resp(self, m: ReadIndexResp) -> None:
        if m.req_id not in self._follower_reads:
            self._count("drop_unknown_read")
            return
        self._follower_reads.discard(m.req_id)
        self._read_states.append(ReadState(m.req_id, m.index, m.ok))

    # ================================================================== plumbing

    def _send(self, m: Message) -> None:
        if isinstance(m, _AFTER_PERSIST) or (self.term, self.vote) != (
            self._hs_durable.term,
            self._hs_durable.vote,
        ):
            self._pmsgs.append(m)
        else:
            self._msgs.append(m)

    def _count(self, what: str) -> None:
        self.counters[what] = self.counters.get(what, 0) + 1


def _sane(m: Message) -> bool:
    """Range checks on fields a hostile or broken peer could make nonsense of."""
    if m.term < 0:
        return False
    if isinstance(m, AppendEntries):
        return m.prev_index >= 0 and m.prev_term >= 0 and m.commit >= 0
    if isinstance(m, PreVote | RequestVote):
        return m.last_index >= 0 and m.last_term >= 0
    if isinstance(m, AppendResp):
        return m.index >= 0 and m.hint_index >= 0 and m.hint_term >= 0
    if isinstance(m, Heartbeat):
        return m.commit >= 0 and m.ctx >= 0
    if isinstance(m, HeartbeatResp):
        return m.ctx >= 0
    if isinstance(m, ReadIndexResp):
        return m.index >= 0
    if isinstance(m, InstallSnapshot):
        return m.index >= 0 and m.snap_term >= 0
    return True


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
