"""Linearizability checking (Wing & Gong, with Lowe's memoization, as in Porcupine).

Algorithm
---------
Every op of the (prepared) history contributes two *events*: a call at
``call_s`` and a return at ``return_s``.  The events are sorted by time (on a
tie calls come first, so ops that touch at an instant count as concurrent)
and threaded into a doubly-linked list; each call entry points at its
matching return entry.

A search node is (set of linearized ops, model state); the linearized ops'
entries are *lifted* out of the list.  The ops whose call entries come
before the first return entry of the list are exactly the ops that may be
linearized next (the "minimal" ops): any other op was called after some
pending op had already returned.  The search is a depth-first search:

* expand a node: collect the candidates; try them one by one, in call
  order (as Porcupine) or in the order the model hints
  (``Model.order_hint``); the first one whose ``model.step`` is legal and
  whose resulting (set, state) pair is new becomes the next node: push
  (op, old state, position among the candidates) on a stack and lift the
  op's two entries out of the list (O(1) thanks to the links);
* when no candidate works, the node is a dead end - the op of the first
  return entry had to take effect before it returned, and could not;
  backtrack: pop the last op, restore the state, *unlift* its entries (they
  go back exactly where they were, links undone in reverse order) and try
  the next candidate of that node.  An empty stack means no linearization
  exists: ``illegal``;
* when no definite op is left in the list the history is ``ok``.

Partial-order reduction: if a candidate is a pure query
(``Model.is_readonly``, e.g. a ``get``) and legal in the current state, it
can be linearized first without loss of generality (moving it to the front
of any valid continuation keeps that continuation valid), so it is the only
child explored.  This removes the factorial blow-up of concurrent reads.

Memoization (Lowe): two search nodes with the same set of linearized ops and
the same model state have identical futures, so a pair seen once is never
expanded again.  The set is a Python ``int`` bitset.

Ops with unknown outcome (client timeouts) have their return event at +inf,
so they can be linearized anywhere after their call.  They are also
*optional*: their returns sort after all others, so once the first return
entry left in the list is an unknown op's, every definite op has been
linearized and the remaining unknown ops are taken to have never happened -
the history is ``ok``.  Unknown pure queries constrain nothing and are
dropped up front.

P-compositionality: linearizability is local, so a history over independent
keys is linearizable iff each per-key sub-history is;
:func:`check_partitioned` checks keys one at a time, which turns one
exponential search into several much smaller ones.

The search is exponential in the worst case (e.g. one key written blindly
by ~30 concurrent clients, or many pending unknown writes); ``timeout_s``
bounds it and yields the verdict ``unknown``.  Keep per-key concurrency
modest and spread load over many keys, as Jepsen does.  For diagnostics the
checker remembers the deepest dead end it reached: the longest linearizable
prefix, the op whose return event stopped it there, and the ops that were
candidates at that point.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from .history import Op, partition_by_key, prepare_history
from .models import UNKNOWN, Call, Model

__all__ = [
    "CheckResult",
    "PartitionedResult",
    "Verdict",
    "check",
    "check_partitioned",
]

Verdict = Literal["ok", "illegal", "unknown"]

# How many search steps between two looks at the clock.
_CLOCK_EVERY = 256


@dataclass
class CheckResult:
    """Outcome of :func:`check` for one (sub-)history.

    ``linearization`` is the full linearization when ``verdict == "ok"``
    (unknown ops that were assumed never to happen are in ``omitted``) and
    otherwise the longest linearizable prefix found.  ``states[i]`` is the
    model state after ``linearization[i]``.  ``failed_op`` is the op that
    could not be placed after that prefix (it had to take effect before it
    returned, but no order of the candidates allowed it), and ``pending`` are
    the ops that were candidates at that point (concurrent with it).
    """

    verdict: Verdict
    key: str | None = None
    linearization: list[Op] = field(default_factory=list)
    states: list[Any] = field(default_factory=list)
    initial_state: Any = None
    failed_op: Op | None = None
    pending: list[Op] = field(default_factory=list)
    omitted: list[Op] = field(default_factory=list)
    history: list[Op] = field(default_factory=list, repr=False)
    model: Model[Any] | None = field(default=None, repr=False)
    elapsed_s: float = 0.0
    steps: int = 0
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.verdict == "ok"

    @property
    def final_state(self) -> Any:
        """Model state after ``linearization``."""
        return self.states[-1] if self.states else self.initial_state


@dataclass
class PartitionedResult:
    """Outcome of :func:`check_partitioned`: one :class:`CheckResult` per key.

    The verdict is ``illegal`` if any key is illegal, else ``unknown`` if any
    key timed out, else ``ok``.
    """

    verdict: Verdict
    results: dict[str, CheckResult]
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.verdict == "ok"

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results.values() if r.verdict == "illegal"]

    @property
    def undecided(self) -> list[CheckResult]:
        return [r for r in self.results.values() if r.verdict == "unknown"]


class _Entry:
    """A node of the doubly-linked event list.

    Call entries have ``match`` set to their return entry; return entries
    have ``match = None``.
    """

    __slots__ = (
        "call",
        "hint",
        "id",
        "match",
        "next",
        "optional",
        "output",
        "prev",
        "readonly",
    )

    def __init__(
        self,
        op_id: int,
        call: Call,
        output: Any,
        optional: bool,
        readonly: bool = False,
        hint: float = 0.0,
    ) -> None:
        self.id = op_id
        self.call = call
        self.output = output
        self.optional = optional
        self.readonly = readonly
        self.hint = hint
        self.match: _Entry | None = None
        self.prev: _Entry | None = None
        self.next: _Entry | None = None


_NO_CALL = Call("", None)  # placeholder input of return entries and the head


def _build_list(ops: list[Op], model: Model[Any]) -> _Entry:
    events: list[tuple[float, int, int, int]] = []
    for i, op in enumerate(ops):
        optional = int(op.status == "unknown")
        if optional and model.is_readonly(Call(op.kind, op.input), UNKNOWN):
            continue  # a query with an unknown result constrains nothing
        events.append((op.call_s, 0, 0, i))
        # Returns of optional ops go last among returns at the same instant;
        # the "first return is optional => success" rule relies on it.
        events.append((op.return_s, 1, optional, i))
    events.sort()

    calls: dict[int, _Entry] = {}
    head = _Entry(-1, _NO_CALL, None, False)
    prev = head
    for _, is_return, optional, i in events:
        op = ops[i]
        if is_return:
            entry = _Entry(i, _NO_CALL, None, bool(optional))
            calls[i].match = entry
        else:
            call = Call(op.kind, op.input)
            output = UNKNOWN if op.status == "unknown" else op.output
            readonly = model.is_readonly(call, output)
            hint = model.order_hint(call, output)
            entry = _Entry(i, call, output, op.status == "unknown", readonly, hint)
            calls[i] = entry
        entry.prev = prev
        prev.next = entry
        prev = entry
    return head


def _lift(entry: _Entry) -> None:
    # A call entry is always followed by at least its own return entry.
    assert entry.prev is not None and entry.next is not None and entry.match is not None
    entry.prev.next = entry.next
    entry.next.prev = entry.prev
    match = entry.match
    assert match.prev is not None
    match.prev.next = match.next
    if match.next is not None:
        match.next.prev = match.prev


def _unlift(entry: _Entry) -> None:
    match = entry.match
    assert match is not None and match.prev is not None
    match.prev.next = match
    if match.next is not None:
        match.next.prev = match
    assert entry.prev is not None and entry.next is not None
    entry.prev.next = entry
    entry.next.prev = entry


def _hint(entry: _Entry) -> float:
    return entry.hint


def check(
    history: Iterable[Op],
    model: Model[Any],
    timeout_s: float | None = None,
    *,
    key: str | None = None,
) -> CheckResult:
    """Check that ``history`` is linearizable with respect to ``model``.

    ``history`` may be raw (``failed`` ops are dropped, ``unknown`` ones
    normalised).  ``timeout_s`` (``None`` = no limit) bounds the search; when
    it runs out the verdict is ``unknown``.  All ops are checked against one
    model instance - split by key first (:func:`check_partitioned`) when the
    history covers several independent objects.
    """
    start = time.monotonic()
    deadline = None if timeout_s is None else start + timeout_s
    ops = prepare_history(history)
    head = _build_list(ops, model)
    step = model.step
    init = model.init()
    hinted = type(model).order_hint is not Model.order_hint

    state: Any = init
    linearized = 0
    cache: set[tuple[int, Any]] = set()
    # One frame per linearized op: (its call entry, state before it, the
    # candidate order of the node it was chosen at - None for a forced
    # read-only choice - and the index of the next candidate to try there).
    stack: list[tuple[_Entry, Any, list[_Entry] | None, int]] = []
    steps = 0

    best_depth = -1
    best_prefix: list[tuple[int, Any]] = []
    best_state: Any = init
    best_failed: int | None = None
    best_pending: list[int] = []

    def result(verdict: Verdict, reason: str = "") -> CheckResult:
        if verdict == "ok":
            prefix = [(frame[0].id, frame[1]) for frame in stack]
            final_state, failed, pending = state, None, []
        else:
            prefix, final_state, failed, pending = (
                best_prefix,
                best_state,
                best_failed,
                best_pending,
            )
        lin = [ops[i] for i, _ in prefix]
        states = [s for _, s in prefix[1:]]
        if prefix:
            states.append(final_state)
        omitted: list[Op] = []
        if verdict == "ok":
            done = {i for i, _ in prefix}
            omitted = [op for i, op in enumerate(ops) if i not in done]
        return CheckResult(
            verdict=verdict,
            key=key,
            linearization=lin,
            states=states,
            initial_state=init,
            failed_op=None if failed is None else ops[failed],
            pending=[ops[i] for i in pending],
            omitted=omitted,
            history=ops,
            model=model,
            elapsed_s=time.monotonic() - start,
            steps=steps,
            reason=reason,
        )

    order: list[_Entry] | None = None  # None: at a node not expanded yet
    idx = 0
    while True:
        steps += 1
        if deadline is not None and steps % _CLOCK_EVERY == 0 and time.monotonic() > deadline:
            return result("unknown", f"timeout after {timeout_s}s ({steps} search steps)")

        if order is None:
            # Expand a new node.  Candidates: the call entries before the
            # first return entry.
            cands: list[_Entry] = []
            first = head.next
            while first is not None and first.match is not None:
                cands.append(first)
                first = first.next
            if first is None or first.optional:
                return result("ok")  # every definite op is linearized

            # Partial-order reduction: a read-only candidate that is legal
            # now can go first without loss of generality - the only child.
            forced = None
            for c in cands:
                if c.readonly and step(state, c.call, c.output)[0]:
                    forced = c
                    break
            if forced is not None:
                memo = (linearized | (1 << forced.id), state)
                if memo not in cache:
                    cache.add(memo)
                    stack.append((forced, state, None, 0))
                    linearized = memo[0]
                    _lift(forced)
                    continue
                order, idx = [], 0  # already explored: dead end
            else:
                # Read-only candidates are all illegal here.  Try the others
                # in call order, or in the model's preferred order.
                order = [c for c in cands if not c.readonly]
                if hinted:
                    order.sort(key=_hint)  # stable: ties stay in call order
                idx = 0

        # Try the remaining children of the current node.
        advanced = False
        while idx < len(order):
            c = order[idx]
            idx += 1
            ok, new_state = step(state, c.call, c.output)
            if ok:
                memo = (linearized | (1 << c.id), new_state)
                if memo not in cache:
                    cache.add(memo)
                    stack.append((c, state, order, idx))
                    state = new_state
                    linearized = memo[0]
                    _lift(c)
                    advanced = True
                    break
        if advanced:
            order = None
            continue

        # Dead end: the op of the first return entry had to be linearized
        # by now.  Remember the deepest such point for the report.
        depth = len(stack)
        if depth > best_depth:
            best_depth = depth
            best_prefix = [(frame[0].id, frame[1]) for frame in stack]
            best_state = state
            best_pending = []
            walk = head.next
            while walk is not None and walk.match is not None:
                best_pending.append(walk.id)
                walk = walk.next
            assert walk is not None
            best_failed = walk.id
            best_pending.remove(walk.id)

        # Backtrack.  Popping a forced choice means its parent node is
        # exhausted as well, so keep popping.
        while True:
            if not stack:
                return result("illegal", "no linearization exists")
            top, state, order, idx = stack.pop()
            linearized &= ~(1 << top.id)
            _unlift(top)
            if order is not None:
                break


def check_partitioned(
    history: Iterable[Op],
    model_for_key: Callable[[str], Model[Any]] | Model[Any],
    timeout_s: float | None = None,
    *,
    stop_on_failure: bool = False,
) -> PartitionedResult:
    """Check each key's sub-history independently (P-compositionality).

    ``model_for_key`` is either a model (used for every key) or a factory
    ``key -> model``.  ``timeout_s`` is a budget for the whole call; keys
    not reached before it runs out get the verdict ``unknown``.  With
    ``stop_on_failure`` the remaining keys are skipped (``unknown``) after
    the first illegal one.
    """
    start = time.monotonic()
    deadline = None if timeout_s is None else start + timeout_s

    def model_of(k: str) -> Model[Any]:
        if isinstance(model_for_key, Model):
            return model_for_key
        return model_for_key(k)

    results: dict[str, CheckResult] = {}
    failed = False
    for k, ops in partition_by_key(prepare_history(history)).items():
        remaining = None if deadline is None else deadline - time.monotonic()
        if (remaining is not None and remaining <= 0) or (failed and stop_on_failure):
            why = (
                "not checked: stopped after the first illegal key"
                if failed and stop_on_failure
                else "not checked: time budget exhausted"
            )
            results[k] = CheckResult("unknown", key=k, history=ops, reason=why)
            continue
        res = check(ops, model_of(k), remaining, key=k)
        results[k] = res
        failed = failed or res.verdict == "illegal"

    verdicts = {r.verdict for r in results.values()}
    verdict: Verdict = (
        "illegal" if "illegal" in verdicts else "unknown" if "unknown" in verdicts else "ok"
    )
    return PartitionedResult(verdict, results, time.monotonic() - start)
