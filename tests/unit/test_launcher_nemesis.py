"""The nemesis schedule is pure, seeded, minority-bounded, quiet between faults, all healed."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from launcher.nemesis import (
    DEFAULT_WEIGHTS,
    HEAL,
    KINDS,
    FaultAction,
    Timing,
    describe,
    generate_schedule,
    max_faulty,
    minority,
)

EPS = 2e-3  # times are rounded to the millisecond


def ids_of(n: int) -> list[str]:
    return [f"n{i}" for i in range(1, n + 1)]


def schedule(seed: int, n: int, duration_s: float, **kw: object) -> list[FaultAction]:
    return generate_schedule(random.Random(seed), ids_of(n), duration_s, **kw)  # type: ignore[arg-type]


def faulty_at_starts(actions: list[FaultAction]) -> list[int]:
    """Independent of max_faulty: at each fault's start, sum the faults whose [start, heal)
    interval covers that instant."""
    heal_at = {a.fault_id: a.at_s for a in actions if a.is_heal}
    faults = [a for a in actions if not a.is_heal]
    out = []
    for f in faults:
        out.append(sum(len(g.targets) or 1 for g in faults
                       if g.at_s <= f.at_s < heal_at[g.fault_id]))
    return out


nodes_st = st.integers(min_value=3, max_value=7)
seeds_st = st.integers(min_value=0, max_value=2**32 - 1)
duration_st = st.floats(min_value=0.0, max_value=600.0, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(seed=seeds_st, n=nodes_st, duration_s=duration_st)
def test_same_seed_same_schedule(seed: int, n: int, duration_s: float) -> None:
    assert schedule(seed, n, duration_s) == schedule(seed, n, duration_s)


@settings(max_examples=400, deadline=None)
@given(seed=seeds_st, n=nodes_st, duration_s=duration_st)
def test_never_more_than_a_minority_faulty(seed: int, n: int, duration_s: float) -> None:
    actions = schedule(seed, n, duration_s)
    bound = (n - 1) // 2
    assert max_faulty(actions) <= bound
    assert all(c <= bound for c in faulty_at_starts(actions))
    for a in actions:
        assert len(set(a.targets)) == len(a.targets)
        assert set(a.targets) <= set(ids_of(n))
        assert a.faulty_count() <= bound


@settings(max_examples=300, deadline=None)
@given(seed=seeds_st, n=nodes_st, duration_s=duration_st)
def test_every_fault_healed_in_order_with_quiet_between(
    seed: int, n: int, duration_s: float
) -> None:
    timing = Timing()
    actions = schedule(seed, n, duration_s)
    assert [a.at_s for a in actions] == sorted(a.at_s for a in actions)
    # strictly alternating fault, its heal, fault, its heal, ...
    assert [a.is_heal for a in actions] == [False, True] * (len(actions) // 2)
    for fault, heal in zip(actions[::2], actions[1::2]):
        assert heal.kind == HEAL and heal.fault_id == fault.fault_id
        assert heal.heals == fault.kind and heal.targets == fault.targets
        assert fault.kind in KINDS
        lo, hi = timing.fault_s
        assert lo - EPS <= heal.at_s - fault.at_s <= hi + EPS
    for heal, nxt in zip(actions[1::2], actions[2::2]):
        assert nxt.at_s - heal.at_s >= timing.quiet_s[0] - EPS
    if actions:
        assert actions[0].at_s >= timing.start_s - EPS
        assert actions[-1].at_s <= duration_s - timing.tail_s + EPS
    assert len({a.fault_id for a in actions}) == len(actions) // 2


@pytest.mark.parametrize("n", [0, 1, 2])
def test_no_minority_no_faults(n: int) -> None:
    assert schedule(1, n, 100.0) == []


def test_different_seeds_give_different_schedules() -> None:
    runs = {tuple(schedule(seed, 5, 120.0)) for seed in range(20)}
    assert len(runs) == 20


def test_a_long_schedule_uses_every_kind_and_multi_node_faults_for_five() -> None:
    actions = schedule(7, 5, 3000.0)
    kinds = {a.kind for a in actions if not a.is_heal}
    assert kinds == set(KINDS) - {"replace", "wipe"}  # membership changes only when asked
    assert any(len(a.targets) == 2 for a in actions)  # minority of 5 is 2
    assert max_faulty(actions) == 2


def test_kill_leader_names_no_node_but_counts_as_one() -> None:
    actions = schedule(3, 3, 3000.0, weights={"kill_leader": 1.0})
    assert actions and all(a.targets == () for a in actions)
    assert max_faulty(actions) == 1
    assert "(leader)" in describe(actions[0])


def test_weights_choose_the_kinds() -> None:
    actions = schedule(4, 7, 500.0, weights={"loss": 1.0, "delay": 1.0})
    assert {a.kind for a in actions if not a.is_heal} == {"loss", "delay"}
    for a in actions:
        if a.kind == "loss":
            assert 10.0 <= a.param("drop_pct") <= 60.0
        if a.kind == "delay":
            assert a.param("delay_ms") >= 20.0 and a.param("jitter_ms") > 0
    with pytest.raises(ValueError, match="unknown fault kinds"):
        schedule(1, 3, 10.0, weights={"meteor": 1.0})


def test_chunks_continue_ids_and_times() -> None:
    rng = random.Random(11)
    first = generate_schedule(rng, ids_of(5), 60.0)
    second = generate_schedule(rng, ids_of(5), 60.0, offset_s=60.0,
                               first_fault_id=len(first) // 2 + 1)
    assert all(60.0 <= a.at_s <= 120.0 for a in second)
    ids = [a.fault_id for a in first + second if not a.is_heal]
    assert ids == list(range(1, len(ids) + 1))


def test_timing_is_validated_and_json_is_flat() -> None:
    with pytest.raises(ValueError):
        Timing(fault_s=(2.0, 1.0))
    with pytest.raises(ValueError):
        Timing(start_s=-1.0)
    a = FaultAction(1.5, "delay", 3, ("n2",), params=(("delay_ms", 50.0),))
    assert a.to_json() == {"at_s": 1.5, "kind": "delay", "fault_id": 3, "targets": ["n2"],
                           "delay_ms": 50.0}
    assert minority(3) == 1 and minority(4) == 1 and minority(5) == 2 and minority(7) == 3
    assert set(DEFAULT_WEIGHTS) == set(KINDS)


def test_the_module_is_pure() -> None:
    import ast
    from pathlib import Path

    import launcher.nemesis as mod

    tree = ast.parse(Path(mod.__file__).read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
                for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree)
                 if isinstance(n, ast.ImportFrom) and n.module}
    assert not imported & {"os", "time", "socket", "subprocess", "threading", "asyncio"}
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
             and isinstance(n.func, ast.Attribute) and isinstance(n.func.value, ast.Name)
             and n.func.value.id == "random"]
    assert not calls, "the nemesis must use the injected random.Random, never the module's"


def test_membership_weights_add_replaces_and_keep_the_rest_of_the_mix() -> None:
    from launcher.nemesis import MEMBERSHIP_WEIGHTS

    actions = schedule(7, 5, 3000.0, weights=MEMBERSHIP_WEIGHTS)
    replaces = [a for a in actions if a.kind == "replace"]
    assert replaces and all(a.targets == () for a in replaces)
    assert {a.param("leader") for a in replaces} == {0.0, 1.0}  # sometimes the leader
    assert {a.kind for a in actions if not a.is_heal} == set(KINDS)
    assert "(old node)" in describe(replaces[0])
    wipes = [a for a in actions if a.kind == "wipe"]
    assert wipes and all(a.targets == () and a.faulty_count() == 1 for a in wipes)
    assert {a.param("leader") for a in wipes} == {0.0, 1.0}  # sometimes the leader
    assert {"(leader)" in describe(a) or "(a follower)" in describe(a) for a in wipes} == {True}
    # a zero weight draws nothing: the default schedules are what they were
    assert schedule(7, 5, 300.0) == schedule(
        7, 5, 300.0,
        weights={k: w for k, w in DEFAULT_WEIGHTS.items() if k not in ("replace", "wipe")})
