"""Playing a nemesis schedule against a live cluster: ``NemesisRunner``.

How this works: a thread draws the schedule from ``random.Random(seed)`` (nemesis.py; pure,
so a seed replays the same faults) and plays each action at its offset from the start. What
only the running cluster knows is settled at play time:

- the leader, for ``kill_leader`` (taken from /status; without one, a random node from a
  second generator seeded from the same seed);
- the minority bound against reality: before a fault, the runner waits (``settle_s``) until
  the nodes already faulty (down, paused, or silent) plus the new targets are a minority;
  if they never are, the fault and its heal are skipped and logged, never forced;
- "healed" for a killed node means "answers /status again": its heal starts it at once if
  its restart is still waiting on backoff, then waits for it.

- ``replace`` (membership changes, when the weights ask for them): once no node is faulty
  and a leader is known, add a fresh node (``ClusterSupervisor.add_node``: learner, caught
  up, voter), then remove an old one — the leader when the action says so, else a random
  other — and retire its process (``retire_node``). The voter count never drops (add
  first), so it stays at least what the cluster started with. A node whose addition did not
  complete is retired again, so the end state is clean. Schedule targets that were retired
  meanwhile are mapped onto current nodes (runtime_rng), keeping the minority bound.
- ``wipe``: SIGKILL a node (the leader, or a random other answering node) and delete its
  data dir (``ClusterSupervisor.wipe``); the supervisor replaces it — a fresh node added,
  the old id removed — and the heal waits (``WIPE_HEAL_S``) until the fresh node answers
  and the old one is gone. The same goes for a killed node the supervisor chose to replace
  (``--storage memory``: every restart is one).

After the last heal (the schedule keeps ``Timing.tail_s`` quiet at the end) the runner heals
everything once more and checks the cluster converges: every node answers and one leader
is known. ``healthy_at_end`` holds the verdict. A runner stopped early heals what it broke.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from launcher.cluster import ClusterSupervisor
from launcher.members import MemberError
from launcher.nemesis import (
    DEFAULT_WEIGHTS,
    FaultAction,
    Timing,
    describe,
    generate_schedule,
    minority,
)

CHUNK_S = 300.0  # a run without an end draws its schedule this many seconds at a time
SETTLE_S = 5.0  # longest wait for the cluster to be ready for the next fault / for a heal
REPLACE_CATCH_UP_S = 30.0  # how long a replace waits for its new node to catch up
WIPE_HEAL_S = 60.0  # how long a wipe's heal waits for the supervisor's replacement


class NemesisRunner:
    def __init__(
        self,
        sup: ClusterSupervisor,
        seed: int,
        duration_s: float | None = None,
        timing: Timing | None = None,
        weights: Mapping[str, float] = DEFAULT_WEIGHTS,
        settle_s: float = SETTLE_S,
    ) -> None:
        self.sup = sup
        self.seed = seed
        self.duration_s = duration_s
        self.timing = timing or Timing()
        self.weights = weights
        self.settle_s = settle_s
        self.schedule_rng = random.Random(seed)
        self.runtime_rng = random.Random(seed ^ 0x5EED)
        self.schedule: list[FaultAction] = []
        self.active: dict[int, tuple[str, list[str]]] = {}  # fault_id -> (kind, targets)
        self.played = 0
        self.skipped = 0
        self.membership_changes = 0  # committed: add_learner, promote, remove each count one
        self.added: list[str] = []
        self.retired: list[str] = []
        self.healthy_at_end: bool | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0

    # ---------------------------------------------------------------- control

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="launcher-nemesis", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * self.settle_s + 5.0)

    def join(self, timeout_s: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout_s)

    def done(self) -> bool:
        return self._thread is not None and not self._thread.is_alive()

    # ---------------------------------------------------------------- the run

    def _run(self) -> None:
        ids = self.sup.ids
        offset, fid = 0.0, 1
        while not self._stop.is_set():
            chunk = self.duration_s if self.duration_s is not None else CHUNK_S
            part = generate_schedule(self.schedule_rng, ids, chunk, self.timing, self.weights,
                                     offset_s=offset, first_fault_id=fid)
            self.schedule += part
            faults = sum(1 for a in part if not a.is_heal)
            self.sup.events.emit("info", f"nemesis: seed {self.seed}, {faults} faults over "
                                 f"{offset:.0f}..{offset + chunk:.0f}s (minority "
                                 f"{minority(len(ids))} of {len(ids)})")
            for action in part:
                if self._stop.wait(max(0.0, self._t0 + action.at_s - time.monotonic())):
                    break
                self._play(action)
            if self.duration_s is not None:
                break
            offset += chunk
            fid += faults
        if self._stop.is_set():
            self._heal_active()  # stopped early: leave no partition or pause behind
        else:
            self._finish()

    def _play(self, action: FaultAction) -> None:
        try:
            if action.is_heal:
                self._heal(action)
            else:
                self._fault(action)
        except Exception as e:  # a nemesis bug must not take the launcher down with it
            self.sup.events.emit("warn", f"nemesis: {describe(action)} failed: {e!r}")

    def _details(self, action: FaultAction) -> dict[str, Any]:
        return {"fault_id": action.fault_id, "seed": self.seed, "at_s": action.at_s}

    def _current(self, targets: tuple[str, ...]) -> set[str]:
        """The targets, with nodes retired since the schedule was drawn replaced by others."""
        ids = self.sup.ids
        out = [t for t in targets if t in ids]
        spare = [n for n in ids if n not in out]
        for t in targets:
            if t not in ids and spare:
                pick = self.runtime_rng.choice(spare)
                spare.remove(pick)
                out.append(pick)
        return set(out)

    def _fault(self, action: FaultAction) -> None:
        if action.kind == "replace":
            self._replace(action)
            return
        sup, budget = self.sup, minority(len(self.sup.ids))
        wanted = self._current(action.targets)
        if action.kind == "kill_leader":
            wanted = {self._leader_or_any()}
        elif action.kind == "wipe":
            wanted = {self._wipe_victim(action)}
        if not self._wait(lambda: len(sup.faulty() | wanted) <= budget, self.settle_s):
            self.skipped += 1
            sup.events.emit("warn", f"nemesis: skipped {describe(action)}: already faulty "
                            f"{sorted(sup.faulty())}, bound {budget}")
            return
        targets = sorted(wanted, key=sup.ids.index)
        d = self._details(action)
        kind = action.kind
        if kind in ("kill", "kill_leader"):
            if kind == "kill_leader":  # the leader may have moved while we waited
                targets = [self._leader_or_any()]
                d["leader"] = targets[0] == sup.leader()
            for nid in targets:
                sup.kill(nid, kind=kind, **d)
        elif kind == "wipe":
            targets = [self._wipe_victim(action)]  # the leader may have moved
            d["leader"] = targets[0] == sup.leader()
            sup.wipe(targets[0], **d)
        elif kind == "pause":
            for nid in targets:
                sup.pause(nid, **d)
        elif kind in ("partition", "split"):
            sup.partition(targets, kind=kind, **d)
        elif kind == "loss":
            sup.degrade(targets, drop_pct=action.param("drop_pct"), kind=kind, **d)
        elif kind == "delay":
            sup.degrade(targets, delay_ms=action.param("delay_ms"),
                        jitter_ms=action.param("jitter_ms"), kind=kind, **d)
        else:
            raise ValueError(f"unknown fault kind {kind!r}")
        self.active[action.fault_id] = (kind, targets)
        self.played += 1

    def _replace(self, action: FaultAction) -> None:
        """Add a fresh node, then remove an old one (maybe the leader) and retire it."""
        sup, d = self.sup, self._details(action)
        if not self._wait(lambda: not sup.faulty() and sup.leader() is not None, self.settle_s):
            self.skipped += 1
            sup.events.emit("warn", f"nemesis: skipped {describe(action)}: faulty "
                            f"{sorted(sup.faulty())}, leader {sup.leader()}")
            return
        before = set(sup.ids)
        try:
            added = sup.add_node(catch_up_s=REPLACE_CATCH_UP_S, timeout_s=2 * self.settle_s)
        except MemberError as e:
            self.skipped += 1
            sup.events.emit("warn", f"nemesis: {describe(action)}: add failed: {e}")
            for nid in set(sup.ids) - before:  # listed, maybe a learner: leave nothing behind
                try:
                    sup.retire_node(nid, timeout_s=4 * self.settle_s)
                except (MemberError, KeyError) as e2:
                    sup.events.emit("warn", f"nemesis: could not retire {nid}: {e2}")
            return
        new = str(added["node"])
        self.added.append(new)
        self.membership_changes += 2
        leader = sup.leader()
        old = [n for n in sup.ids if n in before]
        if action.param("leader") >= 0.5 and leader in old:
            victim = leader
        else:
            victim = self.runtime_rng.choice([n for n in old if n != leader] or old)
        d["leader"] = victim == leader
        try:
            sup.retire_node(victim, timeout_s=4 * self.settle_s)
        except (MemberError, KeyError) as e:
            sup.events.fault("replace", [new], added=new, error=f"retire {victim}: {e}", **d)
        else:
            self.retired.append(victim)
            self.membership_changes += 1
            sup.events.fault("replace", [victim], added=new, retired=victim, **d)
        self.active[action.fault_id] = ("replace", [new])
        self.played += 1

    def _heal(self, action: FaultAction) -> None:
        got = self.active.pop(action.fault_id, None)
        if got is None:
            return  # its fault was skipped
        kind, targets = got
        sup, d = self.sup, self._details(action)
        if kind == "replace":  # nothing to undo: wait until the new node answers
            back = self._wait(lambda: all(n in sup.ids and sup.answering(n) for n in targets),
                              self.settle_s)
            sup.events.fault("heal", targets, heals=kind, back=back, **d)
            return
        if kind in ("kill", "kill_leader", "wipe"):
            for nid in targets:
                if nid in sup.ids:
                    sup.start_node(nid)  # skip what is left of its restart backoff
            wait_s = WIPE_HEAL_S if kind == "wipe" else self.settle_s
            back = self._wait(lambda: all(self._back(n) for n in targets), wait_s)
            new = {n: sup.replacement_of(n) for n in targets}
            replaced = {n: r for n, r in new.items() if r and n not in sup.ids}
            for old, r in replaced.items():
                if r not in self.added:
                    self.added.append(r)
                    self.retired.append(old)
                    self.membership_changes += 3
            more = {"replaced_by": replaced} if replaced else {}
            sup.events.fault("heal", targets, heals=kind, back=back,
                             pids=[sup.pids().get(replaced.get(n, n), 0) for n in targets],
                             **more, **d)
        elif kind in ("partition", "split"):
            sup.heal(None, heals=kind, **d)  # both sides of the cut
        else:
            sup.heal(targets, heals=kind, **d)

    def _back(self, nid: str) -> bool:
        """The node answers again — or, if the supervisor replaced it (it lost its data),
        it is gone and its replacement answers."""
        sup = self.sup
        if nid in sup.ids and not sup.is_wiped(nid):
            return sup.answering(nid)
        new = sup.replacement_of(nid)
        return nid not in sup.ids and new is not None and new in sup.ids and sup.answering(new)

    def _wipe_victim(self, action: FaultAction) -> str:
        """The leader when the action says so, else a random answering other node."""
        sup = self.sup
        if action.param("leader") >= 0.5:
            return self._leader_or_any()
        leader = sup.leader()
        others = [n for n in sup.ids if n != leader and sup.answering(n)]
        return self.runtime_rng.choice(others or [n for n in sup.ids if n != leader]
                                       or sup.ids)

    def _wait(self, cond: Callable[[], bool], timeout_s: float) -> bool:
        """Poll ``cond`` until true or ``timeout_s``; a stopped runner stops waiting."""
        deadline = time.monotonic() + timeout_s
        while not cond():
            if time.monotonic() >= deadline or self._stop.wait(0.05):
                return cond()
        return True

    def _leader_or_any(self) -> str:
        if self._wait(lambda: self.sup.leader() is not None, min(2.0, self.settle_s)):
            leader = self.sup.leader()
            if leader is not None:
                return leader
        up = [n for n in self.sup.ids if self.sup.answering(n)] or self.sup.ids
        return self.runtime_rng.choice(up)

    def _heal_active(self) -> None:
        for fid in list(self.active):
            kind, targets = self.active[fid]
            self._play(FaultAction(0.0, "heal", fid, tuple(targets), heals=kind))

    def _finish(self) -> None:
        sup = self.sup
        self._heal_active()
        if self.duration_s is None:
            wait_s = self.settle_s
        else:
            wait_s = max(0.5, self._t0 + self.duration_s - time.monotonic() - 0.5)
        self.healthy_at_end = self._wait(
            lambda: not sup.faulty() and sup.leader() is not None, min(wait_s, 2 * self.settle_s))
        leader = sup.leader()
        up = sum(1 for n in sup.ids if sup.answering(n))
        verdict = "healthy" if self.healthy_at_end else "NOT healthy"
        members = (f"; added {', '.join(self.added)}, retired {', '.join(self.retired) or '-'}"
                   if self.added else "")
        sup.events.emit(
            "info" if self.healthy_at_end else "warn",
            f"nemesis done: {self.played} faults played, {self.skipped} skipped; cluster "
            f"{verdict}: {up}/{len(sup.ids)} nodes answer, leader {leader or '-'}{members}",
        )
