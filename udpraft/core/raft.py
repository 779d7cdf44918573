"""RaftNode: the whole Raft algorithm as a deterministic state machine.

How this works: inputs are ``step(message)``, ``tick()``, ``propose(...)``, ``read_index(...)``
and ``transfer_leadership(...)``; outputs are collected into a ``Ready`` (see ready.py) that
the runtime persists, sends and applies before calling ``advance``. Nothing here touches a
socket, a disk, a clock or the global random module: randomness is the injected
``random.Random`` and time is ticks (plus an optional ``now_ms`` the leader stamps on
entries for deterministic session expiry).

Peer input is never trusted: a message from an unknown sender, addressed to someone else or
with nonsense fields is dropped and counted in ``counters``; nothing a peer sends can raise.

Membership (membership.py) changes one server at a time through ``propose_conf_change``: a
CONFIG entry holding the whole configuration, effective once appended (dissertation §4.1).
Voters elect and count for commit, ReadIndex and check-quorum; learners only replicate; a
removed node never campaigns, and a removed leader steps down once its removal commits.

Role handlers live in one method per message type, in the part they belong to:
election.py, replication.py, reads.py over base.py (state and plumbing); this module holds
the public surface, the Ready/advance cycle and the term rules. The rules cite the paper
(Raft §x) or Ongaro's dissertation (§x.y where the paper has no such section).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from itertools import repeat
from typing import Any

from udpraft.core.batch import EntryBatch, runs_of, seq_runs_of
from udpraft.core.columns import build_entries
from udpraft.core.election import Elections
from udpraft.core.errors import InvalidRequest, NotLeader, ProposalDropped
from udpraft.core.log import RaftLog
from udpraft.core.membership import Membership
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
    coalesce_append_resps,
)
from udpraft.core.progress import Progress, ProgressState
from udpraft.core.readonly import PendingRead, ReadOnly
from udpraft.core.reads import Reads
from udpraft.core.ready import Config, ReadState, Ready, Role
from udpraft.core.replication import Replication
from udpraft.core.types import (
    EMPTY_HARD_STATE,
    NO_SNAPSHOT,
    Entry,
    EntryKind,
    HardState,
    SnapshotMeta,
)

_MAX_FOLLOWER_READS = 10_000


class RaftNode(Elections, Replication, Reads):
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
        # Empty ``voters``: a node joining an existing cluster, which learns the
        # configuration from the leader's appends or snapshot.
        self._initial_conf = Membership.of(set(voters) | {node_id}) if voters else Membership()
        self._base_conf = self._initial_conf
        snap_conf = Membership.decode(snapshot.conf.encode()) if snapshot.conf else None
        if snap_conf is not None and snap_conf.voters:
            self._base_conf = snap_conf
        self._known = set(self._initial_conf.ids())
        self.conf = self._base_conf
        self._conf_index = 0
        self.voters: tuple[str, ...] = ()
        self.peers: tuple[str, ...] = ()
        self._peer_set: frozenset[str] = frozenset()
        self.quorum = 1
        self.rng = rng
        # Raft Figure 2 persistent state. Commit is *not* trusted from disk: a hard state
        # written ahead of its entries must never make us apply entries that are not
        # committed, so commit is re-learned from the leader after a restart.
        self.term = hard_state.term
        self.vote = hard_state.vote
        # After a restart from a snapshot, everything it covers is committed and applied
        # (the runtime restored the state machine from it); the log continues after it.
        self.log = RaftLog(entries, snapshot.index, snapshot.term, self.cfg.hot_entries)
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
        self._follower_reads: dict[int, int] = {}
        self._ticks = 0
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
        self._set_conf(self._base_conf, self.log.offset)
        self._refresh_conf()

    def tick(self, now_ms: int | None = None) -> None:
        if now_ms is not None and now_ms > self.now_ms:
            self.now_ms = now_ms
        self._ticks += 1
        if self._follower_reads:
            self._expire_follower_reads()
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
        if m.src == self.id or (m.src not in self._known and not self._maybe_new_leader(m)):
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
        n = len(items)
        self._check_can_propose(n)
        first = self.log.last_index() + 1
        ts = self._timestamp()
        term = self.term
        normal = EntryKind.NORMAL
        datas, cids, seqs = (list(c) for c in zip(*items)) if n else ([], [], [])
        self.log.append_new(
            build_entries(n, range(first, first + n), repeat(term, n), datas, repeat(normal, n),
                          cids, seqs, repeat(ts, n)),
            # the same in columns (core/batch.py): the appends, the WAL and the cold
            # columns read its runs instead of every entry's fields
            EntryBatch(first, n, [term, n], [int(normal), n], runs_of(cids), seq_runs_of(seqs),
                       [ts, n], datas=datas) if n else None,
        )
        self._need_bcast = True
        return first

    def propose_datas(self, datas: Sequence[bytes]) -> int:
        """``propose_batch`` for entries outside any client session (library use: the
        caller tracks them by index); returns the index of the first one."""
        n = len(datas)
        self._check_can_propose(n)
        first = self.log.last_index() + 1
        ts = self._timestamp()
        term = self.term
        normal = EntryKind.NORMAL
        datas = tuple(datas)  # the batch keeps them: a caller's list may change later
        self.log.append_new(
            build_entries(n, range(first, first + n), repeat(term, n), datas, repeat(normal, n),
                          repeat("", n), repeat(0, n), repeat(ts, n)),
            EntryBatch.uniform(first, term, normal, "", 0, ts, datas),
        )
        self._need_bcast = True
        return first

    def propose_conf_change(self, op: str, node_id: str, addr: str = "") -> int:
        """Propose one single-server membership change (dissertation §4.1); returns its index.

        ``op`` is "add_learner", "add_voter", "promote" or "remove". Leader only; one change
        at a time (ProposalDropped while a CONFIG entry is uncommitted, during a transfer, or
        before an entry of this term committed — the fix to the single-server bug);
        InvalidRequest for a change that makes no sense for the current configuration.
        ``addr`` (adds only) is an opaque address replicated with the configuration.
        """
        self._check_can_propose(1)
        if self._conf_index > self.log.committed:
            raise ProposalDropped("a configuration change is still uncommitted")
        if self.log.term(self.log.committed) != self.term:
            raise ProposalDropped("no entry of this term committed yet")
        new = self.conf.change(op, node_id, addr)
        idx = self.log.last_index() + 1
        self.log.append_new(
            [Entry(idx, self.term, new.encode(), EntryKind.CONFIG, "", 0, self._timestamp())]
        )
        self._set_conf(new, idx)  # effective on append, not on commit
        self._need_bcast = True
        self._maybe_commit()
        return idx

    def read_index(self, request_id: int) -> None:
        """Ask for a linearizable read point; the answer arrives as a ReadState (§6.4)."""
        if self.role == Role.LEADER:
            self._leader_read(PendingRead(request_id, ""))
        elif self.leader and len(self._follower_reads) < _MAX_FOLLOWER_READS:
            self._follower_reads[request_id] = self._ticks
            self._send(ReadIndexReq(self.id, self.leader, self.term, request_id))
        else:
            self._read_states.append(ReadState(request_id, 0, False))

    def transfer_leadership(self, target: str) -> None:
        """Dissertation §3.10: bring ``target`` up to date, then tell it to time out now."""
        if self.role != Role.LEADER:
            raise NotLeader(self.leader)
        if target == self.id:
            return
        if target not in self.voters:
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

    def peer_restarted(self, peer: str) -> None:
        """The runtime saw ``peer`` come back as a new process (a new incarnation).

        Raft assumes a restarted node kept what it acknowledged; a wiped disk breaks that,
        and would leave the leader believing the follower in sync forever. So the leader
        probes it again and takes a shorter log as the truth (counted: follower_lost_log).
        """
        pr = self.progress.get(peer)
        if self.role != Role.LEADER or pr is None:
            return
        pr.lost_log_suspect = True
        if pr.state != ProgressState.SNAPSHOT:
            pr.become_probe()
            self._send_append(peer, allow_empty=True)

    def compact(self, snapshot: SnapshotMeta) -> None:
        """The runtime made a snapshot at ``snapshot.index`` durable: drop the log up to it.

        The index must be applied here (the snapshot holds its effect) and durable in the log
        (so no gap can open between snapshot and log across a crash).
        """
        if snapshot.index <= self.log.offset:
            return
        if self.log.term(snapshot.index) != snapshot.term:
            raise InvalidRequest(f"snapshot {snapshot} does not match the log")
        base, _ = self._conf_at(snapshot.index)
        try:
            self.log.compact(snapshot.index)
        except ValueError as e:
            raise InvalidRequest(str(e)) from None
        self._base_conf = base  # the configuration at the snapshot point survives compaction
        self._refresh_conf()
        self.snapshot = snapshot

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
        if rd.entries:
            rd.entry_batches = self.log.batch_pieces(rd.entries[0].index, rd.entries[-1].index)
        rd.must_sync = rd.hard_state is not None or bool(rd.entries) or rd.snapshot is not None
        rd.messages, self._msgs = self._msgs, []
        rd.persisted_messages, self._pmsgs = coalesce_append_resps(self._pmsgs), []
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
            "membership": {
                "voters": list(self.conf.voters),
                "learners": list(self.conf.learners),
                "removed": list(self.conf.removed),
                "addrs": dict(self.conf.addrs),
                "index": self._conf_index,
                "committed": self._conf_index <= self.log.committed,
            },
        }
        if self.role == Role.LEADER:
            st["progress"] = {
                p: {"match": pr.match, "next": pr.next, "state": pr.state.name.lower()}
                for p, pr in self.progress.items()
            }
        return st

    def conf_at(self, index: int) -> Membership:
        """The configuration in effect at ``index`` (for a snapshot taken there)."""
        return self._conf_at(index)[0]

    def _maybe_new_leader(self, m: Message) -> bool:
        """Leader traffic from an id we never saw in a configuration: a node that joined (or
        lags behind the entry adding the sender) must still learn from the current leader."""
        if not m.src or not isinstance(m, AppendEntries | Heartbeat | InstallSnapshot):
            return False
        if isinstance(m, InstallSnapshot):
            # Only a snapshot that carries a configuration (a joining node learns it there;
            # the sender may have joined after the snapshot was taken, so it need not be named).
            conf = Membership.decode(m.conf.encode()) if m.conf else None
            if conf is None or not conf.voters:
                return False
        # Not a second leader of our current term; a stale one is answered with our term.
        return m.term != self.term or self.leader in ("", m.src)

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
