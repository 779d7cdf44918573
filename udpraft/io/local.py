"""Proposals made inside the node's process (library use, the KV layer): part of NodeRuntime.

How this works: ``propose_local`` (a future) and ``propose_local_cb`` (a callback, no
future or coroutine per entry) append the payload to this loop turn's list; ``_drive`` makes
the whole list one ``propose_datas`` and remembers the batch as (first index, term,
waiters). Entries apply in index order, so ``_apply`` resolves waiters by walking the oldest
batch — no per-entry dictionary. An entry applied with another term was overwritten by a new
leader (``ProposalLost``); a batch that apply skips past (a snapshot installed over it after
this node lost leadership) ends with ``TimeoutError`` (outcome unknown). Every waiter also
has a deadline (``_local_deadlines``, swept every 100 ms). ``wait_local`` waits for one
entry appended some other way (a membership change) by index.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from udpraft.core.errors import NotLeader, RaftError
from udpraft.core.raft import RaftNode
from udpraft.core.ready import Role
from udpraft.core.sessions import Verdict
from udpraft.core.types import Entry, EntryKind
from udpraft.io.hist import Histogram
from udpraft.service.logservice import APP_PREFIX, Outcome


class ProposalLost(RaftError):
    """The proposed entry was overwritten by a new leader: it did not take effect."""


class Waiter(Protocol):
    def done(self) -> bool: ...
    def set_result(self, result: Outcome, /) -> None: ...
    def set_exception(self, exception: BaseException, /) -> None: ...


class CallbackWaiter:
    """A future-like waiter that calls ``cb(outcome, None)`` or ``cb(None, error)`` once."""

    __slots__ = ("_done", "cb")

    def __init__(self, cb: Callable[[Outcome | None, BaseException | None], Any]) -> None:
        self.cb = cb
        self._done = False

    def done(self) -> bool:
        return self._done

    def set_result(self, result: Outcome, /) -> None:
        if not self._done:
            self._done = True
            self.cb(result, None)

    def set_exception(self, exception: BaseException, /) -> None:
        if not self._done:
            self._done = True
            self.cb(None, exception)


class LocalProposals:
    raft: RaftNode
    batch_sizes: Histogram
    _loop: asyncio.AbstractEventLoop | None
    _local_datas: list[bytes]
    _local_waits: list[Waiter]
    _local_batches: deque[tuple[int, int, list[Waiter]]]
    _local_waiters: dict[int, tuple[int, Waiter]]
    _local_deadlines: deque[tuple[float, Waiter]]

    def _kick(self) -> None:
        raise NotImplementedError

    def propose_app(self, command: bytes) -> asyncio.Future[Outcome]:
        """Propose an application command (e.g. a KV operation); see propose_local."""
        return self.propose_local(APP_PREFIX + command)

    def propose_local(self, data: bytes, timeout_s: float = 30.0) -> asyncio.Future[Outcome]:
        """Propose from inside this process; leader only.

        Raises NotLeader at once; the future resolves with the outcome (index, term,
        application result) once the entry is applied here, or fails with ProposalLost if a
        new leader overwrote it, ProposalDropped if refused, or TimeoutError after
        ``timeout_s`` (checked every 100 ms; the entry may still commit later).
        """
        assert self._loop is not None
        if self.raft.role != Role.LEADER:
            raise NotLeader(self.raft.leader)
        fut: asyncio.Future[Outcome] = self._loop.create_future()
        self._local_datas.append(data)
        self._local_waits.append(fut)
        self._local_deadlines.append((time.monotonic() + timeout_s, fut))
        self._kick()
        return fut

    def propose_local_cb(
        self,
        data: bytes,
        cb: Callable[[Outcome | None, BaseException | None], Any],
        timeout_s: float = 30.0,
    ) -> None:
        """``propose_local`` with a callback instead of a future: ``cb(outcome, None)`` once
        applied here, or ``cb(None, error)``. Raises NotLeader at once."""
        self.propose_waiter(data, CallbackWaiter(cb), timeout_s)

    def propose_waiter(self, data: bytes, w: Waiter, timeout_s: float = 30.0) -> None:
        """``propose_local`` answering any future-like ``w`` (see Waiter)."""
        if self.raft.role != Role.LEADER:
            raise NotLeader(self.raft.leader)
        self._local_datas.append(data)
        self._local_waits.append(w)
        self._local_deadlines.append((time.monotonic() + timeout_s, w))
        self._kick()

    def wait_local(self, index: int, term: int, timeout_s: float) -> asyncio.Future[Outcome]:
        """A future for the entry this node (the leader) appended at ``index`` in ``term``:
        resolved when it is applied here, failed if overwritten or after ``timeout_s``."""
        assert self._loop is not None
        fut: asyncio.Future[Outcome] = self._loop.create_future()
        self._local_waiters[index] = (term, fut)

        def expire() -> None:
            if not fut.done():
                fut.set_exception(TimeoutError(f"entry {index} not committed in {timeout_s} s"))

        self._loop.call_later(timeout_s, expire)
        return fut

    def _propose_local_batch(self) -> None:
        datas, waits = self._local_datas, self._local_waits
        self._local_datas, self._local_waits = [], []
        try:
            first = self.raft.propose_datas(datas)
        except RaftError as e:
            for w in waits:
                if not w.done():
                    w.set_exception(e)
            return
        self._local_batches.append((first, self.raft.term, waits))
        self.batch_sizes.observe(len(waits))

    def _resolve_local(self, e: Entry, out: Outcome | None) -> None:
        """``e`` was applied with ``out``: answer whoever proposed it here."""
        batches = self._local_batches
        while batches:
            first, term, waits = batches[0]
            k = e.index - first
            if k < 0:
                break
            if k >= len(waits):  # applied past the whole batch: skipped by a snapshot
                batches.popleft()
                for w in waits:
                    if not w.done():
                        w.set_exception(TimeoutError("outcome unknown: a snapshot replaced the log"))
                continue
            if k == len(waits) - 1:
                batches.popleft()
            w = waits[k]
            if not w.done():
                if e.term == term and out is not None:
                    w.set_result(out)
                else:
                    w.set_exception(ProposalLost(f"entry {e.index} was overwritten"))
            break
        if self._local_waiters:
            got = self._local_waiters.pop(e.index, None)
            if got is not None and not got[1].done():
                term, w = got
                if e.term == term and out is not None:
                    w.set_result(out)
                elif e.term == term and e.kind == EntryKind.CONFIG:
                    w.set_result(Outcome(Verdict.APPLY, e.index, e.term, b""))
                else:
                    w.set_exception(ProposalLost(f"entry {e.index} was overwritten"))

    def _expire_local(self) -> None:
        now = time.monotonic()
        dl = self._local_deadlines
        while dl and (dl[0][1].done() or dl[0][0] <= now):
            _t, w = dl.popleft()
            if not w.done():
                w.set_exception(TimeoutError("not committed in time"))
