"""The replicated-log service every node runs: sessions, an optional application, retrieve.

How this works: committed entries come in, in log order, through ``apply``. For an entry
carrying a client id the session table (dissertation §6.3) decides first: a new request is
applied (handed to the application, whose result is cached in the session); a retried one
gets the cached result and changes nothing; a request of an expired session is refused.
Entries that are not client-visible — the leader's no-ops, duplicates, refused requests —
are remembered in ``hidden`` so ``retrieve`` returns each submitted payload exactly once, at
the index it was acknowledged with.

Two kinds of payload share the log: plain client submits (the product of the log itself,
returned by ``retrieve``) and application commands (e.g. key-value operations), which start
with ``APP_PREFIX`` and go to the application. Client submits may not start with that prefix
(the runtime refuses them), so neither can be mistaken for the other.

Pure: the runtime feeds it; the same log gives every replica the same decisions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from udpraft.core.sessions import SessionTable, Verdict
from udpraft.core.types import Entry, EntryKind

APP_PREFIX = b"\xffudpraft-app\x00"


class Application(Protocol):
    """A deterministic state machine on top of the log (the KV store is one)."""

    def apply(self, index: int, data: bytes) -> bytes: ...


class NullApplication:
    """The plain log: entries are the product; nothing to compute."""

    def apply(self, index: int, data: bytes) -> bytes:
        return b""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What applying one entry meant for the client that sent it."""

    verdict: Verdict
    index: int  # index of the entry that took effect (the original one for a duplicate)
    term: int
    result: bytes


class LogService:
    def __init__(
        self,
        app: Application | None = None,
        session_window: int = 4096,
        session_ttl_ms: int = 3_600_000,
    ) -> None:
        self.app: Application = app or NullApplication()
        self.sessions: SessionTable[tuple[int, int, bytes]] = SessionTable(
            window=session_window, ttl_ms=session_ttl_ms
        )
        self.hidden: set[int] = set()
        self.applied_index = 0
        self.duplicates = 0
        self.expired = 0

    def apply(self, e: Entry) -> Outcome | None:
        """Apply one committed entry; returns its outcome (None for a no-op)."""
        if e.index != self.applied_index + 1:
            raise AssertionError(f"apply out of order: {e.index} after {self.applied_index}")
        self.applied_index = e.index
        if e.kind != EntryKind.NORMAL:
            self.hidden.add(e.index)
            return None
        is_app = e.data.startswith(APP_PREFIX)
        if is_app:
            self.hidden.add(e.index)
        if not e.client_id:
            return Outcome(Verdict.APPLY, e.index, e.term, self._run(e) if is_app else b"")
        verdict, cached = self.sessions.check(e.client_id, e.seq, e.ts_ms)
        if verdict == Verdict.APPLY:
            result = self._run(e) if is_app else b""
            self.sessions.record(e.client_id, e.seq, (e.index, e.term, result))
            return Outcome(Verdict.APPLY, e.index, e.term, result)
        self.hidden.add(e.index)
        if verdict == Verdict.DUPLICATE and cached is not None:
            self.duplicates += 1
            return Outcome(Verdict.DUPLICATE, cached[0], cached[1], cached[2])
        self.expired += 1
        return Outcome(Verdict.EXPIRED, e.index, e.term, b"")

    def _run(self, e: Entry) -> bytes:
        return self.app.apply(e.index, e.data[len(APP_PREFIX) :])

    def lookup(self, client_id: str, seq: int) -> Outcome | None:
        """A retried request whose first copy was already applied: answer from the cache."""
        hit = self.sessions.lookup(client_id, seq)
        if hit is None:
            return None
        return Outcome(Verdict.DUPLICATE, hit[0], hit[1], hit[2])

    def visible(self, e: Entry) -> bool:
        return e.kind == EntryKind.NORMAL and e.index not in self.hidden
