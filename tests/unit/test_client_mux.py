"""Client batches: several sessions' requests in one datagram, answers coalesced per address.

Wire round trips and strict decoding of CLIENT_BATCH / CLIENT_BATCH_RESP, the endpoint's
expansion of a batch into one delivery per request and its coalescing of responses (only
to addresses that sent a batch), and ClientMux + AsyncClient against an in-process fake
node that drops datagrams: every session's submits apply exactly once, in its own session.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from udpraft.client.aio import AsyncClient, ClientMux
from udpraft.client.core import ClientCore
from udpraft.reliability.endpoint import ReliableEndpoint
from udpraft.wire import (
    ClientBatch,
    ClientKind,
    ClientRequest,
    ClientResponse,
    ClientResponses,
    Decoded,
    Dropped,
    DropReason,
    MsgType,
    WireContext,
    decode,
    encode,
)
from udpraft.wire.codec import encode_body

SECRET = b"k" * 16
NODE = WireContext("c", SECRET, "n1", 7)
MUX = WireContext("c", SECRET, "m-1", 9)
ADDR = ("127.0.0.1", 5000)


def _req(i: int, cid: str = "a", blobs: tuple[bytes, ...] = (b"x",)) -> ClientRequest:
    return ClientRequest(ClientKind.SUBMIT, i, cid, {"seqs": list(range(1, len(blobs) + 1))}, blobs)


def _resp(i: int, blobs: tuple[bytes, ...] = ()) -> ClientResponse:
    return ClientResponse(ClientKind.SUBMIT, i, True, {"done": [[1, i, 1]]}, "n1", blobs)


def test_batch_and_responses_round_trip() -> None:
    batch = ClientBatch((_req(1, "a"), _req(2, "b", (b"", b"yz")), ClientRequest(ClientKind.STATUS, 3, "c")))
    d = decode(encode(batch, MUX, msg_id=1), NODE)
    assert isinstance(d, Decoded) and d.msg == batch and d.mtype is MsgType.CLIENT_BATCH
    resps = ClientResponses((_resp(1), _resp(2, (b"ab",)), ClientResponse(ClientKind.STATUS, 3, False)))
    d = decode(encode(resps, NODE, msg_id=2), MUX)
    assert isinstance(d, Decoded) and d.msg == resps


@pytest.mark.parametrize(
    "head",
    [
        [],  # empty batch
        [0, 1, "a", {}],  # not a multiple of five fields
        [9, 1, "a", {}, []],  # unknown kind
        [0, 1, "a", {}, [5]],  # blob past the end
        [0, -1, "a", {}, []],  # bad request id
        [0, 1, 7, {}, []],  # client id not a string
        [0, 1, "a", [], []],  # body not an object
    ],
)
def test_bad_batches_are_dropped(head: list[Any]) -> None:
    import orjson

    from udpraft.wire.codec import EncodedBody, seal
    from udpraft.wire.envelope import BODY_LEN

    raw = orjson.dumps(head)
    body = EncodedBody(MsgType.CLIENT_BATCH, "", "", BODY_LEN.pack(len(raw)) + raw + b"z")
    got = decode(seal(body, MUX, msg_id=1), NODE)
    assert isinstance(got, Dropped) and got.reason in (DropReason.BAD_BODY, DropReason.BAD_FIELD)


def test_endpoint_delivers_each_request_and_coalesces_answers() -> None:
    ep: ReliableEndpoint[tuple[str, int]] = ReliableEndpoint(NODE)
    plain = ("127.0.0.1", 6000)
    # a plain client's answers stay plain, whatever their number
    ep.send(plain, _resp(1), False, 0.0)
    ep.send(plain, _resp(2), False, 0.0)
    out = ep.datagrams_to_send(0.0)
    assert [type(_msg(d)) for d, _ in out] == [ClientResponse, ClientResponse]
    # a batch from ADDR: one delivery per request, in order, each with its own client id
    got = ep.receive_datagram(encode(ClientBatch((_req(1, "a"), _req(2, "b"))), MUX, msg_id=1), ADDR, 0.0)
    assert [(d.msg.client_id, d.msg.req_id) for d in got] == [("a", 1), ("b", 2)]
    assert ep.counters["client_batches_in"] == 1 and ep.counters["client_batched_requests"] == 2
    # answers to ADDR are held, then leave together; one carrying blobs goes alone
    for i in range(1, 4):
        ep.send(ADDR, _resp(i), False, 0.0)
    ep.send(ADDR, _resp(4, (b"blob",)), False, 0.0)
    assert ep.next_deadline() == 0.0
    out = ep.datagrams_to_send(0.0)
    msgs = [_msg(d) for d, a in out if a == ADDR]
    assert isinstance(msgs[0], ClientResponses) and [r.req_id for r in msgs[0].responses] == [1, 2, 3]
    assert isinstance(msgs[1], ClientResponse) and msgs[1].req_id == 4
    # a lone answer goes plain; nothing is left held
    ep.send(ADDR, _resp(5), False, 0.0)
    assert [type(_msg(d)) for d, _ in ep.datagrams_to_send(0.0)] == [ClientResponse]
    assert ep.datagrams_to_send(0.0) == []


def test_held_answers_leave_before_datagrams_queued_earlier() -> None:
    """A flush sends the client answers it holds first: a message queued to a peer before
    them (a commit notice) goes after them, and per destination the order is kept."""
    ep: ReliableEndpoint[tuple[str, int]] = ReliableEndpoint(NODE)
    ep.receive_datagram(encode(ClientBatch((_req(1),)), MUX, msg_id=1), ADDR, 0.0)
    peer = ("127.0.0.1", 6000)
    ep.send(peer, _req(7, "p"), False, 0.0)  # queued first, to another address
    ep.send(peer, _req(8, "p"), False, 0.0)
    for i in (1, 2):
        ep.send(ADDR, _resp(i), False, 0.0)
    out = ep.datagrams_to_send(0.0)
    assert [a for _, a in out] == [ADDR, peer, peer]
    assert [r.req_id for r in _responses(_msg(out[0][0]))] == [1, 2]
    assert [_msg(d).req_id for d, _ in out[1:]] == [7, 8]
    # datagrams queued before and after an answer was held: the answer still goes first
    ep.send(peer, _req(9, "p"), False, 0.0)
    ep.send(ADDR, _resp(3, (b"blob",)), False, 0.0)  # held, alone (it carries a blob)
    ep.send(peer, _req(10, "p"), False, 0.0)
    out = ep.datagrams_to_send(0.0)
    assert [a for _, a in out] == [ADDR, peer, peer]
    assert [_msg(d).req_id for d, _ in out] == [3, 9, 10]


def test_endpoint_splits_answers_that_do_not_fit_one_datagram() -> None:
    ep: ReliableEndpoint[tuple[str, int]] = ReliableEndpoint(NODE)
    ep.receive_datagram(encode(ClientBatch((_req(1),)), MUX, msg_id=1), ADDR, 0.0)
    big = [ClientResponse(ClientKind.SUBMIT, i, True, {"done": [[i, i, 1]] * 300}, "n1") for i in range(40)]
    for r in big:
        ep.send(ADDR, r, False, 0.0)
    out = ep.datagrams_to_send(0.0)
    assert len(out) > 1 and all(len(d) <= NODE.max_datagram_bytes for d, _ in out)
    seen = [r.req_id for d, _ in out for r in _responses(_msg(d))]
    assert sorted(seen) == list(range(40))


def test_client_core_parses_plain_and_coalesced_answers() -> None:
    core = ClientCore({"n1": ("127.0.0.1", 1)}, "c", SECRET)
    both = ClientResponses((_resp(1), _resp(2)))
    assert [r.req_id for r in core.parse_all(encode(both, NODE, msg_id=1))] == [1, 2]
    assert core.leader == "n1"
    one = core.parse(encode(_resp(3), NODE, msg_id=2))
    assert one is not None and one.req_id == 3
    assert core.parse_all(encode(_req(1), NODE, msg_id=3)) == []


def _msg(data: bytes) -> Any:
    d = decode(data, MUX)
    assert isinstance(d, Decoded), d
    return d.msg


def _responses(m: Any) -> list[ClientResponse]:
    return list(m.responses) if isinstance(m, ClientResponses) else [m]


# ----------------------------------------------------------------------------- end to end


class _FakeNode(asyncio.DatagramProtocol):
    """A one-node 'cluster': applies each (client, seq) once, answers from its table, and
    drops every ``drop_every``-th datagram each way (so clients must retry)."""

    def __init__(self, drop_every: int) -> None:
        self.ep: ReliableEndpoint[tuple[str, int]] = ReliableEndpoint(NODE)
        self.applied: dict[tuple[str, int], tuple[int, bytes]] = {}
        self.log: list[bytes] = []
        self.drop_every = drop_every
        self.n_in = self.n_out = 0
        self.tr: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.tr = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.n_in += 1
        if self.n_in % self.drop_every == 0:
            return
        for d in self.ep.receive_datagram(data, addr, 0.0):
            req = d.msg
            assert isinstance(req, ClientRequest)
            done = []
            for seq, blob in zip(req.body["seqs"], req.blobs):
                key = (req.client_id, seq)
                if key not in self.applied:
                    self.log.append(blob)
                    self.applied[key] = (len(self.log), blob)
                done.append([seq, self.applied[key][0], 1])
            self.ep.send(addr, ClientResponse(req.kind, req.req_id, True, {"done": done}, "n1"), False, 0.0)
        assert self.tr is not None
        for out, to in self.ep.datagrams_to_send(0.0):
            self.n_out += 1
            if self.n_out % self.drop_every:
                self.tr.sendto(out, to)


@pytest.mark.parametrize("drop_every", [1_000_000, 7])
def test_mux_sessions_apply_exactly_once_through_loss(drop_every: int) -> None:
    async def run() -> tuple[_FakeNode, list[list[int]], ClientMux]:
        loop = asyncio.get_running_loop()
        node = _FakeNode(drop_every)
        tr, _ = await loop.create_datagram_endpoint(lambda: node, local_addr=("127.0.0.1", 0))
        port = tr.get_extra_info("sockname")[1]
        mux = ClientMux({"n1": f"127.0.0.1:{port}"}, SECRET, "c")
        clients = [mux.client() for _ in range(8)]

        async def user(c: AsyncClient, k: int) -> list[int]:
            return [(await c.submit(b"%d-%d" % (k, i), timeout=10)).index for i in range(30)]

        try:
            got = await asyncio.gather(*(user(c, k) for k, c in enumerate(clients)))
            # and concurrent submits of one session travel batched too
            more = await asyncio.gather(*(clients[0].submit(b"burst-%d" % i, timeout=10) for i in range(50)))
            got.append([r.index for r in more])
        finally:
            for c in clients:
                await c.close()
            await mux.close()
            tr.close()
        return node, got, mux

    node, got, mux = asyncio.run(run())
    indices = [i for per in got for i in per]
    assert len(indices) == len(set(indices)) == 8 * 30 + 50
    assert len(node.log) == len(set(node.log)) == 8 * 30 + 50, "each payload applied once"
    assert len({cid for cid, _ in node.applied}) == 8, "one session per client"
    for idx in indices:
        assert node.log[idx - 1] in {b"%d-%d" % (k, i) for k in range(8) for i in range(30)} | {
            b"burst-%d" % i for i in range(50)
        }
    assert mux.datagrams_out < mux.requests_out, "requests of several sessions shared datagrams"
    assert node.ep.counters["client_responses_coalesced"] > 0
    if drop_every < 1000:
        assert node.n_in >= drop_every  # something was dropped, and still exactly once


def test_encode_body_refuses_empty_batches() -> None:
    from udpraft.wire import EncodeError

    with pytest.raises(EncodeError):
        encode_body(ClientBatch(()))
    with pytest.raises(EncodeError):
        encode_body(ClientResponses(()))
