"""Human-readable reports of checker results.

For a violation the report shows, per failing key:

1. the longest linearizable prefix the search found (with the model state
   after each op), i.e. an order of ops that *is* consistent with the model
   and with real time;
2. the op that could not be placed after it - it returned before any
   ordering of the remaining candidates could accommodate it - and whether
   the model rejects it right away in the state after the prefix;
3. the ops concurrent with it (real-time overlap), with their position in
   the prefix if they were linearized, plus a small ASCII timeline.

``format_report`` returns the text; ``write_report`` writes it to a file.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .history import Op
from .linearizability import CheckResult, PartitionedResult
from .models import UNKNOWN, Call

__all__ = ["format_report", "write_report"]


def _state(result: CheckResult, state: Any) -> str:
    if result.model is not None:
        return result.model.describe_state(state)
    return repr(state)


def _timeline(ops: list[Op], width: int = 60) -> list[str]:
    """One line per op: ``|---|`` spanning its real-time interval."""
    if not ops:
        return []
    lo = min(op.call_s for op in ops)
    finite = [op.return_s for op in ops if math.isfinite(op.return_s)]
    hi = max([*finite, *(op.call_s for op in ops)])
    span = (hi - lo) or 1.0

    def col(t: float) -> int:
        return min(width - 1, max(0, round((t - lo) / span * (width - 1))))

    label_w = max(len(f"{op.client}#{op.op_id}") for op in ops)
    lines = []
    for op in ops:
        a = col(op.call_s)
        row = [" "] * (width + 1)
        if math.isfinite(op.return_s):
            b = col(op.return_s)
            for i in range(a, b + 1):
                row[i] = "-"
            row[a], row[b] = "|", "|"
        else:
            for i in range(a, width):
                row[i] = "-"
            row[a], row[width] = "|", ">"
        label = f"{op.client}#{op.op_id}"
        lines.append(f"    {label:<{label_w}} {''.join(row).rstrip()}  {op.kind}")
    return lines


def _format_check(result: CheckResult, max_prefix: int, max_ops: int) -> list[str]:
    ops = result.history
    model_name = result.model.name if result.model is not None else "?"
    key = "" if result.key is None else f" key {result.key!r}"
    unknown = sum(op.status == "unknown" for op in ops)
    out = [
        f"== {result.verdict.upper()}{key} (model {model_name})",
        f"   {len(ops)} ops ({unknown} with unknown outcome), "
        f"{result.steps} search steps, {result.elapsed_s:.3f} s",
    ]
    if result.reason:
        out.append(f"   {result.reason}")

    if result.verdict == "ok":
        used = len(result.linearization) - (len(ops) - unknown)
        out.append(
            f"   linearizable; {max(used, 0)} unknown ops assumed to have happened, "
            f"{len(result.omitted)} assumed not to"
        )
        return out

    lin = result.linearization
    title = "Longest linearizable prefix" if result.verdict == "illegal" else "Deepest prefix"
    out.append("")
    out.append(
        f"{title} ({len(lin)} of {len(ops)} ops), initial state "
        f"{_state(result, result.initial_state)}:"
    )
    first = max(0, len(lin) - max_prefix)
    if first:
        out.append(f"    ... {first} earlier ops omitted ...")
    for i in range(first, len(lin)):
        out.append(f"  {i + 1:4d}. {lin[i].describe()}")
        out.append(f"        => {_state(result, result.states[i])}")
    out.append(f"State after the prefix: {_state(result, result.final_state)}")

    failed = result.failed_op
    if failed is None:
        return out
    out.append("")
    if result.verdict == "illegal":
        out.append("Op that could not be placed:")
    else:
        out.append("Op that blocked the deepest prefix (search not finished):")
    out.append(f"        {failed.describe()}")
    if result.model is not None:
        output = UNKNOWN if failed.status == "unknown" else failed.output
        legal, _ = result.model.step(result.final_state, Call(failed.kind, failed.input), output)
        if legal:
            out.append(
                "    (legal in the state after the prefix, but every way of ordering it with"
            )
            out.append("     the other pending ops leads to a dead end)")
        else:
            out.append("    (illegal in the state after the prefix)")

    position = {id(op): i for i, op in enumerate(lin)}
    concurrent = [op for op in ops if op is not failed and op.overlaps(failed)]
    out.append("")
    out.append(f"Ops concurrent with it ({len(concurrent)}):")
    if not concurrent:
        out.append("      (none)")
    for op in concurrent[:max_ops]:
        where = f"linearized at #{position[id(op)] + 1}" if id(op) in position else "not linearized"
        out.append(f"      {op.describe()}   ({where})")
    if len(concurrent) > max_ops:
        out.append(f"      ... {len(concurrent) - max_ops} more")
    seen = {id(op) for op in concurrent}
    pending = [op for op in result.pending if id(op) not in seen]
    if pending:
        out.append("Other candidates at that point:")
        for op in pending[:max_ops]:
            out.append(f"      {op.describe()}")

    # Timeline: the failing op, what overlaps it, and the last few prefix ops.
    shown_ids = {id(failed)} | {id(op) for op in concurrent[: max_ops - 1]}
    shown = [failed, *concurrent[: max_ops - 1]]
    for op in lin[-3:]:
        if id(op) not in shown_ids:
            shown.append(op)
    shown.sort(key=lambda o: (o.call_s, o.op_id))
    out.append("")
    out.append("Timeline (failing op, ops concurrent with it, last ops of the prefix):")
    out.extend(_timeline(shown))
    return out


def format_report(
    result: CheckResult | PartitionedResult, *, max_prefix: int = 30, max_ops: int = 30
) -> str:
    """Render ``result`` as text (at most ``max_prefix`` prefix ops and
    ``max_ops`` concurrent ops are listed per key)."""
    if isinstance(result, CheckResult):
        return "\n".join(_format_check(result, max_prefix, max_ops)) + "\n"

    out = [
        f"Linearizability check: {result.verdict.upper()} "
        f"({len(result.results)} keys, {result.elapsed_s:.3f} s)",
        "",
        f"  {'key':<20} {'verdict':<8} {'ops':>6} {'steps':>9} {'time s':>8}",
    ]
    for k, r in result.results.items():
        out.append(
            f"  {k!r:<20} {r.verdict:<8} {len(r.history):>6} {r.steps:>9} {r.elapsed_s:>8.3f}"
        )
    for r in [*result.failures, *result.undecided]:
        out.append("")
        out.extend(_format_check(r, max_prefix, max_ops))
    return "\n".join(out) + "\n"


def write_report(
    result: CheckResult | PartitionedResult,
    path: str | Path,
    *,
    max_prefix: int = 30,
    max_ops: int = 30,
) -> Path:
    """Write :func:`format_report` output to ``path`` (parents created)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(format_report(result, max_prefix=max_prefix, max_ops=max_ops), encoding="utf-8")
    return p
