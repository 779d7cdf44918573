"""Mounting the KV store on a node: Raft proposals, ReadIndex reads, forwarding, lease clocks.

How this works: ``kv_app_factory(rt, app)`` (called at node start) creates the state
machine, its watch hub and a ``KVNode``, mounts the etcd routes (``udpraft.kv.http``) on the
node's aiohttp app and returns the machine, which the runtime then feeds with every
committed KV entry.

- Writes: on the leader, ``propose_app`` and wait (bounded) for the entry to apply here,
  then answer with what apply returned. A follower decodes and checks the request itself,
  then hands the command to the leader: the writes of one loop turn travel together in one
  AppForward message over the nodes' own authenticated, reliable UDP endpoint (not HTTP:
  ~1/6 of a follower's CPU went to aiohttp's client for these posts), and the leader
  answers each with its apply result (or none: not proposed, safe to retry). A write whose
  leader is replaced before it answers gets "leader changed" at once. Other leader-only
  calls (keepalive, TTLs) forward the request body over HTTP as is, at most ``MAX_HOPS``
  times. No leader, or no quorum: retry until the request deadline
  (``UDPRAFT_KV_TIMEOUT_S``, default 5 s), then answer etcd's retryable 503 (code 14).
- Reads: ReadIndex (``linearizable_read``) on whichever node was asked, then read locally;
  concurrent reads share one ReadIndex request. ``serializable: true`` skips it.
- Leases: only the leader runs a clock. Each lease gets a monotonic deadline when granted,
  renewed by keepalives (which therefore go to the leader); a new leader gives every lease
  a full TTL from its takeover (etcd's "promote"). An expired lease is *proposed* for
  expiry, so every replica deletes its keys at the same log position; followers never
  expire anything by their own clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from udpraft.core.errors import NotLeader, ProposalDropped, RaftError
from udpraft.core.ready import Role
from udpraft.io.local import ProposalLost
from udpraft.io.runtime import NodeRuntime, ReadNotConfirmed
from udpraft.kv import errors
from udpraft.kv.errors import KvError
from udpraft.kv.machine import KVMachine
from udpraft.kv.types import expire_command
from udpraft.kv.watch import WatchHub
from udpraft.service.logservice import Application, Outcome
from udpraft.wire import AppForward, AppForwardResp

log = logging.getLogger("udpraft.kv")

FORWARD_HEADER = "X-Udpraft-Forwarded"
FORWARD_BATCH_MAX = 256  # writes per AppForward to the leader
FORWARD_BATCH_BYTES = 256 * 1024  # command bytes per AppForward (one write may be more)
FORWARD_ANSWER_BYTES = 256 * 1024  # answer bytes per AppForwardResp part
FORWARD_CHECK_S = 0.1  # while waiting for the leader's answer: has the leader changed?
# While a batch to the leader is in flight, the next one gathers writes this long (not just
# one loop turn): fewer, larger forwards (~5 -> ~10 writes each under 50 clients).
FORWARD_LINGER_S = 0.001
MAX_HOPS = 2
MAX_COMMAND_BYTES = 60_000  # one log entry; larger requests get etcd's "request is too large"
LEASE_TICK_S = 0.1
EXPIRE_RETRY_S = 1.0
RETRY_S = 0.05
READ_ATTEMPT_S = 1.0  # one shared ReadIndex request; after this it counts as failed
ETCD_VERSION = "3.4.23"


# A write waiting to be forwarded: (command, its future, its request's deadline).
_Fwd = tuple[bytes, "asyncio.Future[Any]", float]
_PAST_DEADLINE: Any = object()  # a forwarded write's answer once its deadline passed


def id64(text: str) -> int:
    """A stable etcd-style uint64 id (cluster, member) from a name."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") or 1


def json_response(body: Any, status: int = 200) -> web.Response:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return web.Response(body=data, status=status, content_type="application/json")


def error_response(e: KvError) -> web.Response:
    return json_response(e.body(), e.http_status)


class KVNode:
    def __init__(self, rt: NodeRuntime) -> None:
        self.rt = rt
        self.machine = KVMachine()
        self.hub = WatchHub(self.machine)
        name = rt.cluster.cluster
        self.cluster_id = str(id64("cluster:" + name))
        self.member_ids = {n.id: str(id64(f"member:{name}/{n.id}")) for n in rt.cluster.nodes}
        self.member_id = self.member_ids[rt.id]
        self.timeout_s = float(os.environ.get("UDPRAFT_KV_TIMEOUT_S", "5"))
        self.deadlines: dict[int, float] = {}
        self._lease_term = -1
        self._expiring: dict[int, float] = {}
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self.closing = False
        self._read_next: asyncio.Future[None] | None = None
        self._read_busy = False
        self._read_gen = 0
        self._fwd_pending: dict[str, list[_Fwd]] = {}
        self._fwd_in_flight: dict[str, int] = {}  # batches on their way, per leader
        self._fwd_ids = 0
        self._fwd_calls: dict[int, tuple[str, list[asyncio.Future[Any]]]] = {}  # by req_id
        self._tasks: set[asyncio.Task[None]] = set()  # forwards in flight, answers being made
        rt.on_app_forward = self._on_forward
        rt.on_app_forward_resp = self._on_forward_answer
        self.stream_wakers: set[Callable[[], None]] = set()  # open watch streams
        self.counters: dict[str, int] = {
            "forwarded": 0, "proposed": 0, "timeouts": 0, "expired": 0,
            "forward_answers_unknown": 0, "forward_answers_unsent": 0, "forward_leader_changed": 0,
        }
        self.machine.lease_listeners.append(self._on_lease)

    # ================================================================== lifecycle

    async def start(self, _app: web.Application) -> None:
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))
        self._task = asyncio.get_running_loop().create_task(self._lease_loop())

    async def shutdown(self, _app: web.Application) -> None:
        """Node stopping: end the open watch streams, which never end by themselves
        (aiohttp would otherwise wait for them up to its shutdown timeout)."""
        self.closing = True
        for wake in list(self.stream_wakers):
            wake()

    async def stop(self, _app: web.Application) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._session is not None:
            await self._session.close()

    # ================================================================== answers

    def header(self, rev: str | None) -> dict[str, str]:
        h = {"cluster_id": self.cluster_id, "member_id": self.member_id}
        if rev:
            h["revision"] = rev
        h["raft_term"] = str(self.rt.raft.term)
        return h

    def fill(self, resp: dict[str, Any]) -> dict[str, Any]:
        """Replace the state machine's revision-only header with etcd's full one."""
        resp["header"] = self.header(resp.get("header", {}).get("revision"))
        return resp

    def answer(self, resp: dict[str, Any]) -> web.Response:
        return json_response(self.fill(resp))

    def result_response(self, result: bytes) -> web.Response:
        d = orjson.loads(result)
        if "error" in d:
            return json_response(result, errors.HTTP_STATUS.get(d.get("code", 2), 500))
        return self.answer(d)

    def _unavailable(self) -> KvError:
        self.counters["timeouts"] += 1
        return errors.err(errors.TIMEOUT if self.rt.raft.leader else errors.NO_LEADER)

    # ================================================================== writes

    async def write(self, cmd: bytes) -> web.Response:
        """Propose ``cmd``: here on the leader, else through the leader's batch endpoint;
        retried through elections until the request deadline."""
        if len(cmd) > MAX_COMMAND_BYTES:
            return error_response(errors.err(errors.REQUEST_TOO_LARGE))
        deadline = time.monotonic() + self.timeout_s
        while True:
            rt = self.rt
            res: web.Response | None = None
            if rt.raft.role == Role.LEADER:
                res = await self.propose(cmd, deadline)
            elif rt.raft.leader and rt.raft.leader != rt.id:
                res = await self.forward_command(cmd, rt.raft.leader, deadline)
            if res is not None:
                return res
            if time.monotonic() + RETRY_S >= deadline:
                return error_response(self._unavailable())
            await asyncio.sleep(RETRY_S)

    # ------------------------------------------------------------------ batched forwarding

    async def forward_command(self, cmd: bytes, leader: str, deadline: float) -> web.Response | None:
        """Hand ``cmd`` to the leader with every other write forwarded in this loop turn
        (one AppForward per batch, not per write). None: it was not proposed, retry."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        batch = self._fwd_pending.setdefault(leader, [])
        batch.append((cmd, fut, deadline))
        if len(batch) == 1:
            if self._fwd_in_flight.get(leader):
                loop.call_later(FORWARD_LINGER_S, self._flush_forwards, leader)
            else:
                loop.call_soon(self._flush_forwards, leader)
        res = await fut  # always answered, by its deadline at the latest (_send_batch)
        if res is _PAST_DEADLINE:
            return error_response(self._unavailable())
        if res is None:
            return None
        if "error" in res:
            return json_response(res, errors.HTTP_STATUS.get(res.get("code", 2), 500))
        return self.answer(res)

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

    async def propose(self, cmd: bytes, deadline: float) -> web.Response | None:
        # The runtime fails the future at the deadline (swept every 100 ms): no
        # asyncio.wait_for per request (a future, a timer and two callbacks each).
        try:
            fut = self.rt.propose_app(cmd, max(0.0, deadline - time.monotonic()))
        except (NotLeader, ProposalDropped):
            return None
        self.counters["proposed"] += 1
        try:
            out = await fut
        except TimeoutError:
            return error_response(self._unavailable())
        except ProposalLost:
            return error_response(errors.err(errors.LEADER_CHANGED))
        except RaftError:  # refused when it was to be appended (not leader, full): retry
            return None
        return self.result_response(out.result)

    async def on_leader(
        self,
        request: web.Request,
        raw: bytes,
        act: Callable[[float], Awaitable[web.Response | None]],
        path: str | None = None,
    ) -> web.Response:
        """Run ``act`` here if this node leads, else forward ``raw`` to the leader; retry
        through elections until the deadline. ``act`` returns None for "not leader now"."""
        deadline = time.monotonic() + self.timeout_s
        hops = int(request.headers.get(FORWARD_HEADER, "0") or 0)
        while True:
            rt = self.rt
            if rt.raft.role == Role.LEADER:
                res = await act(deadline)
                if res is not None:
                    return res
            elif rt.raft.leader and rt.raft.leader != rt.id and hops < MAX_HOPS:
                res = await self.forward(path or request.path, raw, rt.raft.leader, deadline, hops)
                if res is not None:
                    return res
            if time.monotonic() + RETRY_S >= deadline:
                return error_response(self._unavailable())
            await asyncio.sleep(RETRY_S)

    async def forward(
        self, path: str, raw: bytes, leader: str, deadline: float, hops: int
    ) -> web.Response | None:
        """POST ``raw`` to the leader; None if it could not be delivered (retry is safe)."""
        if self._session is None:
            return None
        try:
            host, port = self.rt.cluster.node(leader).http
        except KeyError:
            return None
        self.counters["forwarded"] += 1
        remaining = max(0.05, deadline - time.monotonic())
        try:
            async with self._session.post(
                f"http://{host}:{port}{path}",
                data=raw,
                headers={FORWARD_HEADER: str(hops + 1), "Content-Type": "application/json"},
                timeout=aiohttp.ClientTimeout(total=remaining),
            ) as r:
                body = await r.read()
                status = r.status
        except aiohttp.ClientConnectorError:
            return None
        except (TimeoutError, aiohttp.ClientError):
            return error_response(self._unavailable())
        return json_response(self._rehead(body, status), status)

    def _rehead(self, body: bytes, status: int) -> bytes:
        """The leader answered; the header names this member, as etcd's would."""
        if status != 200 or not body.startswith(b'{"header"'):
            return body
        try:
            d = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body
        return orjson.dumps(self.fill(d))

    # ================================================================== reads

    async def read_barrier(self, serializable: bool, deadline: float | None = None) -> KvError | None:
        """Wait until this replica may serve a linearizable read (ReadIndex, §6.4)."""
        if serializable:
            return None
        if deadline is None:
            deadline = time.monotonic() + self.timeout_s
        while True:
            remaining = deadline - time.monotonic()
            try:
                await asyncio.wait_for(asyncio.shield(self._read_index()), max(0.01, remaining))
                return None
            except (ReadNotConfirmed, TimeoutError):
                pass
            if time.monotonic() + RETRY_S >= deadline:
                return self._unavailable()
            await asyncio.sleep(RETRY_S)

    def _read_index(self) -> asyncio.Future[None]:
        """A read point confirmed *after* this call. Reads share ReadIndex requests, one in
        flight at a time: the reads of one loop turn share one request, and those arriving
        while it is in flight all wait for the next (issued after they came, as
        linearizability wants)."""
        fut = self._read_next
        if fut is None:
            loop = asyncio.get_running_loop()
            fut = self._read_next = loop.create_future()
            fut.add_done_callback(_consume)
            if not self._read_busy:
                self._read_busy = True  # launched on the next loop turn: this turn's reads join
                loop.call_soon(self._launch_read)
        return fut

    def _launch_read(self) -> None:
        waiters, self._read_next = self._read_next, None
        if waiters is None:
            self._read_busy = False
            return
        self._read_busy = True
        self._read_gen += 1
        gen = self._read_gen
        loop = asyncio.get_running_loop()

        def finish(exc: BaseException | None) -> None:
            if gen != self._read_gen or not self._read_busy:
                return  # this attempt already timed out
            self._read_busy = False
            timer.cancel()
            if not waiters.done():
                if exc is None:
                    waiters.set_result(None)
                else:
                    waiters.set_exception(exc)
            if self._read_next is not None:
                self._launch_read()

        def done(f: asyncio.Future[int]) -> None:
            exc = ReadNotConfirmed(self.rt.raft.leader) if f.cancelled() else f.exception()
            finish(exc)

        # a lost ReadIndex message must not stall every read behind it
        timer = loop.call_later(READ_ATTEMPT_S, lambda: finish(ReadNotConfirmed(self.rt.raft.leader)))
        try:
            self.rt.linearizable_read().add_done_callback(done)
        except RaftError as e:
            finish(e)

    # ================================================================== leases

    def new_lease_id(self) -> int:
        while True:
            lid = secrets.randbits(63)
            if lid and lid not in self.machine.leases:
                return lid

    def _on_lease(self, what: str, lease_id: int) -> None:
        if what == "grant":
            if self.rt.raft.role == Role.LEADER:
                lease = self.machine.leases.get(lease_id)
                if lease is not None:
                    self.deadlines[lease_id] = time.monotonic() + lease.ttl
        else:
            self.deadlines.pop(lease_id, None)
            self._expiring.pop(lease_id, None)
            if what == "expire":
                self.counters["expired"] += 1

    def renew(self, lease_id: int) -> int:
        """Keepalive on the leader: a fresh deadline; the granted TTL, or 0 if unknown."""
        lease = self.machine.leases.get(lease_id)
        if lease is None:
            return 0
        self.deadlines[lease_id] = time.monotonic() + lease.ttl
        return lease.ttl

    def remaining_s(self, lease_id: int) -> int:
        dl = self.deadlines.get(lease_id)
        lease = self.machine.leases.get(lease_id)
        if lease is None:
            return -1
        if dl is None:
            return lease.ttl
        return int(dl - time.monotonic())

    async def _lease_loop(self) -> None:
        while True:
            await asyncio.sleep(LEASE_TICK_S)
            try:
                self.lease_tick(time.monotonic())
            except Exception:  # never let the clock die; log and go on
                log.exception("kv lease tick failed")

    def lease_tick(self, now: float) -> None:
        rt = self.rt
        if rt.raft.role != Role.LEADER:
            if self.deadlines or self._lease_term != -1:
                self.deadlines.clear()
                self._expiring.clear()
                self._lease_term = -1
            return
        leases = self.machine.leases.leases
        if self._lease_term != rt.raft.term:
            # etcd's Promote: a new leader cannot know the old leader's clock; full TTLs
            self._lease_term = rt.raft.term
            self.deadlines = {lid: now + lease.ttl for lid, lease in leases.items()}
            self._expiring.clear()
        for lid, dl in list(self.deadlines.items()):
            if lid not in leases:
                del self.deadlines[lid]
                continue
            if dl > now or self._expiring.get(lid, 0.0) > now:
                continue
            try:
                fut = rt.propose_app(expire_command(lid))
            except RaftError:
                return
            fut.add_done_callback(_consume)
            self._expiring[lid] = now + EXPIRE_RETRY_S

    def status(self) -> dict[str, Any]:
        st = self.machine.store
        leader = self.rt.raft.leader
        size = str(st.size_bytes + 4096)
        resp: dict[str, Any] = {"header": self.header(str(st.rev)), "version": ETCD_VERSION,
                                "dbSize": size}
        if leader in self.member_ids:
            resp["leader"] = self.member_ids[leader]
        resp["raftIndex"] = str(self.rt.raft.committed)
        resp["raftTerm"] = str(self.rt.raft.term)
        resp["raftAppliedIndex"] = str(self.rt.service.applied_index)
        if not leader:
            resp["errors"] = [errors.NO_LEADER[1]]
        resp["dbSizeInUse"] = size
        return resp


def _consume(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


def kv_app_factory(rt: NodeRuntime, app: web.Application) -> Application:
    """NodeOptions.app_factory: mount the etcd v3 JSON API; return the state machine."""
    from udpraft.kv.http import mount

    node = KVNode(rt)
    mount(app, node)
    app.on_startup.append(node.start)
    app.on_shutdown.append(node.shutdown)
    app.on_cleanup.append(node.stop)
    return node.machine
