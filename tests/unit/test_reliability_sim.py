"""Two endpoints over a seeded lossy link: 30% loss, duplication, reordering.

Every reliable message (small requests, responses and a few fragmented large ones) must be
delivered exactly once, in both directions, with no give-ups. Unreliable heartbeats ride
along and must never be delivered twice. The clock is simulated; a failure names its seed.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from dataclasses import dataclass, field

import pytest

from udpraft.core import messages as cm
from udpraft.reliability import ReliabilityConfig, ReliableEndpoint
from udpraft.wire import ClientKind, ClientRequest, ClientResponse, WireContext, WireMessage

KEY = b"sim-key"
CFG = ReliabilityConfig(rto_s_initial=0.05, rto_s_min=0.01, rto_s_max=0.4, max_retries=30)


@dataclass
class Link:
    rng: random.Random
    loss: float = 0.3
    dup: float = 0.1
    max_delay_s: float = 0.02
    queue: list[tuple[float, int, str, str, bytes]] = field(default_factory=list)
    seq: int = 0
    carried: int = 0

    def put(self, now: float, src: str, dst: str, data: bytes) -> None:
        if self.rng.random() < self.loss:
            return
        for _ in range(2 if self.rng.random() < self.dup else 1):
            self.seq += 1
            delay = self.rng.uniform(0.0, self.max_delay_s)  # reorders freely
            heapq.heappush(self.queue, (now + delay, self.seq, src, dst, data))


def run(
    seed: int, n_msgs: int = 300, n_big: int = 3
) -> tuple[int, float, dict[str, dict[str, int]]]:
    rng = random.Random(seed)
    link = Link(rng)
    ctxs = {
        "A": WireContext("sim", KEY, "n1", incarnation=11, max_datagram_bytes=4000),
        "B": WireContext("sim", KEY, "n2", incarnation=22, max_datagram_bytes=4000),
    }
    eps = {name: ReliableEndpoint[str](c, CFG) for name, c in ctxs.items()}
    other = {"A": "B", "B": "A"}
    # (time, seq, sender name, message): a schedule of sends, reliable and not
    plan: list[tuple[float, int, str, WireMessage, bool]] = []
    for i in range(n_msgs):
        big = i < n_big
        blob = rng.randbytes(20_000 if big else rng.randint(0, 200))
        plan.append(
            (
                rng.uniform(0, 1.0),
                i,
                "A",
                ClientRequest(ClientKind.SUBMIT, i, "c", {"i": i}, (blob,)),
                True,
            )
        )
        plan.append(
            (
                rng.uniform(0, 1.0),
                i + n_msgs,
                "B",
                ClientResponse(ClientKind.SUBMIT, i, True, {"i": i}, "n2", (blob,)),
                True,
            )
        )
        src, dst = ("n1", "n2") if i % 2 else ("n2", "n1")
        plan.append(
            (
                rng.uniform(0, 1.0),
                i + 2 * n_msgs,
                "A" if i % 2 else "B",
                cm.Heartbeat(src, dst, 1, i),
                False,
            )
        )
    plan.sort(key=lambda p: (p[0], p[1]))
    delivered: dict[str, Counter[tuple[str, int]]] = {"A": Counter(), "B": Counter()}

    def flush(name: str, now: float) -> None:
        for data, addr in eps[name].datagrams_to_send(now):
            link.put(now, name, addr, data)

    now = 0.0
    p = 0
    while now < 300.0:
        candidates = []
        if p < len(plan):
            candidates.append(plan[p][0])
        if link.queue:
            candidates.append(link.queue[0][0])
        candidates += [d for ep in eps.values() if (d := ep.next_deadline()) is not None]
        if not candidates:
            break
        now = max(now, min(candidates))
        while p < len(plan) and plan[p][0] <= now:
            _, _, name, msg, reliable = plan[p]
            assert eps[name].send(other[name], msg, reliable, now)
            flush(name, now)
            p += 1
        while link.queue and link.queue[0][0] <= now:
            _, _, src, dst, data = heapq.heappop(link.queue)
            link.carried += 1
            for delivery in eps[dst].receive_datagram(data, src, now):
                m = delivery.msg
                if isinstance(m, cm.Heartbeat):
                    delivered[dst]["hb", m.commit] += 1
                else:
                    assert isinstance(m, ClientRequest | ClientResponse)
                    delivered[dst][type(m).__name__, m.req_id] += 1
            flush(dst, now)
        for name, ep in eps.items():
            deadline = ep.next_deadline()
            if deadline is not None and deadline <= now:
                ep.handle_timer(now)
                flush(name, now)

    assert now < 300.0, f"seed={seed}: did not settle"
    for ep in eps.values():
        assert ep.unacked() == 0, f"seed={seed}"
        assert ep.counters["gave_up"] == 0, f"seed={seed} {ep.counters}"
        assert ep.counters["retransmits"] > 0
    want_b = Counter({("ClientRequest", i): 1 for i in range(n_msgs)})
    want_a = Counter({("ClientResponse", i): 1 for i in range(n_msgs)})
    got_b = Counter({k: v for k, v in delivered["B"].items() if k[0] != "hb"})
    got_a = Counter({k: v for k, v in delivered["A"].items() if k[0] != "hb"})
    assert got_b == want_b, f"seed={seed}"
    assert got_a == want_a, f"seed={seed}"
    heartbeats = delivered["A"] + delivered["B"]
    assert all(v == 1 for k, v in heartbeats.items() if k[0] == "hb"), f"seed={seed}"
    assert eps["B"].counters["duplicates"] > 0  # the link did duplicate and retransmit
    assert eps["A"].counters["fragmented"] == n_big
    return link.carried, now, {n: ep.counters for n, ep in eps.items()}


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_lossy_link_delivers_every_reliable_message_exactly_once(seed: int) -> None:
    run(seed)
