"""State and plumbing shared by the parts of RaftNode (elections, replication, reads).

How this works: RaftNode is one object assembled from mixins, each in its own module —
``election.py`` (timers, pre-vote, votes), ``replication.py`` (leader and follower sides of
AppendEntries, heartbeats, commit, snapshots), ``reads.py`` (ReadIndex) — over this base,
which declares every field (set in RaftNode.__init__) and holds what all parts use: sending
(with the persist-before-send split), counting, and the role changes. A few methods that
role changes need from other parts are declared here and implemented there.
"""

from __future__ import annotations

import random

from udpraft.core.log import RaftLog
from udpraft.core.membership import Membership
from udpraft.core.messages import AppendResp, Message, RequestVote, RequestVoteResp
from udpraft.core.progress import Progress
from udpraft.core.readonly import PendingRead, ReadOnly
from udpraft.core.ready import Config, ReadState, Role
from udpraft.core.types import Entry, EntryKind, HardState, SnapshotMeta

# Messages that always wait for the Ready's persistence: they vouch for durable state.
AFTER_PERSIST = (AppendResp, RequestVote, RequestVoteResp)


class NodeBase:
    cfg: Config
    id: str
    voters: tuple[str, ...]
    peers: tuple[str, ...]
    _peer_set: frozenset[str]
    quorum: int
    rng: random.Random
    term: int
    vote: str
    log: RaftLog
    snapshot: SnapshotMeta
    _snapshot_to_install: SnapshotMeta | None
    role: Role
    leader: str
    votes: dict[str, bool]
    progress: dict[str, Progress]
    lead_transferee: str
    election_elapsed: int
    heartbeat_elapsed: int
    randomized_timeout: int
    reads: ReadOnly
    _follower_reads: dict[int, int]  # follower ReadIndex id -> tick count when asked
    _ticks: int  # ticks since start (times follower reads out)
    now_ms: int
    _need_bcast: bool
    _hs_handed: HardState
    _hs_durable: HardState
    _msgs: list[Message]
    _pmsgs: list[Message]
    _read_states: list[ReadState]
    counters: dict[str, int]
    # Membership (membership.py): ``conf`` is the last CONFIG entry in the log (at
    # ``_conf_index``), else ``_base_conf`` — the snapshot's, or the initial voters.
    conf: Membership
    _conf_index: int
    _base_conf: Membership
    _initial_conf: Membership
    _known: set[str]  # every id ever seen in a configuration: senders we accept

    # -- implemented by the other parts -------------------------------------------------

    def _maybe_commit(self) -> None:
        raise NotImplementedError

    def _fail_reads(self) -> None:
        raise NotImplementedError

    def _fail_follower_reads(self) -> None:
        raise NotImplementedError

    def _release_read(self, r: PendingRead, ok: bool) -> None:
        raise NotImplementedError

    # -- membership ------------------------------------------------------------------------

    def _set_conf(self, conf: Membership, index: int) -> None:
        """Make ``conf`` (from the CONFIG entry at ``index``) this node's configuration."""
        self.conf = conf
        self._conf_index = index
        self._known |= conf.ids()
        self.voters = conf.voters
        self.peers = tuple(p for p in conf.members() if p != self.id)
        self._peer_set = frozenset(self.peers)
        self.quorum = len(self.voters) // 2 + 1
        if self.role == Role.LEADER:
            nxt = self.log.last_index() + 1
            for p in self.peers:
                if p not in self.progress:
                    self.progress[p] = Progress(nxt, self.cfg.max_inflight_msgs)
            for p in list(self.progress):
                if p not in self._peer_set:
                    del self.progress[p]
            if self.lead_transferee and self.lead_transferee not in self.voters:
                self.lead_transferee = ""

    def _conf_at(self, index: int) -> tuple[Membership, int]:
        """The configuration in effect at ``index``, with the index of its CONFIG entry."""
        i = min(index, self.log.last_index())
        while i > self.log.offset:
            # The log finds CONFIG entries by kind (a byte scan over its cold prefix):
            # walking a million entries one by one took seconds at every restart.
            i = self.log.last_index_of_kind(EntryKind.CONFIG, i)
            if i < 0:
                break
            m = Membership.decode(self.log.entry(i).data)
            if m is not None:
                return m, i
            i -= 1
        return self._base_conf, self.log.offset

    def _refresh_conf(self) -> None:
        """Recompute the configuration from the log (after a truncation or new entries)."""
        conf, index = self._conf_at(self.log.last_index())
        if conf != self.conf or index != self._conf_index:
            self._set_conf(conf, index)

    # -- role changes --------------------------------------------------------------------

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

    def _in_lease(self) -> bool:
        return (
            self.cfg.check_quorum
            and self.leader != ""
            and self.election_elapsed < self.cfg.election_ticks
        )

    def _timestamp(self) -> int:
        return max(self.now_ms, self.log.entry(self.log.last_index()).ts_ms)

    # -- plumbing --------------------------------------------------------------------------

    def _send(self, m: Message) -> None:
        if isinstance(m, AFTER_PERSIST) or (self.term, self.vote) != (
            self._hs_durable.term,
            self._hs_durable.vote,
        ):
            self._pmsgs.append(m)
        else:
            self._msgs.append(m)

    def _count(self, what: str) -> None:
        self.counters[what] = self.counters.get(what, 0) + 1
