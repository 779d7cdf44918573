"""Sequential specifications ("models") for the linearizability checker.

A model is a deterministic state machine, as in Porcupine:

* ``init()`` returns the initial state;
* ``step(state, input, output) -> (ok, new_state)`` says whether an operation
  with this ``input`` may return ``output`` when applied to ``state``, and
  what the state is afterwards.

``input`` is a :class:`Call` - ``(kind, arg)`` taken from ``Op.kind`` and
``Op.input``.  For an op whose outcome is unknown (client timeout) the
checker passes ``output=UNKNOWN``: the output is unconstrained, so the
model judges legality from the state alone and returns the state the op
would produce.

Two optional hooks only speed the search up, never change a verdict:
``is_readonly(input, output)`` marks pure queries (linearized greedily) and
``order_hint(input, output)`` orders the candidates tried at each search
node (the log models use the returned index, which makes log checks
near-linear).

States must be hashable and compare by value: the checker memoizes
``(set of linearized ops, state)`` pairs.  Values coming from JSON are made
hashable with :func:`~tools.checker.history.freeze`.

Models provided:

``RegisterModel``  one KV key.  ``put(v) -> anything``; ``get() -> v | None``
                   (``None`` = absent); ``cas((expected, new)) -> bool``.
``LogModel``       the replicated log with *relative* numbering: the state is
                   the tuple of payloads submitted so far; ``submit(p) -> i``
                   is legal iff ``i == len(state) + 1``;
                   ``read() -> [payloads]`` is legal iff it equals the state.
``AbsoluteLogModel``  the log with *absolute* Raft indices, which may have
                   gaps (leader no-ops, entries of other clients that are not
                   in the history).  The state is the last index assigned;
                   ``submit(p) -> i`` is legal iff ``i > state``.  Reads are
                   not supported (use ``LogModel`` or ``check_log``).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Hashable
from typing import Any, Final, Generic, NamedTuple, TypeVar

from .history import freeze

__all__ = [
    "UNKNOWN",
    "AbsoluteLogModel",
    "Call",
    "LogModel",
    "Model",
    "RegisterModel",
]

S = TypeVar("S")


class _Unknown:
    """Sentinel output of an op whose outcome is unknown."""

    _instance: _Unknown | None = None

    def __new__(cls) -> _Unknown:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "?"


UNKNOWN: Final = _Unknown()


class Call(NamedTuple):
    """The input of a model step: the op kind and its argument."""

    kind: str
    arg: Any


class Model(ABC, Generic[S]):
    """A sequential specification (see the module docstring)."""

    name: str = "model"

    @abstractmethod
    def init(self) -> S: ...

    @abstractmethod
    def step(self, state: S, input: Call, output: Any) -> tuple[bool, S]: ...

    def is_readonly(self, input: Call, output: Any) -> bool:
        """True if the op, in every state where it is legal with this output,
        leaves the state unchanged (a pure query).

        The checker linearizes such ops as soon as they are legal without
        branching (a sound partial-order reduction), which keeps histories
        with many concurrent reads tractable.  Returning ``False`` is always
        safe, only slower.
        """
        return False

    def order_hint(self, input: Call, output: Any) -> float:
        """Search-order hint: among the ops that may be linearized next, the
        checker tries those with smaller hints first (then call order).

        It never changes a verdict, only how fast a linearization is found.
        The default (no hint) gives Porcupine's order, by call time.
        """
        return 0.0

    def describe_state(self, state: S) -> str:
        return repr(state)

    def _unsupported(self, input: Call) -> ValueError:
        return ValueError(f"{type(self).__name__} does not support op kind {input.kind!r}")


class RegisterModel(Model[Hashable]):
    """A single read/write/compare-and-set register (one KV key).

    * ``put(value)``: always legal, any output; state becomes ``value``.
    * ``get()``: legal iff ``output == state`` (``None`` = key absent).
    * ``cas((expected, new))`` or ``cas({"expected": e, "new": n})``:
      legal iff ``output == (state == expected)``; on success state = ``new``.
      With an unknown output the cas succeeds iff ``state == expected``.
    """

    name = "register"

    def __init__(self, initial: Any = None) -> None:
        self.initial: Hashable = freeze(initial)

    def init(self) -> Hashable:
        return self.initial

    @staticmethod
    def _cas_args(arg: Any) -> tuple[Hashable, Hashable]:
        if isinstance(arg, dict):
            return freeze(arg["expected"]), freeze(arg["new"])
        expected, new = arg
        return freeze(expected), freeze(new)

    def step(self, state: Hashable, input: Call, output: Any) -> tuple[bool, Hashable]:
        kind = input.kind
        if kind == "get":
            return (output is UNKNOWN or freeze(output) == state), state
        if kind == "put":
            return True, freeze(input.arg)
        if kind == "cas":
            expected, new = self._cas_args(input.arg)
            succeeded = state == expected
            if output is not UNKNOWN and (not isinstance(output, bool) or output != succeeded):
                return False, state
            return True, (new if succeeded else state)
        raise self._unsupported(input)

    def is_readonly(self, input: Call, output: Any) -> bool:
        return input.kind == "get" or (input.kind == "cas" and output is False)


class LogModel(Model[tuple[Hashable, ...]]):
    """Replicated log with relative (1-based, gap-free) indices.

    * ``submit(payload) -> index``: legal iff ``index == len(state) + 1``;
      the payload is appended.  Unknown output: the payload is appended.
    * ``read() -> [payload, ...]``: legal iff the list equals the state.
    """

    name = "log"

    def init(self) -> tuple[Hashable, ...]:
        return ()

    def step(
        self, state: tuple[Hashable, ...], input: Call, output: Any
    ) -> tuple[bool, tuple[Hashable, ...]]:
        if input.kind == "submit":
            if output is not UNKNOWN and (
                isinstance(output, bool) or not isinstance(output, int) or output != len(state) + 1
            ):
                return False, state
            return True, (*state, freeze(input.arg))
        if input.kind == "read":
            return (output is UNKNOWN or freeze(output) == state), state
        raise self._unsupported(input)

    def is_readonly(self, input: Call, output: Any) -> bool:
        return input.kind == "read"

    def order_hint(self, input: Call, output: Any) -> float:
        return _index_hint(output)

    def describe_state(self, state: tuple[Hashable, ...]) -> str:
        if len(state) <= 8:
            return f"log{list(state)!r}"
        return f"log[{len(state)} entries, ..., {', '.join(map(repr, state[-4:]))}]"


class AbsoluteLogModel(Model[int]):
    """Replicated log with absolute Raft indices, gaps allowed.

    The state is the last index assigned (0 initially).  ``submit -> index``
    is legal iff ``index > state``; the state becomes ``index``.

    An unknown submit that took effect got *some* index ``> state``.  Every
    later constraint has the form ``index > state``, so the smallest choice
    ``state + 1`` is the most permissive one and the model can stay
    deterministic: if any choice leads to a linearization, this one does.
    """

    name = "absolute-log"

    def init(self) -> int:
        return 0

    def step(self, state: int, input: Call, output: Any) -> tuple[bool, int]:
        if input.kind != "submit":
            raise self._unsupported(input)
        if output is UNKNOWN:
            return True, state + 1
        if isinstance(output, bool) or not isinstance(output, int) or output <= state:
            return False, state
        return True, output

    def order_hint(self, input: Call, output: Any) -> float:
        return _index_hint(output)

    def describe_state(self, state: int) -> str:
        return f"last_index={state}"


def _index_hint(output: Any) -> float:
    """Submits are linearized in index order; unknown ones last."""
    if isinstance(output, int) and not isinstance(output, bool):
        return float(output)
    return math.inf
