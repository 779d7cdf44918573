"""What happened, for people and for tools: the launcher's event log and ``faults.jsonl``.

How this works: every component reports through one ``EventLog``. An event is a line of
text with a kind (``started``, ``died``, ``restarted``, ``leader``, ``fault``, ``heal``,
``info``, ``warn``); the log keeps the latest ``KEEP`` in memory for the live view and hands
each to an optional ``echo`` callback (the plain-text printer when stdout is not a TTY).

Faults and heals also go to ``DIR/faults.jsonl``, one JSON object per line, appended and
flushed as they happen:

    {"ts": 1732590000.123, "kind": "kill", "targets": ["n2"], "signal": "SIGKILL", ...}
    {"ts": 1732590002.456, "kind": "heal", "targets": ["n2"], "heals": "kill", ...}

``ts`` is wall-clock seconds since the epoch; everything after ``targets`` is detail that
depends on the kind (``fault_id`` and ``seed`` when the nemesis did it).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

KEEP = 200  # events held for the live view; older ones are dropped (the files keep all)


@dataclass(frozen=True, slots=True)
class Event:
    ts: float
    kind: str
    text: str
    node: str = ""

    @property
    def is_fault(self) -> bool:
        return self.kind in ("fault", "heal")

    def line(self) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(self.ts))
        return f"{stamp}.{int(self.ts * 1000) % 1000:03d} {self.kind:<9} {self.text}"


class EventLog:
    def __init__(
        self, faults_path: Path | None = None, echo: Callable[[Event], None] | None = None
    ) -> None:
        self.faults_path = faults_path
        self.echo = echo
        self._events: deque[Event] = deque(maxlen=KEEP)
        self._lock = threading.Lock()
        self._faults_file: IO[bytes] | None = None
        self.faults_written = 0
        self._follow_pos = _size(faults_path)

    def emit(self, kind: str, text: str, node: str = "", ts: float | None = None) -> Event:
        """Add an event, stamped ``ts`` (when it happened) or now."""
        ev = Event(time.time() if ts is None else ts, kind, text, node)
        with self._lock:
            self._events.append(ev)
        if self.echo is not None:
            self.echo(ev)
        return ev

    def fault(self, kind: str, targets: Iterable[str], **details: Any) -> dict[str, Any]:
        """Record a fault (or, with kind="heal", its end) in faults.jsonl and the event list."""
        record: dict[str, Any] = {"ts": round(time.time(), 6), "kind": kind,
                                  "targets": list(targets)}
        record.update(details)
        with self._lock:
            if self.faults_path is not None:
                if self._faults_file is None:
                    self.faults_path.parent.mkdir(parents=True, exist_ok=True)
                    self._faults_file = open(self.faults_path, "ab")
                self._faults_file.write(orjson.dumps(record) + b"\n")
                self._faults_file.flush()
            self.faults_written += 1
        self.emit("heal" if kind == "heal" else "fault", _fault_text(record))
        return record

    def follow(self) -> list[dict[str, Any]]:
        """Faults other tools appended since the last call (lines with a ``by`` field, e.g.
        ``python -m launcher ctl``), shown like our own; our lines are skipped."""
        if self.faults_path is None:
            return []
        try:
            with open(self.faults_path, "rb") as f:
                f.seek(self._follow_pos)
                data = f.read(1 << 20)
        except OSError:
            return []
        complete = data[: data.rfind(b"\n") + 1]
        self._follow_pos += len(complete)
        found = []
        for line in complete.splitlines():
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(rec, dict) and rec.get("by") and isinstance(rec.get("targets"), list):
                found.append(rec)
                # stamped when the other tool did it, not when we read it (up to a second later)
                ts = rec.get("ts")
                self.emit("heal" if rec.get("kind") == "heal" else "fault", _fault_text(rec),
                          ts=float(ts) if isinstance(ts, int | float) and ts > 0 else None)
        return found

    def recent(self, n: int = 20, faults_only: bool = False) -> list[Event]:
        with self._lock:
            evs = [e for e in self._events if e.is_fault or not faults_only]
        return evs[-n:]

    def close(self) -> None:
        with self._lock:
            if self._faults_file is not None:
                self._faults_file.close()
                self._faults_file = None


def _fault_text(record: dict[str, Any]) -> str:
    kind = record.get("kind", "?")
    what = f"heal {record['heals']}" if kind == "heal" and record.get("heals") else kind
    who = ",".join(str(t) for t in record.get("targets", [])) or "-"
    skip = {"ts", "kind", "targets", "heals"}
    extra = " ".join(f"{k}={v}" for k, v in record.items() if k not in skip)
    return f"{what} {who}" + (f" ({extra})" if extra else "")


def _size(path: Path | None) -> int:
    try:
        return path.stat().st_size if path is not None else 0
    except OSError:
        return 0
