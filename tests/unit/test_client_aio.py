"""AsyncClient's in-flight bound and session renewal, against an in-process fake node.

``max_in_flight`` bounds the submits a client has between call and answer: more wait in
FIFO order, a waiter cancelled before or after it was handed a slot gives nothing away,
and the count returns to zero. A submit refused with "expired" is sent again, once, in a
new session (it was not applied).
"""

from __future__ import annotations

import asyncio
from typing import Any

from udpraft.client.aio import AsyncClient
from udpraft.reliability.endpoint import ReliableEndpoint
from udpraft.wire import ClientKind, ClientRequest, ClientResponse, WireContext

SECRET = b"k" * 16
NODE = WireContext("c", SECRET, "n1", 7)


class _GateNode(asyncio.DatagramProtocol):
    """Holds every submit until ``release()``; ``expire`` = client ids refused once."""

    def __init__(self, expire_first_after_open: bool = False) -> None:
        self.ep: ReliableEndpoint[tuple[str, int]] = ReliableEndpoint(NODE)
        self.held: list[tuple[ClientRequest, Any]] = []
        self.log: list[tuple[str, int, bytes]] = []
        self.outstanding_max = 0
        self.expire_once = expire_first_after_open
        self.tr: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.tr = transport  # type: ignore[assignment]

    def outstanding(self) -> int:
        return sum(len(r.body["seqs"]) for r, _ in self.held)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        for d in self.ep.receive_datagram(data, addr, 0.0):
            req = d.msg
            assert isinstance(req, ClientRequest) and req.kind == ClientKind.SUBMIT
            opened = any(cid == req.client_id for cid, _, _ in self.log)
            if self.expire_once and opened:
                self.expire_once = False
                body = {"error": "expired", "message": "session expired"}
                self.ep.send(addr, ClientResponse(req.kind, req.req_id, False, body, "n1"), False, 0.0)
                continue
            if not opened:  # the opening request is answered at once
                self._answer(req, addr)
                continue
            self.held.append((req, addr))
            self.outstanding_max = max(self.outstanding_max, self.outstanding())
        self._flush()

    def _answer(self, req: ClientRequest, addr: Any) -> None:
        done = []
        for seq, blob in zip(req.body["seqs"], req.blobs):
            self.log.append((req.client_id, seq, blob))
            done.append([seq, len(self.log), 1])
        self.ep.send(addr, ClientResponse(req.kind, req.req_id, True, {"done": done}, "n1"), False, 0.0)

    def release(self) -> None:
        held, self.held = self.held, []
        for req, addr in held:
            self._answer(req, addr)
        self._flush()

    def _flush(self) -> None:
        assert self.tr is not None
        for out, to in self.ep.datagrams_to_send(0.0):
            self.tr.sendto(out, to)


async def _node(expire: bool = False) -> tuple[_GateNode, asyncio.DatagramTransport, str]:
    node = _GateNode(expire)
    tr, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: node, local_addr=("127.0.0.1", 0)
    )
    return node, tr, f"127.0.0.1:{tr.get_extra_info('sockname')[1]}"


async def _until(cond: Any, timeout: float = 5.0) -> None:
    end = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < end, "condition not reached"
        await asyncio.sleep(0.005)


def test_in_flight_bound_is_kept_fifo_and_survives_cancellation() -> None:
    async def run() -> None:
        node, tr, addr = await _node()
        c = AsyncClient({"n1": addr}, SECRET, "c", max_in_flight=3)
        try:
            await c.submit(b"open", timeout=5)
            tasks = [asyncio.create_task(c.submit(b"p%d" % i, timeout=10)) for i in range(10)]
            await _until(lambda: node.outstanding() == 3)
            await asyncio.sleep(0.05)
            assert node.outstanding() == 3, "no more than max_in_flight reach the node"
            tasks[5].cancel()  # a waiter that never got a slot
            for _ in range(4):
                node.release()
                await asyncio.sleep(0.05)
            await _until(lambda: sum(t.done() for t in tasks) == 10)
            got = [t.result().index for i, t in enumerate(tasks) if i != 5]
            assert tasks[5].cancelled()
            assert node.outstanding_max == 3
            payloads = [blob for _, _, blob in node.log[1:]]
            assert payloads == [b"p%d" % i for i in range(10) if i != 5], "admitted in FIFO order"
            assert sorted(got) == got and len(set(got)) == 9
            assert c._in_flight == 0 and not c._slot_waiters
        finally:
            await c.close()
            tr.close()

    asyncio.run(run())


def test_waiter_cancelled_after_being_handed_a_slot_passes_it_on() -> None:
    async def run() -> None:
        node, tr, addr = await _node()
        c = AsyncClient({"n1": addr}, SECRET, "c", max_in_flight=2)
        try:
            await c.submit(b"open", timeout=5)
            a = asyncio.create_task(c.submit(b"a", timeout=10))
            b = asyncio.create_task(c.submit(b"b", timeout=10))
            await _until(lambda: node.outstanding() == 2)
            w1 = asyncio.create_task(c.submit(b"w1", timeout=10))
            w2 = asyncio.create_task(c.submit(b"w2", timeout=10))
            await asyncio.sleep(0.02)
            assert len(c._slot_waiters) == 2 and c._in_flight == 2
            c._release_slot()  # as a finishing submit would: the slot goes to w1 ...
            w1.cancel()  # ... which is cancelled before it runs: w2 must get the slot
            await _until(lambda: node.outstanding() == 3)
            assert [blob for _, _, blob in node.log] == [b"open"]
            assert {blob for r, _ in node.held for blob in r.blobs} == {b"a", b"b", b"w2"}
            c._in_flight += 1  # give back the slot taken out of a's hands above
            node.release()
            await asyncio.gather(a, b, w2)
            assert w1.cancelled() and c._in_flight == 0 and not c._slot_waiters
        finally:
            await c.close()
            tr.close()

    asyncio.run(run())


def test_expired_session_submit_is_sent_again_in_a_new_session() -> None:
    async def run() -> tuple[list[tuple[str, int, bytes]], int]:
        node, tr, addr = await _node(expire=True)
        c = AsyncClient({"n1": addr}, SECRET, "c")
        try:
            await c.submit(b"open", timeout=5)
            first = c.core.client_id
            t = asyncio.create_task(c.submit(b"again", timeout=10))
            await _until(lambda: len(node.log) == 2)  # re-opened: answered at once
            res = await t
            assert c.core.client_id != first
            return node.log, res.index
        finally:
            await c.close()
            tr.close()

    log, index = asyncio.run(run())
    assert [blob for _, _, blob in log] == [b"open", b"again"], "applied once, in the new session"
    assert log[0][0] != log[1][0] and index == 2


def test_new_result_is_a_plain_frozen_result() -> None:
    import dataclasses

    from udpraft.client.core import Result, new_result

    r = new_result(7, 3)
    assert type(r) is Result and r == Result(7, 3) and hash(r) == hash(Result(7, 3))
    assert (r.index, r.term) == (7, 3) and repr(r) == "Result(index=7, term=3)"
    try:
        r.index = 8  # type: ignore[misc]
    except dataclasses.FrozenInstanceError:
        pass
    else:
        raise AssertionError("a Result must stay immutable")
