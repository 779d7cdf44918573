"""Property-based tests for tools.checker.

1. Histories produced by really running a sequential model, with timestamps
   that contain each op's linearization point, are always linearizable
   (also with unknown / failed ops mixed in and the list shuffled).
2. On small random histories (legal or not) the checker agrees with a
   brute-force search over all real-time-consistent orders.
"""

from __future__ import annotations

import functools
import io
import math
from dataclasses import replace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tools.checker import (
    INF,
    UNKNOWN,
    AbsoluteLogModel,
    Call,
    LogModel,
    Model,
    Op,
    RegisterModel,
    Status,
    check,
    check_log,
    check_partitioned,
    prepare_history,
)
from tools.checker.history import dump_history, parse_history

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# How an op of a generated execution ends: applied and acknowledged, applied
# but the client timed out, never applied but timed out, or rejected.
FATES = ["ok"] * 6 + ["unknown_applied", "unknown_lost", "failed"]


@st.composite
def timings(draw: st.DrawFn, n: int) -> list[tuple[float, float]]:
    """Intervals containing the linearization points 0, 10, 20, ...: each op
    may start up to 25 before and end up to 25 after its point, so up to ~5
    consecutive ops overlap; ties happen (integers)."""
    out = []
    for i in range(n):
        t = 10.0 * i
        before = draw(st.integers(0, 25))
        after = draw(st.integers(0, 25))
        out.append((t - before, t + after))
    return out


def _finish(draw: st.DrawFn, ops: list[tuple[str, Any, Any, str]], key: str = "k") -> list[Op]:
    """(kind, input, output, fate) -> shuffled Ops with timings."""
    times = draw(timings(len(ops)))
    history = []
    for i, ((kind, inp, out, fate), (call, ret)) in enumerate(zip(ops, times)):
        status: Status = "ok" if fate == "ok" else "failed" if fate == "failed" else "unknown"
        if status == "unknown":
            ret, out = INF, None
        history.append(Op(f"c{i % 4}", i, kind, key, inp, out, call, ret, status))
    return draw(st.permutations(history))


VALUES = st.integers(0, 3)


@st.composite
def register_histories(draw: st.DrawFn, key: str = "k") -> list[Op]:
    state: Any = None
    ops: list[tuple[str, Any, Any, str]] = []
    for _ in range(draw(st.integers(0, 30))):
        fate = draw(st.sampled_from(FATES))
        applied = fate in ("ok", "unknown_applied")
        kind = draw(st.sampled_from(["put", "get", "cas"]))
        if kind == "put":
            value = draw(VALUES)
            ops.append(("put", value, "ok", fate))
            if applied:
                state = value
        elif kind == "get":
            out = state if applied else draw(st.none() | VALUES)
            ops.append(("get", None, out, fate))
        else:
            expected, new = draw(st.none() | VALUES), draw(VALUES)
            success = state == expected
            out = success if applied else draw(st.booleans())
            ops.append(("cas", [expected, new], out, fate))
            if applied and success:
                state = new
    return _finish(draw, ops, key)


@st.composite
def log_histories(draw: st.DrawFn) -> list[Op]:
    log: list[str] = []
    ops: list[tuple[str, Any, Any, str]] = []
    for i in range(draw(st.integers(0, 30))):
        fate = draw(st.sampled_from(FATES))
        applied = fate in ("ok", "unknown_applied")
        if draw(st.integers(0, 3)) == 0:
            out = list(log) if applied else draw(st.lists(st.sampled_from(log or ["z"])))
            ops.append(("read", None, out, fate))
        else:
            payload = f"p{i}"
            if applied:
                log.append(payload)
                ops.append(("submit", payload, len(log), fate))
            else:
                ops.append(("submit", payload, draw(st.integers(1, 5)), fate))
    return _finish(draw, ops, key="")


@st.composite
def abslog_histories(draw: st.DrawFn) -> list[Op]:
    last = 0
    ops: list[tuple[str, Any, Any, str]] = []
    for i in range(draw(st.integers(0, 30))):
        fate = draw(st.sampled_from(FATES))
        if fate in ("ok", "unknown_applied"):
            last += 1 + draw(st.integers(0, 3))  # gaps: leader no-ops
            ops.append(("submit", f"p{i}", last, fate))
        else:
            ops.append(("submit", f"p{i}", draw(st.integers(1, 50)), fate))
    return _finish(draw, ops, key="")


# --------------------------------------------------------------------------- always legal


@SETTINGS
@given(register_histories())
def test_generated_register_histories_are_linearizable(history: list[Op]) -> None:
    r = check(history, RegisterModel(), timeout_s=20)
    assert r.verdict == "ok", r
    # The linearization covers every definite op and respects real time.
    definite = [op for op in prepare_history(history) if op.status == "ok"]
    assert all(any(op is x for x in r.linearization) for op in definite)
    for i, a in enumerate(r.linearization):
        for b in r.linearization[i + 1 :]:
            assert not b.return_s < a.call_s


@SETTINGS
@given(register_histories(key="a"), register_histories(key="b"))
def test_generated_partitioned_histories_are_linearizable(a: list[Op], b: list[Op]) -> None:
    r = check_partitioned(a + b, RegisterModel(), timeout_s=20)
    assert r.verdict == "ok"


@SETTINGS
@given(log_histories())
def test_generated_log_histories_are_linearizable(history: list[Op]) -> None:
    assert check(history, LogModel(), timeout_s=20).verdict == "ok"


@SETTINGS
@given(abslog_histories())
def test_generated_absolute_log_histories_are_linearizable(history: list[Op]) -> None:
    assert check(history, AbsoluteLogModel(), timeout_s=20).verdict == "ok"


@SETTINGS
@given(register_histories(), st.data())
def test_read_of_never_written_value_is_illegal(history: list[Op], data: st.DataObject) -> None:
    reads = [i for i, op in enumerate(history) if op.kind == "get" and op.status == "ok"]
    if not reads:
        return
    i = data.draw(st.sampled_from(reads))
    bad = list(history)
    bad[i] = replace(bad[i], output=99)
    assert check(bad, RegisterModel(), timeout_s=20).verdict == "illegal"


@SETTINGS
@given(abslog_histories(), st.data())
def test_check_log_on_generated_logs(history: list[Op], data: st.DataObject) -> None:
    acked = [(op.input, op.output) for op in history if op.status == "ok"]
    final = sorted((idx, payload) for payload, idx in acked)
    assert check_log(acked, final) == []
    if acked:
        payload, _ = data.draw(st.sampled_from(acked))
        dup = [*final, (10_000, payload)]
        assert any("duplicate" in p for p in check_log(acked, dup))
        lost = [(i, p) for i, p in final if p != payload]
        assert any("lost write" in p for p in check_log(acked, lost))


@SETTINGS
@given(register_histories() | log_histories())
def test_jsonl_round_trip(history: list[Op]) -> None:
    buf = io.StringIO()
    dump_history(history, buf)
    back = list(parse_history(io.StringIO(buf.getvalue())))
    assert back == history


# --------------------------------------------------------------------------- brute force


def brute_force(history: list[Op], model: Model[Any], abs_unknown: bool = False) -> bool:
    """Exhaustive search over real-time-consistent orders (and subsets of
    unknown ops).  With ``abs_unknown`` an unknown absolute-log submit may
    take *any* index above the last one (checking the model's shortcut)."""
    ops = prepare_history(history)
    n = len(ops)
    mandatory = frozenset(i for i, op in enumerate(ops) if op.status == "ok")
    top = max([o.output for o in ops if isinstance(o.output, int)] + [0]) + 2

    def successors(i: int, state: Any) -> list[Any]:
        op = ops[i]
        unknown = op.status == "unknown"
        if abs_unknown and unknown:
            return list(range(state + 1, top + 1))
        ok, new = model.step(state, Call(op.kind, op.input), UNKNOWN if unknown else op.output)
        return [new] if ok else []

    @functools.cache
    def search(done: frozenset[int], state: Any) -> bool:
        if mandatory <= done:
            return True
        for i in range(n):
            if i in done:
                continue
            if any(j not in done and ops[j].return_s < ops[i].call_s for j in range(n)):
                continue  # some pending op returned before this one was called
            if any(search(done | {i}, s) for s in successors(i, state)):
                return True
        return False

    return search(frozenset(), model.init())


STATUS_CHOICES: list[Status] = ["ok", "ok", "ok", "unknown", "failed"]


def _random_ops(draw: st.DrawFn, make: Any) -> list[Op]:
    n = draw(st.integers(0, 6))
    ops = []
    for i in range(n):
        kind, inp, out = make(draw)
        call = float(draw(st.integers(0, 8)))
        ret = call + draw(st.integers(0, 5))
        status = draw(st.sampled_from(STATUS_CHOICES))
        if status == "unknown":
            ret, out = INF, None
        ops.append(Op(f"c{i}", i, kind, "k", inp, out, call, ret, status))
    return ops


def _reg_op(draw: st.DrawFn) -> tuple[str, Any, Any]:
    kind = draw(st.sampled_from(["put", "get", "cas"]))
    if kind == "put":
        return "put", draw(st.integers(0, 2)), "ok"
    if kind == "get":
        return "get", None, draw(st.none() | st.integers(0, 2))
    return (
        "cas",
        [draw(st.none() | st.integers(0, 2)), draw(st.integers(0, 2))],
        draw(st.booleans()),
    )


def _log_op(draw: st.DrawFn) -> tuple[str, Any, Any]:
    if draw(st.booleans()):
        return "read", None, draw(st.lists(st.sampled_from(["a", "b"]), max_size=3))
    return "submit", draw(st.sampled_from(["a", "b", "c"])), draw(st.integers(1, 4))


def _abs_op(draw: st.DrawFn) -> tuple[str, Any, Any]:
    return "submit", "x", draw(st.integers(1, 6))


@st.composite
def small_register(draw: st.DrawFn) -> list[Op]:
    return _random_ops(draw, _reg_op)


@st.composite
def small_log(draw: st.DrawFn) -> list[Op]:
    return _random_ops(draw, _log_op)


@st.composite
def small_abslog(draw: st.DrawFn) -> list[Op]:
    return _random_ops(draw, _abs_op)


@settings(max_examples=400, deadline=None)
@given(small_register())
def test_register_checker_agrees_with_brute_force(history: list[Op]) -> None:
    r = check(history, RegisterModel())
    assert r.ok == brute_force(history, RegisterModel())
    if not r.ok:
        assert r.failed_op is not None


@settings(max_examples=300, deadline=None)
@given(small_log())
def test_log_checker_agrees_with_brute_force(history: list[Op]) -> None:
    assert check(history, LogModel()).ok == brute_force(history, LogModel())


@settings(max_examples=300, deadline=None)
@given(small_abslog())
def test_absolute_log_checker_agrees_with_brute_force(history: list[Op]) -> None:
    expected = brute_force(history, AbsoluteLogModel(), abs_unknown=True)
    assert check(history, AbsoluteLogModel()).ok == expected


def test_brute_force_sanity() -> None:
    stale = [
        Op("a", 0, "put", "k", 1, "ok", 0, 1),
        Op("b", 1, "get", "k", None, None, 2, 3),
    ]
    assert not brute_force(stale, RegisterModel())
    assert brute_force(stale[:1], RegisterModel())
    assert math.isinf(prepare_history([replace(stale[0], status="unknown")])[0].return_s)
