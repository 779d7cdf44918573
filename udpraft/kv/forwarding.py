"""A follower's KV writes to the leader, and the leader's answers (part of KVNode).

How this works: a follower's writes gather per leader (``enqueue_forward``); the writes of
one loop turn, or of FORWARD_LINGER_S while a batch is already in flight, travel together
as one ``AppForward`` over the nodes' own reliable UDP endpoint
(``NodeRuntime.send_to_node``), cut at FORWARD_BATCH_MAX writes or FORWARD_BATCH_BYTES. The
leader proposes each command as it came (``propose_all``) and answers with
``AppForwardResp`` parts of at most FORWARD_ANSWER_BYTES, one result per command: what
apply returned, or none when it was not proposed (this node does not lead: retry). Each
write's future gets its own answer as its part arrives; every write is answered by its
request's deadline at the latest (``_PAST_DEADLINE``: "unavailable", it may have been
applied); a batch that could not be sent answers None (retry is safe); and when the leader
it went to is replaced (term or leader changed, checked every FORWARD_CHECK_S) the writes
still waiting get "leader changed" at once: a crashed leader's answer never comes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any

import orjson

from udpraft.core.errors import NotLeader, ProposalDropped
from udpraft.core.ready import Role
from udpraft.io.runtime import NodeRuntime
from udpraft.kv import errors
from udpraft.kv.errors import KvError
from udpraft.service.logservice import Outcome
from udpraft.wire import AppForward, AppForwardResp

FORWARD_BATCH_MAX = 256  # writes per AppForward to the leader
FORWARD_BATCH_BYTES = 256 * 1024  # command bytes per AppForward (one write may be more)
FORWARD_ANSWER_BYTES = 256 * 1024  # answer bytes per AppForwardResp part
FORWARD_CHECK_S = 0.1  # while waiting for the leader's answer: has the leader changed?
# While a batch to the leader is in flight, the next one gathers writes this long (not just
# one loop turn): fewer, larger forwards (~5 -> ~10 writes each under 50 clients).
FORWARD_LINGER_S = 0.001
MAX_COMMAND_BYTES = 60_000  # one log entry; larger requests get etcd's "request is too large"

# A write waiting to be forwarded: (command, its future, its request's deadline).
_Fwd = tuple[bytes, "asyncio.Future[Any]", float]
_PAST_DEADLINE: Any = object()  # a forwarded write's answer once its deadline passed


def _consume(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


class WriteForwarding:
    rt: NodeRuntime
    timeout_s: float
    counters: dict[str, int]

    def _unavailable(self) -> KvError:
        raise NotImplementedError

    def init_forwarding(self) -> None:
        self._fwd_pending: dict[str, list[_Fwd]] = {}
        self._fwd_in_flight: dict[str, int] = {}  # batches on their way, per leader
        self._fwd_ids = 0
        self._fwd_calls: dict[int, tuple[str, list[asyncio.Future[Any]]]] = {}  # by req_id
        self._tasks: set[asyncio.Task[None]] = set()  # forwards in flight, answers being made
        for name in ("forward_answers_unknown", "forward_answers_unsent", "forward_leader_changed"):
            self.counters.setdefault(name, 0)
        self.rt.on_app_forward = self._on_forward
        self.rt.on_app_forward_resp = self._on_forward_answer

    # ------------------------------------------------------------------ the follower's side

    def enqueue_forward(self, cmd: bytes, leader: str, deadline: float) -> asyncio.Future[Any]:
        """A future for ``cmd``'s answer from ``leader``: the apply result as a dict, None
        (not proposed: retry) or ``_PAST_DEADLINE``. Always resolved, by ``deadline`` at
        the latest (plus up to FORWARD_CHECK_S)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        batch = self._fwd_pending.setdefault(leader, [])
        batch.append((cmd, fut, deadline))
        if len(batch) == 1:
            if self._fwd_in_flight.get(leader):
                loop.call_later(FORWARD_LINGER_S, self._flush_forwards, leader)
            else:
                loop.call_soon(self._flush_forwards, leader)
        return fut

    def _flush_forwards(self, leader: str) -> None:
        batch = self._fwd_pending.pop(leader, [])
        part: list[_Fwd] = []
        size = 0
        for item in batch:
            if part and (len(part) >= FORWARD_BATCH_MAX or size + len(item[0]) > FORWARD_BATCH_BYTES):
                self._spawn(self._send_batch(leader, part))
                part, size = [], 0
            part.append(item)
            size += len(item[0])
        if part:
            self._spawn(self._send_batch(leader, part))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)  # held until done (the loop keeps only weak references)
        task.add_done_callback(self._tasks.discard)

    async def _send_batch(self, leader: str, batch: list[_Fwd]) -> None:
        """One AppForward to the leader over the nodes' UDP endpoint; each write's future
        gets its answer as it arrives (``_on_forward_answer``), or at its own deadline
        ``_PAST_DEADLINE`` ("unavailable": it may have been applied). Not sent: None (retry
        is safe). The leader replaced meanwhile: "leader changed" at once (below)."""
        futs = [f for _, f, _ in batch]
        self._fwd_ids += 1
        req_id = self._fwd_ids
        self._fwd_calls[req_id] = (leader, futs)
        self._fwd_in_flight[leader] = self._fwd_in_flight.get(leader, 0) + 1
        raft = self.rt.raft
        term = raft.term
        changed = False
        try:
            self.counters["forwarded"] += len(batch)
            sent = self.rt.send_to_node(leader, AppForward(req_id, tuple(cmd for cmd, _, _ in batch)))
            while sent:
                now = time.monotonic()
                for _, f, dl in batch:
                    if dl <= now and not f.done():
                        f.set_result(_PAST_DEADLINE)
                pending = [f for f in futs if not f.done()]
                if not pending:
                    break
                if raft.term != term or raft.leader != leader:
                    # The leader it went to was replaced: its answer may never come (a
                    # crashed leader forgets the request). Say so now rather than at the
                    # deadline; the write may have been proposed, so not "retry" (None).
                    changed = True
                    break
                nearest = min(dl for _, f, dl in batch if not f.done())
                await asyncio.wait(pending, timeout=min(FORWARD_CHECK_S, max(0.001, nearest - now)))
        finally:
            self._fwd_calls.pop(req_id, None)
            self._fwd_in_flight[leader] -= 1
        late: Any = None
        if changed:
            self.counters["forward_leader_changed"] += 1
            late = errors.err(errors.LEADER_CHANGED).body()
        for f in futs:
            if not f.done():
                f.set_result(late)

    def _on_forward_answer(self, sender: str, m: AppForwardResp) -> None:
        call = self._fwd_calls.get(m.req_id)
        if call is None or call[0] != sender or m.first + len(m.results) > len(call[1]):
            self.counters["forward_answers_unknown"] += 1  # late (timed out) or not ours
            return
        futs = call[1]
        for i, raw in enumerate(m.results, m.first):
            f = futs[i]
            if f.done():
                continue
            res: Any = None  # not proposed: retry
            if raw is not None:
                try:
                    res = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    res = None
                if not isinstance(res, dict):  # not an answer apply gives: it may have applied
                    res = self._unavailable().body()
            f.set_result(res)

    # ------------------------------------------------------------------ the leader's side

    def _on_forward(self, sender: str, m: AppForward) -> None:
        self._spawn(self._answer_forward(sender, m))

    async def _answer_forward(self, sender: str, m: AppForward) -> None:
        """Propose a follower's forwarded writes; answer each with what apply returned, in
        parts of at most FORWARD_ANSWER_BYTES (a single larger answer goes alone)."""
        results = await self.propose_all(m.cmds)
        first, size = 0, 0
        part: list[bytes | None] = []
        for r in results:
            n = 0 if r is None else len(r)
            if part and size + n > FORWARD_ANSWER_BYTES:
                self._answer_part(sender, m.req_id, first, part)
                first, part, size = first + len(part), [], 0
            part.append(r)
            size += n
        self._answer_part(sender, m.req_id, first, part)

    def _answer_part(self, sender: str, req_id: int, first: int, part: list[bytes | None]) -> None:
        if not self.rt.send_to_node(sender, AppForwardResp(req_id, first, tuple(part))):
            self.counters["forward_answers_unsent"] += 1  # the follower times out: "unavailable"

    async def propose_all(self, cmds: tuple[bytes, ...]) -> list[bytes | None]:
        """Propose each command; what apply returned for each, or None for one not proposed
        (not the leader now: retry), or an error answer (too large, timed out, lost)."""
        deadline = time.monotonic() + self.timeout_s
        slots: list[asyncio.Future[Outcome] | bytes | None] = []
        for c in cmds:
            if len(c) > MAX_COMMAND_BYTES:
                slots.append(orjson.dumps(errors.err(errors.REQUEST_TOO_LARGE).body()))
                continue
            try:
                slots.append(self.rt.propose_app(c) if self.rt.raft.role == Role.LEADER else None)
            except (NotLeader, ProposalDropped):
                slots.append(None)
        waiting = [f for f in slots if isinstance(f, asyncio.Future)]
        self.counters["proposed"] += len(waiting)
        if waiting:
            await asyncio.wait(waiting, timeout=max(0.0, deadline - time.monotonic()))
        out: list[bytes | None] = []
        for f in slots:
            if not isinstance(f, asyncio.Future):
                out.append(f)
            elif not f.done():
                f.add_done_callback(_consume)
                out.append(orjson.dumps(self._unavailable().body()))
            elif f.cancelled() or f.exception() is not None:  # ProposalLost: not applied
                out.append(orjson.dumps(errors.err(errors.LEADER_CHANGED).body()))
            else:
                out.append(f.result().result)
        return out
