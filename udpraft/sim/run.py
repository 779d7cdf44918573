"""One seeded simulation: a random fault mix, a safety phase, then a liveness phase.

How this works (after TigerBeetle's VOPR): the seed picks a "swarm" fault mix (which faults
are on and how strong), then drives clients and a nemesis against a ``Cluster`` for the safety
phase, checking invariants after every event. Then the environment turns healthy — network
healed, loss off, every node restarted — and the liveness phase demands that a leader
emerges, every client request is acknowledged and all nodes converge, within a bound.

Clients are exactly-once sessions (client id + seq) that pipeline requests and retry them;
every acknowledgement is checked against the final committed log (at the acknowledged index,
applied once). Clients also issue ReadIndex reads, each checked to observe every write
acknowledged before the read began (no stale reads).
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass, field, replace

from udpraft.core.ready import Config
from udpraft.core.sessions import Verdict
from udpraft.core.types import Entry, EntryKind
from udpraft.sim.cluster import Cluster, SimConfig, SimNode
from udpraft.sim.invariants import InvariantViolation
from udpraft.sim.network import NetConfig


@dataclass(slots=True)
class FaultMix:
    loss: float = 0.0
    dup: float = 0.0
    long_delay: float = 0.0
    delay_ms_max: float = 5.0
    crash: float = 0.0
    partition: float = 0.0
    asymmetric: float = 0.0
    flap: float = 0.0
    fault_every_ms: float = 300.0
    bounce: float = 0.0
    snapshot_every: int = 0  # set from the seed with the cluster config (0 = never)
    hot_entries: int = 0  # entries the logs keep as objects (0: the default 16,384)
    batches: bool = False  # AppendEntries delivered with their column form (core/batch.py)
    membership: float = 0.0  # weight of membership changes (set from its own stream)

    @classmethod
    def from_rng(cls, rng: random.Random) -> FaultMix:
        def pick(*opts: float) -> float:
            return rng.choice(opts)

        return cls(
            loss=pick(0.0, 0.0, 0.02, 0.1, 0.25),
            dup=pick(0.0, 0.05, 0.2),
            long_delay=pick(0.0, 0.0, 0.01),
            delay_ms_max=pick(2.0, 5.0, 20.0),
            crash=pick(0.0, 1.0, 2.0),
            partition=pick(0.0, 1.0, 2.0),
            asymmetric=pick(0.0, 1.0),
            flap=pick(0.0, 1.0),
            fault_every_ms=pick(100.0, 300.0, 800.0),
            bounce=pick(0.0, 1.0, 3.0),
        )

    def describe(self) -> str:
        return " ".join(f"{k}={getattr(self, k)}" for k in self.__dataclass_fields__)


def swarm_config(rng: random.Random) -> Config:
    """Per-seed Raft tunables: tiny messages split batches, tiny windows stall pipelines."""
    e = rng.choice([6, 10, 20])
    return Config(
        election_ticks=e,
        heartbeat_ticks=rng.choice([1, 2, max(1, e // 3)]),
        pre_vote=rng.random() < 0.8,
        check_quorum=rng.random() < 0.8,
        max_inflight_msgs=rng.choice([1, 4, 64]),
        max_msg_bytes=rng.choice([1, 200, 48_000]),
        max_apply_entries=rng.choice([1, 10_000]),
    )


@dataclass(slots=True)
class SimResult:
    seed: int
    nodes: int
    ok: bool
    error: str = ""
    mix: str = ""
    acked: int = 0
    reads: int = 0
    committed: int = 0
    elections: int = 0
    messages: int = 0
    trace: list[str] = field(default_factory=list)

    def line(self) -> str:
        verdict = "ok" if self.ok else f"FAIL: {self.error}"
        return (
            f"seed={self.seed} nodes={self.nodes} {verdict} acked={self.acked} reads={self.reads} "
            f"committed={self.committed} elections={self.elections} messages={self.messages} "
            f"mix: {self.mix}"
        )


class Workload:
    """Clients with sessions, pipelined submits with retries, and ReadIndex reads."""

    def __init__(self, c: Cluster, rng: random.Random, clients: int = 3, inflight: int = 4):
        self.c = c
        self.rng = rng
        self.clients = [f"c{i}" for i in range(clients)]
        self.next_seq = dict.fromkeys(self.clients, 0)
        self.pending: dict[tuple[str, int], float] = {}  # (client, seq) -> last try time
        self.acked: dict[tuple[str, int], int] = {}
        self.acked_order: list[tuple[str, int]] = []
        self.inflight = inflight
        self.issuing = True
        self.reads_done = 0
        self._rid = 0
        c.on_apply = self._on_apply

    def start(self) -> None:
        self.c.at(self.rng.uniform(0, 20), self._step)

    def _step(self) -> None:
        c = self.c
        for cl in self.clients:
            n_pending = sum(1 for (x, _) in self.pending if x == cl)
            # A session's first request travels alone (it opens the session, §6.3); after
            # its answer the client pipelines up to ``inflight`` requests.
            opened = (cl, 1) in self.acked
            room = self.inflight if opened else 1
            if self.issuing and n_pending < room and self.rng.random() < 0.7:
                self.next_seq[cl] += 1
                key = (cl, self.next_seq[cl])
                self.pending[key] = -1e9
        for key, last in list(self.pending.items()):
            if c.now - last >= 150.0:
                self.pending[key] = c.now
                self._submit(key)
        if self.issuing and self.rng.random() < 0.3:
            self._read()
        c.at(self.rng.uniform(5, 25), self._step)

    def _submit(self, key: tuple[str, int]) -> None:
        c = self.c
        ups = c.up_ids()
        if not ups:
            return
        target = self.rng.choice(ups)
        r = c.nodes[target].raft
        if r is not None and r.leader and r.leader != target and r.leader in ups:
            target = r.leader  # follower forwards to the leader it knows
        c.propose(target, f"{key[0]}:{key[1]}".encode(), key[0], key[1])

    def _on_apply(self, n: SimNode, e: Entry, verdict: Verdict, result: int) -> None:
        key = (e.client_id, e.seq)
        if key not in self.pending or verdict == Verdict.EXPIRED:
            return
        r = n.raft
        if r is None or r.leader != n.id:
            return  # only the leader answers clients in this model
        del self.pending[key]
        self.acked[key] = result
        self.acked_order.append(key)

    def _read(self) -> None:
        c = self.c
        ups = c.up_ids()
        if not ups:
            return
        self._rid += 1
        must_see = len(self.acked_order)
        rid = self._rid

        def done(n: SimNode) -> None:
            for key in self.acked_order[:must_see]:
                if key not in n.applied_keys:
                    raise InvariantViolation(
                        f"stale read {rid} on {n.id}: misses {key} acknowledged before it began"
                    )
            self.reads_done += 1

        c.read(self.rng.choice(ups), rid, done)

    def check_final(self, committed: list[Entry]) -> None:
        first_at: dict[tuple[str, int], int] = {}
        for e in committed:
            if e.kind == EntryKind.NORMAL and e.client_id:
                first_at.setdefault((e.client_id, e.seq), e.index)
        for key, idx in self.acked.items():
            if first_at.get(key) != idx:
                raise InvariantViolation(
                    f"acknowledged {key} at index {idx} but the log has it first at "
                    f"{first_at.get(key)}"
                )


class Nemesis:
    def __init__(self, c: Cluster, rng: random.Random, mix: FaultMix):
        self.c = c
        self.rng = rng
        self.mix = mix
        self.active = True
        self.mem_rng = random.Random(f"{c.seed}/membership-nemesis")

    def start(self) -> None:
        self.c.at(self.rng.uniform(50, self.mix.fault_every_ms), self._step)
        if self.mix.membership > 0:
            self.c.at(self.mem_rng.uniform(20, 200), self._membership_loop)

    def _membership_loop(self) -> None:
        # Membership changes also run on their own clock, mixed with the other faults.
        if not self.active:
            return
        self._membership()
        self.c.at(self.mem_rng.uniform(40, 400) / self.mix.membership, self._membership_loop)

    def _step(self) -> None:
        if not self.active:
            return
        c, rng, mix = self.c, self.rng, self.mix
        down = [i for i in c.ids if not c.nodes[i].up]
        actions = [
            ("crash", mix.crash),
            ("crash_leader", mix.crash),
            ("restart", 2.0 if down else 0.0),
            ("isolate", mix.partition),
            ("split", mix.partition),
            ("one_way", mix.asymmetric),
            ("flap", mix.flap),
            ("bounce", mix.bounce),
            ("heal", 1.0),
        ]
        if mix.membership > 0:
            actions.append(("membership", mix.membership))
        total = sum(w for _, w in actions)
        x = rng.uniform(0, total)
        for name, w in actions:
            x -= w
            if x <= 0:
                self._do(name, down)
                break
        c.at(rng.uniform(0.5, 1.5) * mix.fault_every_ms, self._step)

    def _do(self, name: str, down: list[str]) -> None:
        c, rng = self.c, self.rng
        if name == "crash":
            c.crash(rng.choice(c.ids))
        elif name == "crash_leader":
            ld = c.leader()
            if ld is not None:
                c.crash(ld)
        elif name == "restart":
            c.restart(rng.choice(down))
        elif name == "isolate":
            c.isolate(rng.choice(c.ids))
        elif name == "split":
            ids = list(c.ids)
            rng.shuffle(ids)
            k = rng.randrange(1, len(ids))
            c.net.split(ids[:k], ids[k:])
            c.log(f"split {ids[:k]} | {ids[k:]}")
        elif name == "one_way":
            a, b = rng.sample(c.ids, 2)
            c.net.block_one_way(a, b)
            c.log(f"block {a} -> {b}")
        elif name == "flap":
            a, b = rng.sample(c.ids, 2)
            for i in range(6):
                c.at(i * 40.0, functools.partial(self._flap, a, b, i % 2 == 0))
        elif name == "bounce":
            # Crash and come back quickly: catches state that was acted on but not durable
            # (a vote, an acknowledged entry) right in the middle of an election.
            victim = rng.choice(c.ids)
            c.crash(victim)
            c.at(rng.uniform(0.0, 30.0), functools.partial(self._restart, victim))
        elif name == "membership":
            self._membership()
        else:
            c.heal()

    def _membership(self) -> None:
        """A random valid single-server change: add a learner, promote a caught-up learner,
        remove a voter (maybe the leader) or a learner; 3..7 voters."""
        c, rng = self.c, self.mem_rng
        ld = c.leader()
        if ld is None:
            return
        r = c.raft(ld)
        voters, learners = list(r.conf.voters), list(r.conf.learners)
        ready = [x for x in learners if x in r.progress and r.progress[x].match >= r.log.committed]
        choices: list[str] = []
        if ready and len(voters) < 7:
            choices += ["promote"] * 3
        if len(voters) + len(learners) < 7:
            choices.append("add")
        if len(voters) > 3:
            choices.append("remove_voter")
        if learners:
            choices.append("remove_learner")
        if not choices:
            return
        what = rng.choice(choices)
        if what == "promote":
            c.conf_change(ld, "promote", rng.choice(ready))
        elif what == "add":
            c.conf_change(ld, "add_learner", c.add_node())
        elif what == "remove_voter":
            c.conf_change(ld, "remove", rng.choice(voters))
        else:
            c.conf_change(ld, "remove", rng.choice(learners))

    def _restart(self, nid: str) -> None:
        if self.active:
            self.c.restart(nid)

    def _flap(self, a: str, b: str, cut: bool) -> None:
        if not self.active:
            return
        if cut:
            self.c.net.blocked |= {(a, b), (b, a)}
        else:
            self.c.net.blocked -= {(a, b), (b, a)}


def run_seed(
    seed: int,
    nodes: int = 5,
    safety_ms: float = 2000.0,
    liveness_ms: float = 8000.0,
    trace: bool = False,
    membership: bool | None = None,
) -> SimResult:
    rng = random.Random(seed)
    mix = FaultMix.from_rng(rng)
    net = NetConfig(
        delay_ms_min=0.2,
        delay_ms_max=mix.delay_ms_max,
        loss=mix.loss,
        dup=mix.dup,
        long_delay=mix.long_delay,
    )
    early = rng.random() < 0.5
    snap_every = rng.choice([0, 0, 5, 20, 100])
    raft_cfg = swarm_config(rng)
    # The logs' cold columns (tiny hot lists, filled from AppendEntries batches or from the
    # entries) draw from their own stream too: no other choice of a seed changes.
    lrng = random.Random(f"{seed}/log")
    hot = lrng.choice([0, 0, 1, 3, 40])
    if hot:
        raft_cfg = replace(raft_cfg, hot_entries=hot)
    mix.hot_entries = hot
    mix.batches = lrng.random() < 0.7
    c = Cluster(
        seed,
        SimConfig(nodes=nodes, net=net, raft=raft_cfg, early_apply=early,
                  snapshot_every=snap_every, batches=mix.batches),
        trace=trace,
    )
    mix.snapshot_every = snap_every
    # Membership changes draw from their own stream so the other seeds' runs stay as they were.
    mrng = random.Random(f"{seed}/membership")
    if membership is None:
        membership = mrng.random() < 0.4
    if membership:
        mix.membership = mrng.choice([1.0, 2.0, 4.0])
    res = SimResult(seed=seed, nodes=nodes, ok=False, mix=mix.describe())
    wl = Workload(c, random.Random(f"{seed}/clients"))
    nem = Nemesis(c, random.Random(f"{seed}/nemesis"), mix)
    try:
        wl.start()
        nem.start()
        c.run_for(safety_ms)
        # Liveness phase: a healthy environment must converge within the bound.
        nem.active = False
        wl.issuing = False
        c.heal()
        c.net.cfg.loss = 0.0
        c.net.cfg.long_delay = 0.0
        for i in c.ids:
            if i not in c.committed_conf.removed:
                c.restart(i)

        def reap() -> None:
            # Removed servers are shut down once their removal is committed (§4.2.3).
            for i in c.committed_conf.removed:
                c.crash(i)
            c.at(50.0, reap)

        reap()

        def converged() -> bool:
            ld = c.leader()
            if ld is None or wl.pending:
                return False
            r = c.raft(ld)
            last = r.log.last_index()
            members = r.conf.members()
            return all(
                c.nodes[i].up
                and c.raft(i).log.committed == last
                and c.nodes[i].applied == last
                for i in members
            )

        if not c.wait_for(converged, liveness_ms):
            ld = c.leader()
            raise InvariantViolation(
                f"liveness: no convergence within {liveness_ms:.0f} ms "
                f"(leader={ld}, pending={len(wl.pending)})"
            )
        wl.check_final(c.inv.committed)
        res.ok = True
    except InvariantViolation as e:
        res.error = str(e)
    res.acked = len(wl.acked)
    res.reads = wl.reads_done
    res.committed = len(c.inv.committed)
    res.elections = c.elections
    res.messages = c.net.sent
    if c.trace is not None:
        res.trace = c.trace
    return res
