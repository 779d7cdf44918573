"""``AsyncClient``: the asyncio driver, with many submits in flight batched into few datagrams.

How this works: ``submit`` gets a sequence number and a future and joins an outbox. Once per
loop turn the outbox is packed into SUBMIT requests (up to ``batch_bytes_max`` of payload
each); every request has a retry timer (same request id and sequence numbers on every try,
so nothing applies twice) and goes to the believed leader. An answer resolves the futures of
the sequence numbers it reports done; the rest are retried. The session's first request
travels alone; later ones pipeline up to ``max_in_flight``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from udpraft.client.blocking import TRY_TIMEOUT_S, TRY_TIMEOUT_S_MAX, _secret_from_env
from udpraft.client.core import (
    ClientCore,
    Entry,
    Result,
    cluster_file_args,
    entries_of,
    parse_nodes,
)
from udpraft.errors import NoQuorum, Rejected, SessionExpired, Timeout
from udpraft.wire import ClientKind, ClientRequest, ClientResponse

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
    timer: asyncio.TimerHandle | None = None


class _Proto(asyncio.DatagramProtocol):
    def __init__(self, owner: AsyncClient) -> None:
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
    ) -> None:
        addrs = parse_nodes(nodes)
        self.core = ClientCore(addrs, cluster_id, secret or _secret_from_env(), client_id)
        self.max_in_flight = max_in_flight
        self._transport: asyncio.DatagramTransport | None = None
        self._calls: dict[int, _Call] = {}
        self._outbox: list[tuple[int, bytes, asyncio.Future[Any], float]] = []
        self._flush_scheduled = False
        self._opening: asyncio.Future[None] | None = None
        self._slots: asyncio.Semaphore | None = None
        self.errors = 0

    @classmethod
    def from_cluster_file(cls, path: str = "data/cluster.json", **kw: Any) -> AsyncClient:
        return cls(**cluster_file_args(path), **kw)

    async def _ensure(self) -> asyncio.DatagramTransport:
        if self._transport is None:
            loop = asyncio.get_running_loop()
            tr, _ = await loop.create_datagram_endpoint(lambda: _Proto(self), local_addr=("0.0.0.0", 0))
            sock = tr.get_extra_info("socket")
            if sock is not None:
                import socket as _s

                sock.setsockopt(_s.SOL_SOCKET, _s.SO_RCVBUF, 4 << 20)
                sock.setsockopt(_s.SOL_SOCKET, _s.SO_SNDBUF, 4 << 20)
            self._transport = tr
            self._slots = asyncio.Semaphore(self.max_in_flight)
        assert self._transport is not None
        return self._transport

    async def close(self) -> None:
        for call in list(self._calls.values()):
            if call.timer:
                call.timer.cancel()
            for f in call.futures.values():
                if not f.done():
                    f.set_exception(Timeout("client closed"))
        self._calls.clear()
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    async def __aenter__(self) -> AsyncClient:
        await self._ensure()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ public API

    async def submit(self, data: bytes, timeout: float = 5.0) -> Result:
        await self._ensure()
        assert self._slots is not None
        deadline = time.monotonic() + timeout
        async with self._slots:
            for _ in range(3):
                try:
                    return await self._submit_once(bytes(data), deadline)
                except SessionExpired:
                    self._reset_session()  # refused, so not applied: retry in a new session
            raise SessionExpired("the cluster keeps expiring this client's sessions")

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
        fut2: asyncio.Future[Result] = loop.create_future()
        self._outbox.append((self.core.next_seq(), data, fut2, deadline))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return await fut2

    def _reset_session(self) -> None:
        self.core.new_session()
        self._opening = None

    async def retrieve(self, start: int = 1, timeout: float = 5.0) -> list[Entry]:
        out: list[Entry] = []
        nxt = max(1, int(start))
        deadline = time.monotonic() + timeout
        while True:
            resp = await self._simple(ClientKind.RETRIEVE, {"start": nxt}, deadline)
            ents = entries_of(resp)
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
        req = self.core.simple_request(kind, self.core.new_req_id(), body)
        call = _Call(req, self.core.encode(req), deadline, {0: fut})
        self._calls[req.req_id] = call
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
        req = core.submit_request(core.new_req_id(), [s for s, _, _ in batch], [d for _, d, _ in batch])
        call = _Call(req, core.encode(req), deadline, {s: f for s, _, f in batch})
        self._calls[req.req_id] = call
        self._send(call)

    def _send(self, call: _Call, node: str = "") -> None:
        tr = self._transport
        if tr is None:
            return
        if node:
            addr = self.core.nodes[node]
        else:
            _, addr = self.core.target(call.attempt)
        call.attempt += 1
        tr.sendto(call.data, addr)
        loop = asyncio.get_running_loop()
        wait = min(call.try_s, max(0.0, call.deadline - time.monotonic()))
        call.timer = loop.call_later(wait, self._on_timeout, call.req.req_id)

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
        if call.timer:
            call.timer.cancel()
        for f in call.futures.values():
            if not f.done():
                f.set_exception(exc or Timeout("no answer in time"))

    def _on_datagram(self, data: bytes) -> None:
        resp = self.core.parse(data)
        if resp is None:
            return
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
                    f.set_result(Result(int(index), int(term)))
            if not call.futures:
                self._finish(call)
            return
        code = str(resp.body.get("error", ""))
        if code == "expired":
            self._finish(call, SessionExpired(str(resp.body.get("message", ""))))
        elif code in ("too_large", "bad_request"):
            self._finish(call, Rejected(str(resp.body.get("message", code))))
        elif code in ("not_leader", "no_leader", "busy", "unavailable"):
            if call.timer:
                call.timer.cancel()
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
            if call.timer:
                call.timer.cancel()
            self._send(call)
