"""Operation histories recorded by chaos-test clients.

A history is a flat list of :class:`Op` records, one per client operation,
in the style of Jepsen/Porcupine:

* ``call_s`` is when the client sent the request and ``return_s`` when it got
  the answer (any clock that is monotonic across all clients of one run, e.g.
  ``time.monotonic()`` in a single test driver process).
* ``status`` tells what the client learned:

  ``"ok"``       the operation took effect exactly once, somewhere between
                 ``call_s`` and ``return_s``, and ``output`` is its result;
  ``"failed"``   the operation definitely did *not* take effect (e.g. the
                 leader rejected it before proposing) - it is dropped before
                 checking;
  ``"unknown"``  the client timed out or lost the connection: the operation
                 may or may not have taken effect, at any instant after
                 ``call_s`` (even long after the client gave up).  Its return
                 time is treated as +inf and its output as unconstrained.

Histories are stored as JSON lines, one op per line.  ``return_s`` of an op
whose outcome is unknown is written as ``null`` (JSON has no infinity) and
read back as ``float("inf")``.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, TextIO, cast

__all__ = [
    "INF",
    "STATUSES",
    "Op",
    "Recorder",
    "Status",
    "dump_history",
    "freeze",
    "load_history",
    "op_from_dict",
    "op_to_dict",
    "parse_history",
    "partition_by_key",
    "prepare_history",
    "save_history",
]

Status = Literal["ok", "failed", "unknown"]
STATUSES: frozenset[str] = frozenset({"ok", "failed", "unknown"})
INF = math.inf


@dataclass(frozen=True, slots=True)
class Op:
    """One client operation of a history (see the module docstring)."""

    client: str
    op_id: int
    kind: str
    key: str = ""
    input: Any = None
    output: Any = None
    call_s: float = 0.0
    return_s: float = INF
    status: Status = "ok"

    @property
    def is_unknown(self) -> bool:
        return self.status == "unknown"

    def overlaps(self, other: Op) -> bool:
        """True if the real-time intervals of the two ops intersect."""
        return self.call_s <= other.return_s and other.call_s <= self.return_s

    def describe(self) -> str:
        """Short human-readable form, e.g. ``c1#7 put[k](3) -> 'ok'``."""
        key = f"[{self.key}]" if self.key else ""
        arg = "" if self.input is None else repr(self.input)
        out = "?" if self.status == "unknown" else repr(self.output)
        ret = "inf" if math.isinf(self.return_s) else f"{self.return_s:.6f}"
        return (
            f"{self.client}#{self.op_id} {self.kind}{key}({arg}) -> {out}"
            f"  [{self.call_s:.6f}, {ret}] {self.status}"
        )


def freeze(value: Any) -> Hashable:
    """Recursively convert JSON-ish values to hashable ones.

    lists/tuples -> tuples, dicts -> frozensets of (key, value) pairs,
    sets -> frozensets.  Model states are built from frozen values so that
    they can be memoized, and so that a value that went through JSON (list)
    compares equal to the original (tuple).
    """
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    if isinstance(value, dict):
        return frozenset((k, freeze(v)) for k, v in value.items())
    if isinstance(value, set | frozenset):
        return frozenset(freeze(v) for v in value)
    return cast(Hashable, value)


# --------------------------------------------------------------------------- JSON lines


def op_to_dict(op: Op) -> dict[str, Any]:
    return {
        "client": op.client,
        "op_id": op.op_id,
        "kind": op.kind,
        "key": op.key,
        "input": op.input,
        "output": op.output,
        "call_s": op.call_s,
        "return_s": None if math.isinf(op.return_s) else op.return_s,
        "status": op.status,
    }


def _time(value: Any, field: str) -> float:
    if value is None or value in ("inf", "Infinity"):
        return INF
    t = float(value)
    if math.isnan(t):
        raise ValueError(f"{field} is NaN")
    return t


def op_from_dict(d: dict[str, Any]) -> Op:
    status = d.get("status", "ok")
    if status not in STATUSES:
        raise ValueError(f"bad status {status!r} (expected one of {sorted(STATUSES)})")
    return Op(
        client=str(d["client"]),
        op_id=int(d["op_id"]),
        kind=str(d["kind"]),
        key=str(d.get("key", "")),
        input=d.get("input"),
        output=d.get("output"),
        call_s=_time(d["call_s"], "call_s"),
        return_s=_time(d.get("return_s"), "return_s"),
        status=cast(Status, status),
    )


def dump_history(ops: Iterable[Op], fp: TextIO) -> None:
    for op in ops:
        fp.write(json.dumps(op_to_dict(op), allow_nan=False, sort_keys=True))
        fp.write("\n")


def save_history(ops: Iterable[Op], path: str | Path) -> Path:
    p = Path(path)
    with p.open("w", encoding="utf-8") as fp:
        dump_history(ops, fp)
    return p


def parse_history(lines: Iterable[str]) -> Iterator[Op]:
    for lineno, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            yield op_from_dict(json.loads(line))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"line {lineno}: {exc}") from exc


def load_history(path: str | Path) -> list[Op]:
    with Path(path).open(encoding="utf-8") as fp:
        return list(parse_history(fp))


# --------------------------------------------------------------------------- preparation


def prepare_history(ops: Iterable[Op]) -> list[Op]:
    """Normalise a raw history for checking.

    * ``failed`` ops are dropped (they definitely had no effect);
    * ``unknown`` ops get ``return_s = inf`` and ``output = None``;
    * times are validated (finite call, return not before call).
    """
    out: list[Op] = []
    for op in ops:
        if op.status not in STATUSES:
            raise ValueError(f"{op.describe()}: bad status {op.status!r}")
        if op.status == "failed":
            continue
        if not math.isfinite(op.call_s):
            raise ValueError(f"{op.describe()}: call_s must be finite")
        if op.status == "unknown":
            if op.return_s != INF or op.output is not None:
                op = replace(op, return_s=INF, output=None)
        elif math.isnan(op.return_s) or op.return_s < op.call_s:
            raise ValueError(f"{op.describe()}: return_s before call_s")
        out.append(op)
    return out


def partition_by_key(ops: Iterable[Op]) -> dict[str, list[Op]]:
    """Split a history by ``Op.key`` (P-compositionality), keys in sorted order."""
    parts: dict[str, list[Op]] = {}
    for op in ops:
        parts.setdefault(op.key, []).append(op)
    return {k: parts[k] for k in sorted(parts)}


# --------------------------------------------------------------------------- recording


class Recorder:
    """Thread-safe helper for test drivers that builds a history.

    >>> rec = Recorder()
    >>> h = rec.invoke("c1", "put", "k", 3)
    >>> rec.ok(h, "ok")            # or rec.fail(h) / rec.timeout(h)
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._next_id = 0
        self._open: dict[int, Op] = {}
        self._done: list[Op] = []

    def invoke(self, client: str, kind: str, key: str = "", input: Any = None) -> int:
        with self._lock:
            op_id = self._next_id
            self._next_id += 1
            self._open[op_id] = Op(client, op_id, kind, key, input, None, self._clock())
            return op_id

    def _finish(self, op_id: int, status: Status, output: Any) -> Op:
        with self._lock:
            op = self._open.pop(op_id)
            ret = INF if status == "unknown" else self._clock()
            done = replace(op, output=output, return_s=ret, status=status)
            self._done.append(done)
            return done

    def ok(self, op_id: int, output: Any = None) -> Op:
        return self._finish(op_id, "ok", output)

    def fail(self, op_id: int) -> Op:
        return self._finish(op_id, "failed", None)

    def timeout(self, op_id: int) -> Op:
        return self._finish(op_id, "unknown", None)

    def history(self) -> list[Op]:
        """Completed ops plus still-open ones (reported as ``unknown``)."""
        with self._lock:
            pending = [replace(op, status="unknown") for op in self._open.values()]
            return sorted(self._done + pending, key=lambda o: (o.call_s, o.op_id))
