"""``AsyncClient``: the asyncio driver, with many submits in flight batched into few datagrams.

How this works: ``submit`` gets a sequence number and a future and joins an outbox. Once per
loop turn the outbox is packed into SUBMIT requests (up to ``batch_bytes_max`` of payload
each); every request has a retry deadline (same request id and sequence numbers on every
try, so nothing applies twice) and goes to the believed leader. One timer per client, armed
for the earliest deadline, retries what timed out (not a timer per request: creating and
cancelling one costs ~2 us a request). An answer resolves the futures of
the sequence numbers it reports done; the rest are retried. The session's first request
travels alone; later ones pipeline up to ``max_in_flight``.

Sharing a socket (:class:`ClientMux`): many sessions (say one per user of a load
generator) can share one socket: ``mux.client()`` makes an ``AsyncClient`` that hands its
requests to the mux instead of sending them itself. Once per loop turn the mux packs the
requests of all its sessions bound for one node into one CLIENT_BATCH datagram, and the
node answers them together in CLIENT_BATCH_RESP datagrams; the mux routes every answer
to its session by request id (unique across the mux). Each request keeps its own client
id, sequence numbers and retry timer, so exactly-once and retries are per session, as
with a socket of its own; only the datagrams are shared.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from udpraft.client.blocking import TRY_TIMEOUT_S, TRY_TIMEOUT_S_MAX, _secret_from_env
from udpraft.client.core import (
    ClientCore,
    Entry,
    NotApplied,
    Result,
    cluster_file_args,
    entries_of,
    expired_error,
    new_result,
    parse_nodes,
    responses_in,
)
from udpraft.errors import NoQuorum, Rejected, SessionExpired, Timeout
from udpraft.wire import (
    ClientBatch,
    ClientKind,
    ClientRequest,
    ClientResponse,
    EncodeError,
    WireContext,
    encode,
)

BATCH_BYTES_MAX = 32_000
BATCH_SEQS_MAX = 512


@dataclass(slots=True)
class _Call:
    req: ClientRequest
    data: bytes
    deadline: float
    futures: dict[int, asyncio.Future[Any]] = field(default_factory=dict)  # seq (or 0) -> future
    attempt: int = 0
    try_s: float = TRY_TIMEOUT_S
    due: float = 0.0  # loop time at which this try times out (inf: a resend is scheduled)


class _Proto(asyncio.DatagramProtocol):
    def __init__(self, owner: AsyncClient | ClientMux) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.owner._on_datagram(data)

    def error_received(self, exc: Exception) -> None:
        self.owner.errors += 1


class AsyncClient:
    def __init__(
        self,
        nodes: list[str] | dict[str, str],
        secret: bytes | None = None,
        cluster_id: str = "udpraft",
        client_id: str | None = None,
        max_in_flight: int = 4096,
        mux: ClientMux | None = None,
    ) -> None:
        addrs = parse_nodes(nodes)
        self.core = ClientCore(addrs, cluster_id, secret or _secret_from_env(), client_id)
        self.max_in_flight = max_in_flight
        self.mux = mux
        self._new_req_id = mux.new_req_id if mux is not None else self.core.new_req_id
        self._transport: asyncio.DatagramTransport | None = None
        self._calls: dict[int, _Call] = {}
        self._outbox: list[tuple[int, bytes, asyncio.Future[Any], float]] = []
        self._flush_scheduled = False
        self._sweep: asyncio.TimerHandle | None = None
        self._sweep_at = 0.0
        self._opening: asyncio.Future[None] | None = None
        self._in_flight = 0  # submits between entry and answer, at most max_in_flight
        self._slot_waiters: deque[asyncio.Future[None]] = deque()  # FIFO beyond that
        self.errors = 0

    @classmethod
    def from_cluster_file(cls, path: str = "data/cluster.json", **kw: Any) -> AsyncClient:
        return cls(**cluster_file_args(path), **kw)

    async def _ensure(self) -> asyncio.DatagramTransport:
        if self._transport is None:
            if self.mux is not None:
                tr = await self.mux._ensure()
            else:
                tr = await _open_socket(self)
            self._transport = tr
        return self._transport

    async def close(self) -> None:
        mux = self.mux
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for req_id, call in list(self._calls.items()):
            if mux is not None:
                mux.routes.pop(req_id, None)
            for f in call.futures.values():
                if not f.done():
                    f.set_exception(Timeout("client closed"))
        self._calls.clear()
        if self._transport is not None:
            if mux is None:
                self._transport.close()
            self._transport = None

    async def __aenter__(self) -> AsyncClient:
        await self._ensure()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ public API

    async def submit(self, data: bytes, timeout: float = 5.0) -> Result:
        if self._transport is None:
            await self._ensure()
        deadline = time.monotonic() + timeout
        if self._in_flight >= self.max_in_flight or self._slot_waiters:
            await self._take_slot()  # returns holding a slot
        else:
            self._in_flight += 1
        try:
            if self.core.opened:  # the common case, inline: one coroutine frame per submit
                try:
                    return await self._enqueue(bytes(data), deadline)
                except NotApplied:
                    self._reset_session()  # refused on its only try: send it in a new session
                except SessionExpired:
                    self._reset_session()  # an earlier try may have applied: outcome unknown
                    raise
            for _ in range(2):
                try:
                    return await self._submit_once(bytes(data), deadline)
                except NotApplied:
                    self._reset_session()
                except SessionExpired:
                    self._reset_session()
                    raise
            raise SessionExpired("the cluster keeps expiring this client's sessions")
        finally:
            self._release_slot()

    def _release_slot(self) -> None:
        """Hand this submit's slot to the oldest live waiter, or free it."""
        waiters = self._slot_waiters
        while waiters:
            w = waiters.popleft()
            if not w.done():
                w.set_result(None)  # the slot passes on: _in_flight stays
                return
        self._in_flight -= 1

    async def _take_slot(self) -> None:
        """Wait (FIFO) for a slot while ``max_in_flight`` submits are in flight. Waiters
        exist only while every slot is taken: a slot is freed only when none is waiting."""
        w: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._slot_waiters.append(w)
        try:
            await w
        except asyncio.CancelledError:
            if w.done() and not w.cancelled():  # handed a slot, then cancelled: pass it on
                self._release_slot()
            raise

    def _enqueue(self, data: bytes, deadline: float) -> asyncio.Future[Result]:
        """Put a submit of the open session in the outbox (packed once per loop turn)."""
        fut: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._outbox.append((self.core.next_seq(), data, fut, deadline))
        if not self._flush_scheduled:
            self._schedule_flush()
        return fut

    def _schedule_flush(self) -> None:
        self._flush_scheduled = True
        if self.mux is not None:
            self.mux.dirty(self)  # packed in the mux's own flush, this loop turn
        else:
            asyncio.get_running_loop().call_soon(self._flush)

    async def _submit_once(self, data: bytes, deadline: float) -> Result:
        loop = asyncio.get_running_loop()
        while not self.core.opened:
            if self._opening is None:
                # The first request of a session travels alone (it opens the session, §6.3).
                opening: asyncio.Future[None] = loop.create_future()
                self._opening = opening
                fut: asyncio.Future[Result] = loop.create_future()
                self._start_submit([(self.core.next_seq(), data, fut)], deadline)
                try:
                    res = await fut
                except BaseException:
                    self._reset_session()
                    opening.set_result(None)
                    raise
                self.core.opened = True
                self._opening = None
                opening.set_result(None)
                return res
            await asyncio.shield(self._opening)
        return await self._enqueue(data, deadline)

    def _reset_session(self) -> None:
        self.core.new_session()
        self._opening = None

    async def retrieve(self, start: int = 1, timeout: float = 5.0) -> list[Entry]:
        out: list[Entry] = []
        nxt = max(1, int(start))
        deadline = time.monotonic() + timeout
        while True:
            resp = await self._simple(ClientKind.RETRIEVE, {"start": nxt}, deadline)
            ents = entries_of(resp, nxt)
            if ents is None:
                raise Rejected("malformed retrieve answer")
            out.extend(ents)
            if not resp.body.get("more"):
                return out
            nxt = int(resp.body.get("next", nxt + len(ents)))

    async def status(self, timeout: float = 1.0) -> list[dict[str, Any]]:
        await self._ensure()
        out = []
        for nid in self.core.nodes:
            try:
                resp = await self._simple(ClientKind.STATUS, {}, time.monotonic() + timeout, nid)
                out.append({**resp.body, "reachable": True})
            except (Timeout, NoQuorum, Rejected):
                out.append({"id": nid, "reachable": False})
        return out

    # ------------------------------------------------------------------ plumbing

    async def _simple(
        self, kind: ClientKind, body: dict[str, Any], deadline: float, node: str = ""
    ) -> ClientResponse:
        await self._ensure()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[ClientResponse] = loop.create_future()
        req = self.core.simple_request(kind, self._new_req_id(), body)
        call = _Call(req, b"" if self.mux else self.core.encode(req), deadline, {0: fut})
        self._track(call)
        self._send(call, node)
        return await fut

    def _flush(self) -> None:
        self._flush_scheduled = False
        box, self._outbox = self._outbox, []
        batch: list[tuple[int, bytes, asyncio.Future[Any]]] = []
        size = 0
        deadline = 0.0
        for seq, data, fut, dl in box:
            if batch and (size + len(data) > BATCH_BYTES_MAX or len(batch) >= BATCH_SEQS_MAX):
                self._start_submit(batch, deadline)
                batch, size, deadline = [], 0, 0.0
            batch.append((seq, data, fut))
            size += len(data) + 16
            deadline = max(deadline, dl)
        if batch:
            self._start_submit(batch, deadline)

    def _start_submit(self, batch: list[tuple[int, bytes, asyncio.Future[Any]]], deadline: float) -> None:
        core = self.core
        req = core.submit_request(self._new_req_id(), [s for s, _, _ in batch], [d for _, d, _ in batch])
        futures = {s: f for s, _, f in batch}
        try:
            data = b"" if self.mux else core.encode(req)
        except EncodeError as e:  # e.g. a payload too big for one datagram
            for f in futures.values():
                if not f.done():
                    f.set_exception(Rejected(str(e)))
            return
        call = _Call(req, data, deadline, futures)
        self._track(call)
        self._send(call)

    def _track(self, call: _Call) -> None:
        self._calls[call.req.req_id] = call
        if self.mux is not None:
            self.mux.routes[call.req.req_id] = self

    def _send(self, call: _Call, node: str = "") -> None:
        tr = self._transport
        if tr is None:
            return
        if node:
            addr = self.core.nodes[node]
        else:
            _, addr = self.core.target(call.attempt)
        if self.mux is not None:
            self.mux.send(call.req, addr)
        else:
            if call.attempt:  # a retry: same request, new message id (nodes dedupe by id)
                call.data = self.core.encode(call.req)
            tr.sendto(call.data, addr)
        call.attempt += 1
        loop = asyncio.get_running_loop()
        wait = min(call.try_s, max(0.0, call.deadline - time.monotonic()))
        call.due = due = loop.time() + wait
        if self._sweep is None or due < self._sweep_at:
            self._arm(loop, due)

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
        self._sweep_at = when
        self._sweep = loop.call_at(when, self._on_sweep)

    def _on_sweep(self) -> None:
        """Retry (or give up on) every call whose try timed out; re-arm for the next."""
        self._sweep = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        for req_id, call in list(self._calls.items()):
            if call.due <= now:
                self._on_timeout(req_id)
        nxt = min((c.due for c in self._calls.values()), default=float("inf"))
        if nxt != float("inf") and (self._sweep is None or nxt < self._sweep_at):
            self._arm(loop, nxt)

    def _refuse(self, req: ClientRequest, why: str) -> None:
        """The mux could not encode ``req``: fail its call at once."""
        call = self._calls.get(req.req_id)
        if call is not None:
            self._finish(call, Rejected(why))

    def _on_timeout(self, req_id: int) -> None:
        call = self._calls.get(req_id)
        if call is None:
            return
        if time.monotonic() >= call.deadline:
            self._finish(call, Timeout("no answer in time"))
            return
        self.core.forget_leader()
        call.try_s = min(call.try_s * 1.5, TRY_TIMEOUT_S_MAX)
        self._send(call)

    def _finish(self, call: _Call, exc: BaseException | None = None) -> None:
        self._calls.pop(call.req.req_id, None)
        if self.mux is not None:
            self.mux.routes.pop(call.req.req_id, None)
        for f in call.futures.values():
            if not f.done():
                f.set_exception(exc or Timeout("no answer in time"))

    def _on_datagram(self, data: bytes) -> None:
        for resp in self.core.parse_all(data):
            self._on_response(resp)

    def _on_response(self, resp: ClientResponse) -> None:
        call = self._calls.get(resp.req_id)
        if call is None or resp.kind != call.req.kind:
            return
        if resp.ok:
            if resp.kind != ClientKind.SUBMIT:
                fut = call.futures.get(0)
                if fut is not None and not fut.done():
                    fut.set_result(resp)
                self._finish(call)
                return
            for seq, index, term in resp.body.get("done", []):
                f = call.futures.pop(seq, None)
                if f is not None and not f.done():
                    f.set_result(new_result(int(index), int(term)))
            if not call.futures:
                self._finish(call)
            return
        code = str(resp.body.get("error", ""))
        if code == "expired":
            self._finish(call, expired_error(call.attempt, str(resp.body.get("message", ""))))
        elif code in ("too_large", "bad_request"):
            self._finish(call, Rejected(str(resp.body.get("message", code))))
        elif code in ("not_leader", "no_leader", "busy", "unavailable"):
            call.due = float("inf")  # not a timeout: _resend sends it again after the delay
            delay = 0.0 if (code == "not_leader" and resp.leader_hint) else 0.05
            if time.monotonic() + delay >= call.deadline:
                self._finish(call, NoQuorum(code) if code == "no_leader" else Timeout(code))
                return
            asyncio.get_running_loop().call_later(delay, self._resend, call.req.req_id)
        else:
            self._finish(call, Rejected(f"request refused: {resp.body}"))

    def _resend(self, req_id: int) -> None:
        call = self._calls.get(req_id)
        if call is not None:
            self._send(call)


async def _open_socket(owner: AsyncClient | ClientMux) -> asyncio.DatagramTransport:
    loop = asyncio.get_running_loop()
    tr, _ = await loop.create_datagram_endpoint(lambda: _Proto(owner), local_addr=("0.0.0.0", 0))
    sock = tr.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    return tr


class ClientMux:
    """One UDP socket shared by many :class:`AsyncClient` sessions (see the module doc).

    ``mux.client()`` makes a session on it; ``await mux.close()`` closes the socket (close
    the sessions first). Requests of all sessions bound for one node in one loop turn
    travel in CLIENT_BATCH datagrams of up to ``max_batch_bytes``.
    """

    def __init__(
        self,
        nodes: list[str] | dict[str, str],
        secret: bytes | None = None,
        cluster_id: str = "udpraft",
        max_batch_bytes: int = 48_000,
    ) -> None:
        self._nodes = nodes
        self._secret = secret or _secret_from_env()
        self._cluster_id = cluster_id
        self.max_batch_bytes = max_batch_bytes
        self.ctx = WireContext(
            cluster_id=cluster_id,
            secret=self._secret,
            node_id="m-" + secrets.token_hex(8),
            incarnation=secrets.randbelow(2**62) + 1,
        )
        self.routes: dict[int, AsyncClient] = {}  # request id -> the session waiting for it
        self.new_req_id = itertools.count(1).__next__
        self._msg_ids = itertools.count(1)
        self._queue: dict[tuple[str, int], list[ClientRequest]] = {}
        self._dirty: list[AsyncClient] = []
        self._flush_scheduled = False
        self._transport: asyncio.DatagramTransport | None = None
        self._opening: asyncio.Future[asyncio.DatagramTransport] | None = None
        self.errors = 0
        self.datagrams_out = 0
        self.requests_out = 0

    @classmethod
    def from_cluster_file(cls, path: str = "data/cluster.json", **kw: Any) -> ClientMux:
        return cls(**cluster_file_args(path), **kw)

    def client(self, **kw: Any) -> AsyncClient:
        """A new session (its own client id and sequence numbers) on this socket."""
        return AsyncClient(self._nodes, self._secret, self._cluster_id, mux=self, **kw)

    async def _ensure(self) -> asyncio.DatagramTransport:
        if self._transport is not None:
            return self._transport
        if self._opening is None:
            self._opening = asyncio.get_running_loop().create_future()
            try:
                tr = await _open_socket(self)
            except BaseException as e:
                self._opening.set_exception(e)
                self._opening = None
                raise
            self._transport = tr
            self._opening.set_result(tr)
            return tr
        return await asyncio.shield(self._opening)

    async def close(self) -> None:
        self._queue.clear()
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        self._opening = None

    async def __aenter__(self) -> ClientMux:
        await self._ensure()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def dirty(self, client: AsyncClient) -> None:
        """``client`` has submits to pack: its ``_flush`` runs at the start of ours."""
        self._dirty.append(client)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def send(self, req: ClientRequest, addr: tuple[str, int]) -> None:
        """Queue ``req`` for ``addr``; the queue goes out at the end of this loop turn."""
        q = self._queue.get(addr)
        if q is None:
            self._queue[addr] = [req]
        else:
            q.append(req)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        try:  # the sessions' own flushes queue their requests (send() sees a flush scheduled)
            while self._dirty:
                dirty, self._dirty = self._dirty, []
                for c in dirty:
                    c._flush()
        finally:
            self._flush_scheduled = False
        queue, self._queue = self._queue, {}
        tr = self._transport
        if tr is None:
            return
        limit = self.max_batch_bytes
        for addr, reqs in queue.items():
            group: list[ClientRequest] = []
            size = 0
            for r in reqs:
                n = 64 + len(r.client_id) + sum(map(len, r.blobs)) + 12 * len(r.body.get("seqs", ()))
                if group and (size + n > limit or len(group) >= 1024):
                    self._send_group(tr, addr, group)
                    group, size = [], 0
                group.append(r)
                size += n
            if group:
                self._send_group(tr, addr, group)

    def _send_group(
        self, tr: asyncio.DatagramTransport, addr: tuple[str, int], group: list[ClientRequest]
    ) -> None:
        try:
            data = encode(ClientBatch(tuple(group)), self.ctx, msg_id=next(self._msg_ids))
        except EncodeError as e:
            if len(group) > 1:  # the estimate was short: send in halves
                half = len(group) // 2
                self._send_group(tr, addr, group[:half])
                self._send_group(tr, addr, group[half:])
                return
            owner = self.routes.get(group[0].req_id)
            if owner is not None:
                owner._refuse(group[0], str(e))
            return
        self.datagrams_out += 1
        self.requests_out += len(group)
        tr.sendto(data, addr)

    def _on_datagram(self, data: bytes) -> None:
        routes = self.routes
        for resp in responses_in(data, self.ctx):
            owner = routes.get(resp.req_id)
            if owner is not None:
                if resp.leader_hint:
                    owner.core.note_leader(resp.leader_hint)
                owner._on_response(resp)
