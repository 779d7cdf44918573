"""The nemesis runner against a stand-in supervisor: heals what it breaks, respects reality."""

from __future__ import annotations

from typing import Any, cast

from launcher.chaos import NemesisRunner
from launcher.cluster import ClusterSupervisor
from launcher.events import EventLog
from launcher.nemesis import Timing

FAST = Timing(start_s=0.01, fault_s=(0.01, 0.03), quiet_s=(0.01, 0.02), tail_s=0.05)


class FakeSupervisor:
    """Records fault calls; every node answers unless listed in ``down``."""

    def __init__(self, n: int, down: set[str] | None = None) -> None:
        self.ids = [f"n{i}" for i in range(1, n + 1)]
        self.events = EventLog(None)
        self.down = down or set()
        self.calls: list[tuple[str, tuple[str, ...]]] = []
        self.broken: set[str] = set()  # nodes currently faulted by the runner
        self.worst = 0  # most nodes faulty at once, as the fake saw it

    def faulty(self) -> set[str]:
        return self.down | self.broken

    def leader(self) -> str | None:
        return next((n for n in self.ids if n not in self.faulty()), None)

    def answering(self, node_id: str) -> bool:
        return node_id not in self.faulty()

    def pids(self) -> dict[str, int]:
        return {n: 100 + i for i, n in enumerate(self.ids)}

    def is_wiped(self, node_id: str) -> bool:
        return False

    def replacement_of(self, node_id: str) -> str | None:
        return None

    def _fault(self, what: str, targets: list[str]) -> list[str]:
        self.calls.append((what, tuple(targets)))
        self.broken |= set(targets)
        self.worst = max(self.worst, len(self.faulty()))
        return []

    def kill(self, node_id: str, kind: str = "kill", **d: Any) -> int:
        self._fault(kind, [node_id])
        return 1

    def pause(self, node_id: str, **d: Any) -> int:
        self._fault("pause", [node_id])
        return 1

    def partition(self, targets: list[str], kind: str = "partition", **d: Any) -> list[str]:
        return self._fault(kind, targets)

    def degrade(self, targets: list[str], kind: str = "loss", **d: Any) -> list[str]:
        return self._fault(kind, targets)

    def start_node(self, node_id: str) -> None:
        self.calls.append(("start_node", (node_id,)))
        self.broken.discard(node_id)

    def heal(self, node_ids: list[str] | None = None, heals: str = "", **d: Any) -> list[str]:
        targets = tuple(node_ids if node_ids is not None else self.ids)
        self.calls.append(("heal", targets))
        self.broken -= set(targets)
        return []


def run(fake: FakeSupervisor, seed: int, duration_s: float, settle_s: float = 0.2) -> NemesisRunner:
    r = NemesisRunner(cast(ClusterSupervisor, fake), seed, duration_s, timing=FAST,
                      settle_s=settle_s)
    r.start()
    r.join(10)
    assert r.done()
    return r


def test_every_fault_is_healed_and_the_run_ends_healthy() -> None:
    fake = FakeSupervisor(5)
    r = run(fake, seed=1, duration_s=1.5)
    scheduled = [a for a in r.schedule if not a.is_heal]
    assert len(scheduled) >= 5 and r.played == len(scheduled) and r.skipped == 0
    assert not r.active and not fake.broken
    assert r.healthy_at_end is True
    assert fake.worst <= 2  # minority of 5
    faults = [c for c in fake.calls if c[0] not in ("heal", "start_node")]
    assert any(c[0] == "start_node" for c in fake.calls) == any(
        c[0] in ("kill", "kill_leader") for c in faults)


def test_same_seed_same_faults() -> None:
    a, b = FakeSupervisor(3), FakeSupervisor(3)
    run(a, seed=9, duration_s=0.6)
    run(b, seed=9, duration_s=0.6)
    assert a.calls == b.calls


def test_no_fault_grows_the_faulty_set_past_a_minority() -> None:
    fake = FakeSupervisor(3, down={"n3"})  # minority of 3 is 1, and n3 is already down
    r = run(fake, seed=2, duration_s=1.0, settle_s=0.02)
    assert fake.worst <= 1
    assert all(set(targets) <= {"n3"} for what, targets in fake.calls if what != "heal")
    assert r.skipped >= 1 and r.played + r.skipped == sum(1 for a in r.schedule if not a.is_heal)
    assert r.healthy_at_end is False
    assert any("skipped" in e.text for e in fake.events.recent(50))


def test_stopping_early_heals_what_is_broken() -> None:
    fake = FakeSupervisor(3)
    slow = Timing(start_s=0.0, fault_s=(5.0, 5.0), quiet_s=(0.1, 0.1), tail_s=0.0)
    r = NemesisRunner(cast(ClusterSupervisor, fake), 3, 60.0, timing=slow, settle_s=0.2)
    r.start()
    assert _until(lambda: bool(fake.broken) or r.skipped > 0)
    r.stop()
    assert r.done() and not r.active and not fake.broken


def _until(cond: Any, timeout_s: float = 5.0) -> bool:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return False


class MembershipSupervisor(FakeSupervisor):
    """Adds n<K+1> and retires nodes like the real supervisor, instantly."""

    def __init__(self, n: int) -> None:
        super().__init__(n)
        self.next = n + 1
        self.retired: list[str] = []
        self.replacements: dict[str, str] = {}

    def add_node(self, **kw: Any) -> dict[str, Any]:
        nid = f"n{self.next}"
        self.next += 1
        self.ids.append(nid)
        self.calls.append(("add_node", (nid,)))
        return {"node": nid, "voters": list(self.ids)}

    def retire_node(self, node_id: str, **kw: Any) -> dict[str, Any]:
        self.ids.remove(node_id)
        self.retired.append(node_id)
        self.calls.append(("retire_node", (node_id,)))
        return {"node": node_id}

    def wipe(self, node_id: str, **kw: Any) -> int:
        """Like the real one: the node is killed and wiped, the supervisor replaces it."""
        self.calls.append(("wipe", (node_id,)))
        self.replacements[node_id] = self.add_node()["node"]
        self.retire_node(node_id)
        return 1

    def replacement_of(self, node_id: str) -> str | None:
        return self.replacements.get(node_id)


def test_replace_adds_first_then_retires_and_later_targets_follow() -> None:
    from launcher.nemesis import MEMBERSHIP_WEIGHTS

    fake = MembershipSupervisor(5)
    r = NemesisRunner(cast(ClusterSupervisor, fake), 8, 3.0, timing=FAST, settle_s=0.2,
                      weights=MEMBERSHIP_WEIGHTS)
    r.start()
    r.join(10)
    assert r.done() and r.healthy_at_end
    adds = [c for c in fake.calls if c[0] == "add_node"]
    assert adds and len(fake.retired) == len(adds) == len(r.added)
    assert r.membership_changes == 3 * len(adds)
    assert len(fake.ids) == 5  # every replace adds one and retires one
    for i, c in enumerate(fake.calls):  # each retire right after its add
        if c[0] == "retire_node":
            assert fake.calls[i - 1][0] == "add_node"
    # no fault ever named a node that had been retired before it
    gone: set[str] = set()
    for what, targets in fake.calls:
        if what == "retire_node":
            gone |= set(targets)
        elif what not in ("add_node", "heal"):
            assert not set(targets) & gone, (what, targets)
    assert fake.worst <= 2
    # wipes: the supervisor replaced each wiped node; the heal counted it like a replace
    wipes = [targets[0] for what, targets in fake.calls if what == "wipe"]
    assert wipes and all(fake.replacements[w] in r.added and w in r.retired for w in wipes)
