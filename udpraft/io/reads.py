"""Linearizable reads on a node (part of NodeRuntime, a mixin; runtime.py owns the state).

How this works: ``read_index(handler)`` asks the core for a ReadIndex (§6.4: the leader
confirms its leadership with a heartbeat round; a follower asks the leader). The core's
answer arrives in a Ready's ``read_states`` (``_take_read_states``): a refused read runs its
handler at once with ``ok=False``; a confirmed one waits in ``_ready_reads`` until this node
has applied up to its index (``_serve_reads``, after every apply). Reads in flight are
bounded by MAX_READS (then refused at once). ``linearizable_read`` is the asyncio face.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from udpraft.core.errors import RaftError
from udpraft.core.raft import RaftNode
from udpraft.core.ready import ReadState, Ready
from udpraft.service.logservice import LogService

MAX_READS = 50_000


class ReadNotConfirmed(RaftError):
    """Leadership could not be confirmed for a linearizable read; retry (maybe elsewhere)."""

    def __init__(self, leader: str) -> None:
        super().__init__(f"read not confirmed (leader: {leader or 'unknown'})")
        self.leader = leader


class LinearizableReads:
    raft: RaftNode
    service: LogService
    _loop: asyncio.AbstractEventLoop | None
    _reads: dict[int, Callable[[ReadState], None]]
    _ready_reads: list[tuple[int, Callable[[ReadState], None], ReadState]]
    _read_ids: int

    def _kick(self) -> None:
        raise NotImplementedError

    def _take_read_states(self, rd: Ready) -> None:
        for rs in rd.read_states:
            handler = self._reads.pop(rs.request_id, None)
            if handler is None:
                continue
            if rs.ok:
                self._ready_reads.append((rs.index, handler, rs))
            else:
                handler(rs)

    def _serve_reads(self) -> None:
        if not self._ready_reads:
            return
        applied = self.service.applied_index
        keep = []
        for idx, handler, rs in self._ready_reads:
            if idx <= applied:
                handler(rs)
            else:
                keep.append((idx, handler, rs))
        self._ready_reads = keep

    def read_index(self, handler: Callable[[ReadState], None]) -> None:
        """Linearizable read point: ``handler`` runs once applied >= the confirmed index
        (or at once with ``ok=False`` when it cannot be confirmed)."""
        if len(self._reads) + len(self._ready_reads) >= MAX_READS:
            handler(ReadState(0, 0, False))
            return
        self._read_ids += 1
        rid = self._read_ids
        self._reads[rid] = handler
        self.raft.read_index(rid)
        self._kick()

    def linearizable_read(self) -> asyncio.Future[int]:
        """Resolves with the read index once this node has applied it (ReadIndex, §6.4);
        fails with ReadNotConfirmed when leadership could not be confirmed."""
        assert self._loop is not None
        fut: asyncio.Future[int] = self._loop.create_future()

        def done(rs: ReadState) -> None:
            if fut.done():
                return
            if rs.ok:
                fut.set_result(rs.index)
            else:
                fut.set_exception(ReadNotConfirmed(self.raft.leader))

        self.read_index(done)
        return fut
