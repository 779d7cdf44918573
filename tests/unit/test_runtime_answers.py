"""A leader answers a window of client submits piece by piece (NodeRuntime._apply): the
first answers leave before the rest of the window applies, and every submit is answered
exactly once. A real one-node NodeRuntime, its datagrams captured by a fake transport."""

from __future__ import annotations

import asyncio

from udpraft.client.core import ClientCore
from udpraft.config import ClusterConfig, NodeAddr
from udpraft.core.ready import Config, Role
from udpraft.io import runtime
from udpraft.io.runtime import NodeRuntime
from udpraft.storage import MemoryLogStore

SECRET = b"s" * 16
NODE = ("10.0.0.1", 1001)
CLIENT = ("10.0.0.9", 5000)


class Capture:
    """A transport that records, for each datagram, the node's applied index when sent."""

    def __init__(self) -> None:
        self.rt: NodeRuntime | None = None
        self.sent: list[tuple[bytes, tuple[str, int], int]] = []

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.rt is not None
        self.sent.append((data, addr, self.rt.service.applied_index))

    def close(self) -> None:
        pass


def run_window(n_requests: int, per_request: int) -> tuple[ClientCore, Capture, int]:
    async def main() -> tuple[ClientCore, Capture, int]:
        cfg = ClusterConfig("t", (NodeAddr("n1", NODE, ("10.0.0.1", 2001)),))
        rt = NodeRuntime("n1", cfg, SECRET, MemoryLogStore(),
                         raft_config=Config(election_ticks=5, heartbeat_ticks=1))
        cap = Capture()
        cap.rt = rt
        rt.attach(cap)  # type: ignore[arg-type]
        loop = asyncio.get_running_loop()
        end = loop.time() + 5
        while rt.raft.role != Role.LEADER:
            assert loop.time() < end, "no leader"
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # its first entry (the term's no-op) applied
        first = rt.service.applied_index
        cl = ClientCore({"n1": NODE}, "t", SECRET)
        for _ in range(n_requests):  # one loop turn: one window of proposals
            seqs = [cl.next_seq() for _ in range(per_request)]
            req = cl.submit_request(cl.new_req_id(), seqs, [b"x%d" % s for s in seqs])
            rt.datagram_received(cl.encode(req), CLIENT)
        total = n_requests * per_request
        while rt.service.applied_index < first + total:
            assert loop.time() < end, "window not applied"
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.02)
        await rt.stop()
        return cl, cap, first

    return asyncio.run(main())


def answered(cl: ClientCore, cap: Capture) -> list[tuple[int, int, int]]:
    """(seq, index, applied index when its answer was sent) for every answered submit."""
    out = []
    for data, addr, applied in cap.sent:
        if addr != CLIENT:
            continue
        for resp in cl.parse_all(data):
            assert resp.ok, resp.body
            out += [(seq, index, applied) for seq, index, _term in resp.body["done"]]
    return out


def test_a_window_is_answered_in_pieces_each_before_the_next_applies() -> None:
    n_req, per = 8, 100  # 800 submits committed together: more than ANSWER_CHUNK (256)
    cl, cap, first = run_window(n_req, per)
    got = answered(cl, cap)
    assert sorted(s for s, _, _ in got) == list(range(1, n_req * per + 1))  # each once
    for seq, index, applied in got:
        assert index == first + seq  # in order, one entry per submit
        assert index <= applied  # never answered before it applied
    # pieces: the answers of the first entries left while later ones were not yet applied
    sent_at = sorted({applied for _, _, applied in got})
    assert len(sent_at) >= 3, sent_at
    assert sent_at[0] < first + n_req * per
    # and no piece holds more than ANSWER_CHUNK entries' answers
    per_send = {a: sum(1 for _, _, x in got if x == a) for a in sent_at}
    assert max(per_send.values()) <= runtime.ANSWER_CHUNK


def test_a_small_window_is_answered_at_once() -> None:
    cl, cap, first = run_window(2, 50)
    got = answered(cl, cap)
    assert sorted(s for s, _, _ in got) == list(range(1, 101))
    assert {applied for _, _, applied in got} == {first + 100}


def test_the_endpoint_timer_rearms_when_its_deadline_is_already_due() -> None:
    """uvloop's call_later(0) returns a plain Handle (no when()): arming the endpoint's
    retransmission timer for a deadline already due, then arming it again, killed a node
    under KV load ("disk write failed", exit 70). It must re-arm and then retransmit."""
    import uvloop

    from udpraft.wire import AppForward

    async def main() -> None:
        cfg = ClusterConfig("t", (NodeAddr("n1", NODE, ("10.0.0.1", 2001)),
                                  NodeAddr("n2", ("10.0.0.2", 1002), ("10.0.0.2", 2002))))
        rt = NodeRuntime("n1", cfg, SECRET, MemoryLogStore(),
                         raft_config=Config(election_ticks=500, heartbeat_ticks=100))
        cap = Capture()
        cap.rt = rt
        rt.attach(cap)  # type: ignore[arg-type]
        assert rt.send_to_node("n2", AppForward(1, (b"x",)))  # reliable: n2 never acks
        rt._flush_net()
        dl = rt.ep.next_deadline()
        assert dl is not None
        rt._arm_ep_timer(dl + 1.0)  # already due: uvloop hands back a plain Handle
        rt._arm_ep_timer(dl + 1.0)  # and this read its when()
        sent = len(cap.sent)
        for _ in range(50):
            await asyncio.sleep(0.01)
            if rt.ep.counters["retransmits"]:
                break
        assert rt.ep.counters["retransmits"] >= 1 and len(cap.sent) > sent
        await rt.stop()

    uvloop.run(main())
