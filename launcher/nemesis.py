"""The nemesis: a pure, seeded schedule of faults for a cluster of N nodes.

How this works: ``generate_schedule(rng, node_ids, duration_s)`` walks a timeline. After a
warm-up it alternates one fault episode with a quiet period: the episode's kind is drawn by
weight, its targets from the node ids, its length from ``Timing.fault_s``; it ends with a
``heal`` action carrying the same ``fault_id``. Episodes never overlap and each touches at
most a minority (floor((N-1)/2)) of the nodes, so a majority is always up and connected. No
episode starts unless it is healed ``Timing.tail_s`` before the end: every run finishes with
a quiet stretch in which the cluster must converge (the liveness phase).

``kill_leader`` names no node: the leader is only known at run time, so the runner resolves
it then; it counts as one faulty node. ``replace`` (a membership change, off unless given a
weight: ``MEMBERSHIP_WEIGHTS``) names no node either: the runner adds a fresh node (learner,
then voter) and removes an old one — the leader when its ``leader`` parameter is 1 — whose
process is then retired; its heal does nothing. ``wipe`` (also off unless weighted) is a
lost disk: the runner SIGKILLs a node — the leader when ``leader`` is 1, else a follower —
and deletes its data dir; the supervisor replaces it (a fresh id, the old one removed), and
the heal waits for that. Targets of later episodes are node ids of
the cluster as it started; the runner maps those that were retired onto current nodes. A killed node's ``heal`` means "be back": the
supervisor restarts it, and the runner waits until it answers before the next episode.

Pure: no clock, no IO, no global random. The same ``random.Random`` state and arguments
give the same list, which is what makes a chaos run replayable from its seed.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

KINDS = ("kill", "kill_leader", "pause", "partition", "split", "loss", "delay", "replace",
         "wipe")
HEAL = "heal"
DEFAULT_WEIGHTS: Mapping[str, float] = {
    "kill": 3.0,
    "kill_leader": 3.0,
    "pause": 2.0,
    "partition": 2.0,
    "split": 2.0,
    "loss": 1.0,
    "delay": 1.0,
    "replace": 0.0,  # membership changes: off by default (a weight of 0 draws nothing)
    "wipe": 0.0,  # a lost disk, which the supervisor answers with a replacement: ditto
}
# the default mix plus membership changes (tools.chaos --membership, launcher --membership)
MEMBERSHIP_WEIGHTS: Mapping[str, float] = {**DEFAULT_WEIGHTS, "replace": 2.0, "wipe": 1.5}
REPLACE_LEADER_P = 0.35  # how often a replace removes the leader
WIPE_LEADER_P = 0.35  # how often a wipe hits the leader


@dataclass(frozen=True, slots=True)
class Timing:
    """Seconds. Each range is (min, max), drawn uniformly."""

    start_s: float = 0.5  # warm-up before the first fault (a leader gets elected)
    fault_s: tuple[float, float] = (0.5, 2.0)  # how long one fault lasts before its heal
    quiet_s: tuple[float, float] = (0.3, 1.2)  # calm between a heal and the next fault
    tail_s: float = 2.0  # calm kept at the end of the schedule

    def __post_init__(self) -> None:
        for lo, hi in (self.fault_s, self.quiet_s):
            if not 0.0 <= lo <= hi:
                raise ValueError(f"bad range ({lo}, {hi})")
        if self.start_s < 0 or self.tail_s < 0:
            raise ValueError("start_s and tail_s must not be negative")


@dataclass(frozen=True, slots=True)
class FaultAction:
    """One timed step: a fault (``kind`` in KINDS) or the ``heal`` that ends it."""

    at_s: float
    kind: str
    fault_id: int
    targets: tuple[str, ...] = ()  # empty for kill_leader: resolved at run time
    heals: str = ""  # on a heal: the kind of fault it ends
    params: tuple[tuple[str, float], ...] = ()

    @property
    def is_heal(self) -> bool:
        return self.kind == HEAL

    def param(self, name: str, default: float = 0.0) -> float:
        return dict(self.params).get(name, default)

    def faulty_count(self) -> int:
        """How many nodes this fault makes faulty (kill_leader: one, named later)."""
        return len(self.targets) or 1

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "at_s": self.at_s, "kind": self.kind, "fault_id": self.fault_id,
            "targets": list(self.targets),
        }
        if self.heals:
            out["heals"] = self.heals
        out.update(dict(self.params))
        return out


def minority(n: int) -> int:
    """The most nodes that may be faulty at once and still leave a live majority."""
    return max(0, (n - 1) // 2)


def generate_schedule(
    rng: random.Random,
    node_ids: Sequence[str],
    duration_s: float,
    timing: Timing | None = None,
    weights: Mapping[str, float] = DEFAULT_WEIGHTS,
    offset_s: float = 0.0,
    first_fault_id: int = 1,
) -> list[FaultAction]:
    """Timed fault actions in [offset_s, offset_s + duration_s], sorted by time.

    ``offset_s``/``first_fault_id`` let a long run draw its schedule in chunks from one rng.
    A cluster without a faultable minority (N < 3) gets an empty schedule.
    """
    timing = timing or Timing()
    ids = list(node_ids)
    budget = minority(len(ids))
    kinds = [k for k in KINDS if weights.get(k, 0.0) > 0]
    unknown = set(weights) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown fault kinds: {sorted(unknown)}")
    if budget == 0 or not kinds or duration_s <= 0:
        return []
    end = offset_s + duration_s - timing.tail_s
    t = offset_s + timing.start_s
    fid = first_fault_id
    out: list[FaultAction] = []
    while True:
        length = _round(rng.uniform(*timing.fault_s))
        if t + length > end:
            break
        kind = rng.choices(kinds, weights=[weights[k] for k in kinds])[0]
        targets, params = _draw(rng, kind, ids, budget)
        out.append(FaultAction(_round(t), kind, fid, targets, params=params))
        out.append(FaultAction(_round(t + length), HEAL, fid, targets, heals=kind))
        fid += 1
        t = t + length + rng.uniform(*timing.quiet_s)
    return out


def _draw(
    rng: random.Random, kind: str, ids: list[str], budget: int
) -> tuple[tuple[str, ...], tuple[tuple[str, float], ...]]:
    if kind == "kill_leader":
        return (), ()
    if kind == "replace":
        return (), (("leader", 1.0 if rng.random() < REPLACE_LEADER_P else 0.0),)
    if kind == "wipe":
        return (), (("leader", 1.0 if rng.random() < WIPE_LEADER_P else 0.0),)
    if kind == "partition":
        return (rng.choice(ids),), ()
    count = rng.randint(1, budget)
    targets = tuple(sorted(rng.sample(ids, count), key=ids.index))
    if kind == "loss":
        return targets, (("drop_pct", _round(rng.uniform(10.0, 60.0))),)
    if kind == "delay":
        delay = _round(rng.uniform(20.0, 200.0))
        return targets, (("delay_ms", delay), ("jitter_ms", _round(delay / 4)))
    return targets, ()  # kill, pause, split (targets = the minority side)


def _round(x: float) -> float:
    return round(x, 3)


def max_faulty(schedule: Sequence[FaultAction]) -> int:
    """The most nodes faulty at one instant, replaying the schedule (heals first on ties)."""
    active: dict[int, int] = {}
    worst = 0
    for a in sorted(schedule, key=lambda a: (a.at_s, not a.is_heal)):
        if a.is_heal:
            active.pop(a.fault_id, None)
        else:
            active[a.fault_id] = a.faulty_count()
            worst = max(worst, sum(active.values()))
    return worst


def describe(action: FaultAction) -> str:
    """One short line for logs: ``t=3.20 kill n2`` / ``t=5.00 heal pause n1``."""
    who = ",".join(action.targets) or (
        "(old node)" if action.kind == "replace"
        else "(a follower)" if action.kind == "wipe" and action.param("leader") < 0.5
        else "(leader)")
    what = f"heal {action.heals}" if action.is_heal else action.kind
    extra = " ".join(f"{k}={v:g}" for k, v in action.params)
    return f"t={action.at_s:.2f} #{action.fault_id} {what} {who}" + (f" {extra}" if extra else "")
