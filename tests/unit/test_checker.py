"""Hand-made histories for tools.checker (linearizability + log checks)."""

from __future__ import annotations

import io
import itertools
import math
import random
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tools.checker import (
    INF,
    UNKNOWN,
    AbsoluteLogModel,
    Call,
    CheckResult,
    LogModel,
    Model,
    Op,
    Recorder,
    RegisterModel,
    Status,
    check,
    check_log,
    check_partitioned,
    format_report,
    load_history,
    prepare_history,
    save_history,
    write_report,
)
from tools.checker.__main__ import main as cli_main
from tools.checker.history import dump_history, parse_history

_ids = itertools.count()


def op(
    client: str,
    kind: str,
    inp: Any,
    out: Any,
    call: float,
    ret: float,
    status: Status = "ok",
    key: str = "k",
) -> Op:
    return Op(client, next(_ids), kind, key, inp, out, call, ret, status)


def put(c: str, v: Any, call: float, ret: float, status: Status = "ok", key: str = "k") -> Op:
    return op(c, "put", v, "ok", call, ret, status, key)


def get(c: str, v: Any, call: float, ret: float, status: Status = "ok", key: str = "k") -> Op:
    return op(c, "get", None, v, call, ret, status, key)


def cas(c: str, e: Any, n: Any, res: bool, call: float, ret: float, status: Status = "ok") -> Op:
    return op(c, "cas", [e, n], res, call, ret, status)


def submit(
    c: str, payload: Any, index: int | None, call: float, ret: float, status: Status = "ok"
) -> Op:
    return op(c, "submit", payload, index, call, ret, status, key="")


# --------------------------------------------------------------------------- register


def test_empty_history_is_ok() -> None:
    assert check([], RegisterModel()).verdict == "ok"


def test_sequential_legal() -> None:
    h = [
        get("a", None, 0, 1),
        put("a", 1, 2, 3),
        get("b", 1, 4, 5),
        put("b", 2, 6, 7),
        get("a", 2, 8, 9),
    ]
    r = check(h, RegisterModel())
    assert r.verdict == "ok"
    assert r.linearization == h
    assert r.states == [None, 1, 1, 2, 2]
    assert r.failed_op is None


def test_concurrent_legal_needs_reordering() -> None:
    # b's put is called after a's, but the reads force put(2) before put(1).
    p1 = put("a", 1, 0, 10)
    p2 = put("b", 2, 1, 11)
    g2 = get("c", 2, 2, 3)
    g1 = get("c", 1, 12, 13)
    r = check([p1, p2, g2, g1], RegisterModel())
    assert r.verdict == "ok"
    assert r.linearization == [p2, g2, p1, g1]


def test_ops_touching_at_an_instant_are_concurrent() -> None:
    # get's call == put's return: both orders are allowed.
    assert check([put("a", 1, 0, 5), get("b", None, 5, 6)], RegisterModel()).ok


def test_stale_read_is_illegal() -> None:
    p1 = put("a", 1, 0, 1)
    p2 = put("a", 2, 2, 3)
    stale = get("b", 1, 4, 5)  # put(2) completed before this get started
    r = check([p1, p2, stale], RegisterModel())
    assert r.verdict == "illegal"
    assert r.failed_op == stale
    assert r.linearization == [p1, p2]
    assert r.final_state == 2


def test_lost_write_is_illegal() -> None:
    h = [
        put("a", "x", 0, 1),
        get("b", "x", 2, 3),
        put("a", "y", 4, 5),  # acked ...
        get("c", "y", 5.5, 6),
        get("b", "x", 10, 11),  # ... and later lost: an older value comes back
    ]
    r = check(h, RegisterModel())
    assert r.verdict == "illegal"
    assert r.failed_op == h[-1]
    assert len(r.linearization) == 4


def test_concurrent_reads_disagreeing_with_real_time_is_illegal() -> None:
    # Two reads both concurrent with the put, but the one seeing the new
    # value finished before the one seeing the old value started.
    h = [put("a", 1, 0, 10), get("b", 1, 1, 2), get("c", None, 3, 4)]
    r = check(h, RegisterModel())
    assert r.verdict == "illegal"
    assert r.failed_op == h[2]
    assert h[0] in r.pending or h[0] in r.linearization


def test_failed_ops_are_dropped() -> None:
    h = [put("a", 1, 0, 1, status="failed"), get("b", None, 2, 3)]
    assert check(h, RegisterModel()).ok
    assert prepare_history(h) == [h[1]]


def test_unknown_op_that_must_have_happened() -> None:
    # The only write of 7 timed out, yet a later read sees it.
    h = [put("a", 7, 0, INF, status="unknown"), get("b", 7, 50, 51)]
    r = check(h, RegisterModel())
    assert r.verdict == "ok"
    assert r.linearization == prepare_history(h)
    assert r.omitted == []


def test_unknown_op_that_never_happened() -> None:
    h = [put("a", 7, 0, 1, status="unknown"), get("b", None, 5, 6), get("b", None, 100, 101)]
    r = check(h, RegisterModel())
    assert r.verdict == "ok"
    # Either omitted, or (equivalently) taking effect after the last read.
    assert [o.kind for o in r.omitted] == ["put"] or r.linearization[-1].kind == "put"


def test_unknown_op_may_take_effect_much_later() -> None:
    # Timed out at t=1, but applied between the two reads (e.g. a retry in a queue).
    h = [put("a", 7, 0, 1, status="unknown"), get("b", None, 5, 6), get("b", 7, 100, 101)]
    assert check(h, RegisterModel()).ok


def test_unknown_op_cannot_take_effect_before_its_call() -> None:
    h = [get("b", 7, 0, 1), put("a", 7, 5, INF, status="unknown")]
    assert check(h, RegisterModel()).verdict == "illegal"


def test_unknown_op_cannot_happen_twice() -> None:
    h = [
        put("a", 7, 0, INF, status="unknown"),
        get("b", 7, 5, 6),
        put("c", 8, 7, 8),
        get("b", 7, 9, 10),
    ]
    assert check(h, RegisterModel()).verdict == "illegal"


def test_cas_legal() -> None:
    h = [
        put("a", 0, 0, 1),
        cas("a", 0, 1, True, 2, 6),
        cas("b", 0, 2, False, 3, 5),  # concurrent: may be linearized after a's cas
        get("c", 1, 7, 8),
        cas("c", 1, 5, True, 9, 10),
        get("a", 5, 11, 12),
    ]
    assert check(h, RegisterModel()).ok


def test_cas_illegal_two_winners() -> None:
    h = [
        put("a", 0, 0, 1),
        cas("a", 0, 1, True, 2, 5),
        cas("b", 0, 2, True, 2, 5),  # both cannot succeed from 0
    ]
    r = check(h, RegisterModel())
    assert r.verdict == "illegal"


def test_cas_illegal_wrong_failure() -> None:
    h = [put("a", 0, 0, 1), cas("b", 0, 2, False, 2, 3)]
    assert check(h, RegisterModel()).verdict == "illegal"


def test_cas_unknown_outcome_and_dict_input() -> None:
    h = [
        put("a", 0, 0, 1),
        op("b", "cas", {"expected": 0, "new": 3}, None, 2, 3, status="unknown"),
        get("c", 3, 10, 11),
    ]
    assert check(h, RegisterModel()).ok


def test_register_values_are_compared_structurally() -> None:
    h = [put("a", [1, {"x": 2}], 0, 1), get("b", [1, {"x": 2}], 2, 3)]
    assert check(h, RegisterModel()).ok


def test_unsupported_kind_raises() -> None:
    with pytest.raises(ValueError, match="does not support"):
        check([op("a", "append", 1, None, 0, 1)], RegisterModel())


def test_bad_times_raise() -> None:
    with pytest.raises(ValueError):
        check([put("a", 1, 5, 1)], RegisterModel())


class CounterModel(Model[int]):
    """A custom model: ``incr() -> new value``; ``halt`` is never legal."""

    name = "counter"

    def init(self) -> int:
        return 0

    def step(self, state: int, input: Call, output: Any) -> tuple[bool, int]:
        if input.kind == "incr":
            return (output is UNKNOWN or output == state + 1), state + 1
        if input.kind == "halt":
            return False, state
        raise ValueError(input.kind)


def test_custom_model_and_optional_op_that_can_never_happen() -> None:
    h = [
        op("a", "incr", None, 1, 0, 1, key=""),
        op("b", "halt", None, None, 2, INF, status="unknown"),
        op("a", "incr", None, 2, 3, 4, key=""),
        op("c", "incr", None, None, 5, INF, status="unknown"),
    ]
    r = check(h, CounterModel())
    assert r.verdict == "ok"
    assert "halt" in [o.kind for o in r.omitted]
    h[1] = replace(h[1], status="ok", return_s=3)
    assert check(h, CounterModel()).verdict == "illegal"


def test_concurrent_counter_needs_search() -> None:
    # Five concurrent increments returning 1..5 in scrambled call order.
    h = [op(f"c{v}", "incr", None, v, i * 0.1, 10, key="") for i, v in enumerate([3, 5, 1, 4, 2])]
    r = check(h, CounterModel())
    assert r.ok and [o.output for o in r.linearization] == [1, 2, 3, 4, 5]
    h.append(op("x", "incr", None, 3, 11, 12, key=""))  # 3 again, after all returned
    assert check(h, CounterModel()).verdict == "illegal"


# --------------------------------------------------------------------------- partitioning


def test_partitioned_checks_keys_independently() -> None:
    h = [
        put("a", 1, 0, 1, key="x"),
        put("a", 1, 0, 1, key="y"),
        get("b", 1, 2, 3, key="x"),
        get("b", None, 2, 3, key="y"),  # stale on y
        get("c", 1, 4, 5, key="z"),  # z was never written
    ]
    r = check_partitioned(h, RegisterModel())
    assert r.verdict == "illegal"
    assert {k: v.verdict for k, v in r.results.items()} == {
        "x": "ok",
        "y": "illegal",
        "z": "illegal",
    }
    assert [f.key for f in r.failures] == ["y", "z"]
    # Without partitioning, the keys would be mixed into one register.
    r2 = check_partitioned(h, lambda key: RegisterModel(initial=1 if key == "z" else None))
    assert {k for k, v in r2.results.items() if v.verdict == "illegal"} == {"y"}


def test_partitioned_stop_on_failure() -> None:
    h = [get("a", 1, 0, 1, key="a"), get("a", None, 0, 1, key="b")]
    r = check_partitioned(h, RegisterModel(), stop_on_failure=True)
    assert r.results["a"].verdict == "illegal"
    assert r.results["b"].verdict == "unknown"


# --------------------------------------------------------------------------- log


def test_log_relative_sequential_and_reads() -> None:
    h = [
        submit("a", "p1", 1, 0, 1),
        submit("b", "p2", 2, 2, 3),
        op("c", "read", None, ["p1", "p2"], 4, 5, key=""),
    ]
    assert check(h, LogModel()).ok


def test_log_relative_concurrent_submits() -> None:
    h = [
        submit("a", "p1", 2, 0, 5),
        submit("b", "p2", 1, 1, 4),
        op("c", "read", None, ["p2", "p1"], 6, 7, key=""),
    ]
    assert check(h, LogModel()).ok


def test_log_read_inconsistent_with_indices_is_illegal() -> None:
    h = [
        submit("a", "p1", 2, 0, 5),
        submit("b", "p2", 1, 1, 4),
        op("c", "read", None, ["p1", "p2"], 6, 7, key=""),
    ]
    assert check(h, LogModel()).verdict == "illegal"


def test_reordered_submits_are_illegal() -> None:
    a = submit("a", "A", 5, 0, 1)
    b = submit("b", "B", 3, 2, 3)  # called after A returned index 5
    r = check([a, b], AbsoluteLogModel())
    assert r.verdict == "illegal"
    assert r.failed_op == b
    assert r.final_state == 5
    # Same with relative numbering.
    a2 = submit("a", "A", 2, 0, 1)
    b2 = submit("b", "B", 1, 2, 3)
    assert check([a2, b2], LogModel()).verdict == "illegal"


def test_absolute_log_gaps_and_concurrency() -> None:
    h = [
        submit("a", "A", 3, 0, 1),  # indices 1, 2 were leader no-ops
        submit("b", "B", 9, 2, 10),
        submit("c", "C", 7, 3, 4),  # concurrent with B: may be ordered first
        submit("d", "D", 12, 11, 12),
    ]
    assert check(h, AbsoluteLogModel()).ok


def test_absolute_log_duplicate_index_is_illegal() -> None:
    h = [submit("a", "A", 4, 0, 5), submit("b", "B", 4, 1, 6)]
    assert check(h, AbsoluteLogModel()).verdict == "illegal"


def test_absolute_log_unknown_submit() -> None:
    h = [
        submit("a", "A", 1, 0, 1),
        submit("b", "B", None, 2, INF, status="unknown"),
        submit("c", "C", 2, 5, 6),  # B may be later, or never
    ]
    assert check(h, AbsoluteLogModel()).ok
    with pytest.raises(ValueError):
        check([op("a", "read", None, [], 0, 1, key="")], AbsoluteLogModel())


def test_log_unknown_submit_seen_by_read() -> None:
    h = [
        submit("a", "A", 1, 0, 1),
        submit("b", "B", None, 2, 3, status="unknown"),
        op("c", "read", None, ["A", "B"], 10, 11, key=""),
    ]
    assert check(h, LogModel()).ok


# --------------------------------------------------------------------------- check_log


def test_check_log_clean() -> None:
    acked = [("a", 1), ("b", 2), ("c", 4)]
    final = [(1, "a"), (2, "b"), (3, None), (4, "c"), (5, "unacked")]
    assert check_log(acked, final) == []


def test_check_log_duplicate_apply() -> None:
    acked = [("a", 1), ("b", 2)]
    final = [(1, "a"), (2, "b"), (3, "b")]  # retried submit applied twice
    problems = check_log(acked, final)
    assert len(problems) == 1
    assert "duplicate" in problems[0] and "'b'" in problems[0] and "[2, 3]" in problems[0]


def test_check_log_duplicate_of_unacked_payload() -> None:
    problems = check_log([], [(1, "x"), (2, "x")])
    assert problems and "duplicate" in problems[0]


def test_check_log_missing_and_mismatch() -> None:
    acked = [("a", 1), ("b", 2), ("c", 3)]
    final = [(1, "a"), (2, "c")]
    problems = check_log(acked, final)
    assert any(p.startswith("lost write") and "'b'" in p for p in problems)
    assert any(p.startswith("index mismatch") and "'c'" in p and "[2]" in p for p in problems)
    assert len(problems) == 2


def test_check_log_conflicts_and_double_ack() -> None:
    acked = [("a", 1), ("a", 2)]
    final = [(1, "a"), (1, "z")]
    problems = check_log(acked, final)
    assert any("index conflict" in p for p in problems)
    assert any("acknowledged with 2 different indices" in p for p in problems)
    assert any(p.startswith("index mismatch") and "index 2" in p for p in problems)


# --------------------------------------------------------------------------- history I/O


def test_jsonl_round_trip(tmp_path: Path) -> None:
    h = [
        put("a", [1, 2], 0.5, 1.25),
        put("b", 3, 1.0, INF, status="unknown"),
        get("c", None, 2, 3, status="failed"),
        submit("d", {"x": 1}, 4, 3, 4),
    ]
    path = save_history(h, tmp_path / "h.jsonl")
    text = path.read_text()
    assert "Infinity" not in text and '"return_s": null' in text
    back = load_history(path)
    assert back == h
    assert math.isinf(back[1].return_s)
    buf = io.StringIO()
    dump_history(h, buf)
    assert list(parse_history(io.StringIO("# comment\n\n" + buf.getvalue()))) == h


def test_jsonl_errors_have_line_numbers() -> None:
    with pytest.raises(ValueError, match="line 2"):
        list(parse_history(['{"client":"a","op_id":1,"kind":"get","call_s":0}', "{bad"]))
    with pytest.raises(ValueError, match="bad status"):
        list(parse_history(['{"client":"a","op_id":1,"kind":"get","call_s":0,"status":"x"}']))


def test_recorder() -> None:
    clock = iter(range(100))
    rec = Recorder(clock=lambda: float(next(clock)))
    a = rec.invoke("c1", "put", "k", 1)
    b = rec.invoke("c2", "get", "k")
    rec.ok(a, "ok")
    rec.ok(b, 1)
    c = rec.invoke("c1", "put", "k", 2)
    rec.timeout(c)
    d = rec.invoke("c1", "put", "k", 3)
    rec.fail(d)
    rec.invoke("c2", "get", "k")  # still open
    h = rec.history()
    assert [o.status for o in h] == ["ok", "ok", "unknown", "failed", "unknown"]
    assert h[0].call_s == 0 and h[0].return_s == 2
    assert check(h, RegisterModel()).ok


# --------------------------------------------------------------------------- report


def test_report_of_violation(tmp_path: Path) -> None:
    p1 = put("a", 1, 0, 1)
    p2 = put("a", 2, 2, 3)
    concurrent = put("c", 3, 3.5, 6)
    stale = get("b", 1, 4, 5)
    r = check([p1, p2, concurrent, stale], RegisterModel())
    assert r.verdict == "illegal"
    text = format_report(r)
    assert "ILLEGAL" in text
    assert "Longest linearizable prefix" in text
    assert "Op that could not be placed" in text and stale.describe() in text
    assert "illegal in the state after the prefix" in text
    assert "Ops concurrent with it (1)" in text and concurrent.describe() in text
    assert "Timeline" in text
    out = write_report(r, tmp_path / "sub" / "report.txt")
    assert out.read_text() == text


def test_report_partitioned_and_ok(tmp_path: Path) -> None:
    h = [put("a", 1, 0, 1, key="x"), get("b", 2, 2, 3, key="y")]
    r = check_partitioned(h, RegisterModel())
    text = format_report(r)
    assert "ILLEGAL" in text and "'x'" in text and "== ILLEGAL key 'y'" in text
    ok = format_report(check([put("a", 1, 0, 1)], RegisterModel()))
    assert ok.startswith("== OK")


def test_report_truncates_long_prefix() -> None:
    h = [put("a", i, 2 * i, 2 * i + 1) for i in range(100)] + [get("b", 3, 500, 501)]
    r = check(h, RegisterModel())
    text = format_report(r, max_prefix=5)
    assert "95 earlier ops omitted" in text


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = save_history([put("a", 1, 0, 1), get("b", None, 2, 3)], tmp_path / "h.jsonl")
    assert cli_main([str(path), "--report", str(tmp_path / "r.txt")]) == 1
    assert "ILLEGAL" in capsys.readouterr().out
    assert (tmp_path / "r.txt").exists()
    path2 = save_history([submit("a", "x", 1, 0, 1)], tmp_path / "g.jsonl")
    assert cli_main([str(path2), "--model", "log"]) == 0


# --------------------------------------------------------------------------- limits


def _adversarial(n: int) -> list[Op]:
    """n fully concurrent puts of distinct values, then a read of a value
    nobody wrote: illegal, but proving it means visiting ~2^n * n states."""
    h = [put(f"c{i}", i, 0, 10 + i * 0.001) for i in range(n)]
    h.append(get("r", -1, 20, 21))
    return h


def test_timeout_returns_unknown() -> None:
    r = check(_adversarial(40), RegisterModel(), timeout_s=0.05)
    assert r.verdict == "unknown"
    assert "timeout" in r.reason
    assert r.elapsed_s < 2
    assert "Deepest prefix" in format_report(r)
    # The budget of check_partitioned is global.
    rp = check_partitioned(_adversarial(40), RegisterModel(), timeout_s=0.05)
    assert rp.verdict == "unknown" and rp.undecided


def test_small_adversarial_is_decided() -> None:
    r = check(_adversarial(8), RegisterModel())
    assert r.verdict == "illegal"
    assert len(r.linearization) == 8


def simulate_kv(
    n_ops: int,
    n_keys: int,
    n_clients: int,
    seed: int,
    p_unknown: float = 0.01,
    p_failed: float = 0.01,
) -> list[Op]:
    """A linearizable concurrent KV history: each client runs ops back to
    back; each op takes effect at a random instant inside its interval."""
    rng = random.Random(seed)
    model = RegisterModel()
    planned: list[tuple[float, Op, bool]] = []  # (effect time, op without output, applied)
    clocks = [rng.random() for _ in range(n_clients)]
    for i in range(n_ops):
        c = i % n_clients
        call = clocks[c] + rng.random() * 0.2
        ret = call + 0.1 + rng.random() * 2.0
        clocks[c] = ret
        key = f"k{rng.randrange(n_keys)}"
        r = rng.random()
        inp: Any
        if r < 0.4:
            kind, inp = "get", None
        elif r < 0.8:
            kind, inp = "put", i
        else:
            kind, inp = "cas", [rng.randrange(i + 1), i]
        r = rng.random()
        status: Status = (
            "unknown" if r < p_unknown else "failed" if r < p_unknown + p_failed else "ok"
        )
        applied = status == "ok" or (status == "unknown" and rng.random() < 0.5)
        effect = rng.uniform(call, ret) if status != "unknown" else call + rng.random() * 20
        o = Op(f"c{c}", i, kind, key, inp, None, call, INF if status == "unknown" else ret, status)
        planned.append((effect, o, applied))

    states: dict[str, Any] = {}
    history: list[Op] = []
    for _, o, applied in sorted(planned, key=lambda t: t[0]):
        out: Any = None
        if applied:
            st = states.get(o.key, model.init())
            if o.kind == "get":
                out = st
            elif o.kind == "put":
                out = "ok"
            else:
                out = st == o.input[0]
            _, states[o.key] = model.step(st, Call(o.kind, o.input), UNKNOWN)
        history.append(replace(o, output=out if o.status == "ok" else None))
    history.sort(key=lambda o: o.call_s)
    return history


def test_performance_2000_ops_5_keys_10_clients() -> None:
    h = simulate_kv(2000, 5, 10, seed=1)
    assert sum(o.status == "unknown" for o in h) > 5
    t0 = time.monotonic()
    r = check_partitioned(h, RegisterModel(), timeout_s=30)
    elapsed = time.monotonic() - t0
    assert r.verdict == "ok", format_report(r)
    assert len(r.results) == 5
    assert elapsed < 5, f"took {elapsed:.2f}s"


@pytest.mark.parametrize("seed", range(5))
def test_simulated_histories_legal_and_corruption_detected(seed: int) -> None:
    h = simulate_kv(300, 3, 6, seed=seed, p_unknown=0.03, p_failed=0.03)
    assert check_partitioned(h, RegisterModel()).ok
    # Corrupt one read to return a value that was never written.
    rng = random.Random(seed)
    reads = [i for i, o in enumerate(h) if o.kind == "get" and o.status == "ok"]
    i = rng.choice(reads)
    bad = list(h)
    bad[i] = replace(bad[i], output=-42)
    r = check_partitioned(bad, RegisterModel())
    assert r.verdict == "illegal"
    assert r.failures[0].failed_op is not None


def test_performance_log_1000_submits() -> None:
    rng = random.Random(7)
    clocks = [0.0] * 10
    planned = []
    for i in range(1000):
        c = i % 10
        call = clocks[c] + rng.random() * 0.1
        ret = call + 0.1 + rng.random()
        clocks[c] = ret
        planned.append((rng.uniform(call, ret), c, i, call, ret))
    h = []
    index = 0
    for _, c, i, call, ret in sorted(planned):
        index += 1 + (rng.random() < 0.1)  # occasional no-op gap
        h.append(Op(f"c{c}", i, "submit", "", f"p{i}", index, call, ret))
    t0 = time.monotonic()
    r = check(h, AbsoluteLogModel())
    assert r.verdict == "ok"
    assert time.monotonic() - t0 < 5
    acked = [(o.input, o.output) for o in h]
    assert check_log(acked, [(o.output, o.input) for o in h]) == []


def test_check_result_defaults() -> None:
    r = CheckResult("ok")
    assert r.ok and r.final_state is None
