"""ReliableEndpoint with a manual clock: delivery, acks, retransmission, bounds."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from udpraft.core import messages as cm
from udpraft.core.types import Entry
from udpraft.reliability import (
    Delivery,
    ReliabilityConfig,
    ReliableEndpoint,
    RttEstimator,
    reliable_by_default,
)
from udpraft.wire import (
    Ack,
    ClientBatch,
    ClientKind,
    ClientRequest,
    ClientResponse,
    EncodeError,
    Forward,
    Fragment,
    WireContext,
    encode,
)

KEY = b"reliability-test-key"
Ep = ReliableEndpoint[str]


def ctx(node: str, incarnation: int, **kw: int) -> WireContext:
    return WireContext("c", KEY, node, incarnation=incarnation, **kw)


def pair(cfg: ReliabilityConfig | None = None) -> tuple[Ep, Ep]:
    return ReliableEndpoint(ctx("n1", 101), cfg), ReliableEndpoint(ctx("n2", 202), cfg)


def req(i: int, blob: bytes = b"") -> ClientRequest:
    return ClientRequest(ClientKind.SUBMIT, i, "client-1", {"seq": i}, (blob,) if blob else ())


def carry(
    src: Ep,
    src_addr: str,
    dst: Ep,
    now: float,
    *,
    copies: int = 1,
    keep: Callable[[int], bool] = lambda i: True,
) -> list[Delivery[str]]:
    """Move everything ``src`` wants to send into ``dst`` (as if the link were perfect)."""
    out: list[Delivery[str]] = []
    for i, (data, _addr) in enumerate(src.datagrams_to_send(now)):
        if keep(i):
            for _ in range(copies):
                out += dst.receive_datagram(data, src_addr, now)
    return out


def test_policy() -> None:
    assert not reliable_by_default(cm.Heartbeat("n1", "n2", 1, 0))
    assert not reliable_by_default(cm.AppendEntries("n1", "n2", 1, 0, 0, (), 0))
    assert reliable_by_default(req(1))
    assert reliable_by_default(ClientResponse(ClientKind.SUBMIT, 1, True))
    assert reliable_by_default(Forward("h", 1, req(1)))


def test_exactly_once_under_duplication_and_acks_clear_the_queue() -> None:
    a, b = pair()
    for i in range(50):
        assert a.send("B", req(i), True, 0.0)
    got = carry(a, "A", b, 0.01, copies=3)
    assert [d.msg.req_id for d in got] == list(range(50))
    assert all(d.reliable and d.sender == "n1" and d.addr == "A" for d in got)
    assert b.counters["duplicates"] == 100 and b.counters["delivered"] == 50
    acks = b.datagrams_to_send(0.01)
    assert len(acks) == 1  # one ACK datagram covers all 50 ids (as one range)
    assert a.unacked() == 50
    for data, addr in acks:
        assert addr == "A"
        assert a.receive_datagram(data, "B", 0.02) == []
    assert a.unacked() == 0 and a.counters["acked"] == 50
    assert a.next_deadline() is None
    a.handle_timer(100.0)
    assert a.datagrams_to_send(100.0) == [] and a.counters["retransmits"] == 0


def test_retransmit_backoff_cap_and_give_up() -> None:
    cfg = ReliabilityConfig(rto_s_initial=0.1, rto_s_min=0.01, rto_s_max=0.8, max_retries=5)
    a, _ = pair(cfg)
    a.send("B", req(1), True, 0.0)
    first = a.datagrams_to_send(0.0)
    assert len(first) == 1
    times = []
    while (deadline := a.next_deadline()) is not None:
        a.handle_timer(deadline)
        out = a.datagrams_to_send(deadline)
        if out:
            assert out == first  # the same bytes, the same message id
            times.append(deadline)
    assert times == pytest.approx([0.1, 0.3, 0.7, 1.5, 2.3])
    assert a.counters["retransmits"] == 5 and a.counters["gave_up"] == 1
    assert a.unacked() == 0 and a.reliable_bytes == 0


def test_ack_after_retransmit_gives_no_rtt_sample_karn() -> None:
    cfg = ReliabilityConfig(rto_s_initial=0.1)
    a, b = pair(cfg)
    a.send("B", req(1), True, 0.0)
    a.datagrams_to_send(0.0)  # lost
    a.handle_timer(0.1)
    carry(a, "A", b, 0.1)
    carry(b, "B", a, 0.15)
    assert a.unacked() == 0 and a.counters["rtt_samples"] == 0
    rtt = a.rtt("B")
    assert rtt is not None and rtt.srtt_s is None


def test_rtt_estimate_converges() -> None:
    cfg = ReliabilityConfig(rto_s_initial=1.0, rto_s_min=0.001, rto_s_max=5.0)
    a, b = pair(cfg)
    now = 0.0
    for i in range(60):
        a.send("B", req(i), True, now)
        carry(a, "A", b, now + 0.02)
        carry(b, "B", a, now + 0.05)
        now += 0.1
    rtt = a.rtt("B")
    assert rtt is not None and rtt.samples == 60
    assert rtt.srtt_s == pytest.approx(0.05, rel=1e-3)
    assert rtt.rttvar_s < 1e-3
    assert rtt.rto_s == pytest.approx(0.05 + 0.001, rel=1e-2)  # SRTT + max(G, 4 RTTVAR)


def test_rtt_estimator_rfc6298() -> None:
    r = RttEstimator(1.0, 0.2, 60.0)
    assert r.rto_s == 1.0
    r.sample(0.1)
    assert r.srtt_s == 0.1 and r.rttvar_s == 0.05 and r.rto_s == pytest.approx(0.3)
    r.sample(0.3)
    assert r.srtt_s == pytest.approx(0.125) and r.rttvar_s == pytest.approx(0.0875)
    r.sample(-1.0)
    assert r.samples == 2
    for _ in range(200):
        r.sample(0.001)
    assert r.rto_s == 0.2  # clamped to the floor


def test_replay_of_old_datagram_dropped_and_counted() -> None:
    cfg = ReliabilityConfig(window_msgs=16, dedupe_window=16)
    a, b = pair(cfg)
    captured = []
    for i in range(40):
        a.send("B", req(i), True, float(i))
        out = a.datagrams_to_send(float(i))
        captured += [d for d, _ in out]
        for data, _ in out:
            b.receive_datagram(data, "A", float(i))
        carry(b, "B", a, float(i))
    assert b.counters["delivered"] == 40
    assert b.receive_datagram(captured[0], "A", 50.0) == []  # far below the window
    assert b.counters["replays"] == 1
    assert b.receive_datagram(captured[-1], "A", 50.0) == []  # inside: a duplicate
    assert b.counters["duplicates"] == 1
    hb = cm.Heartbeat("n1", "n2", 1, 0)
    for _ in range(20):
        a.send("B", hb, False, 60.0)
    unreliable = [d for d, _ in a.datagrams_to_send(60.0)]
    for data in unreliable:
        b.receive_datagram(data, "A", 60.0)
    assert b.receive_datagram(unreliable[0], "A", 61.0) == []
    assert b.counters["replays"] == 2


def test_new_incarnation_accepted_and_old_one_still_deduped() -> None:
    a, b = pair()
    a.send("B", req(1), True, 0.0)
    old = a.datagrams_to_send(0.0)
    assert len(carry_list(old, b)) == 1
    a2: Ep = ReliableEndpoint(ctx("n1", 999))  # n1 restarted: its ids start again at 1
    a2.send("B", req(1), True, 1.0)
    new = a2.datagrams_to_send(1.0)
    assert len(carry_list(new, b)) == 1  # same id, new incarnation: delivered
    assert b.counters["new_incarnation"] == 1
    assert carry_list(old, b) == []  # a late copy: a duplicate in its own life's window
    assert b.counters["duplicates"] == 1
    acks = b.datagrams_to_send(1.0)
    assert len(acks) == 2  # one per incarnation: each goes to its own life
    for data, _ in acks:
        a2.receive_datagram(data, "B", 1.1)
    assert a2.unacked() == 0 and a2.counters["ack_stale"] == 1


def test_replayed_old_incarnation_does_not_lock_out_the_live_one() -> None:
    """Incarnations are random, so a receiver cannot tell an old one from a newer one.

    A receiver that (re)started after the sender's restart only ever heard the live
    incarnation; one replayed datagram of the sender's previous life must not retire the
    live incarnation (every later datagram of it refused until the sender restarts)."""
    a, _ = pair()
    a.send("B", req(1), True, 0.0)
    captured = a.datagrams_to_send(0.0)  # n1, incarnation 101, recorded off the wire
    a2: Ep = ReliableEndpoint(ctx("n1", 999))  # n1 restarted
    b: Ep = ReliableEndpoint(ctx("n2", 303))  # n2 restarted later: it only knows 999
    a2.send("B", req(2), True, 1.0)
    assert [d.msg.req_id for d in carry_list(a2.datagrams_to_send(1.0), b)] == [2]
    carry_list(captured, b, 1.5)  # the replay
    carry_list(captured, b, 1.6)  # and again: its own life's window dedupes it
    assert b.counters["duplicates"] == 1
    a2.send("B", req(3), True, 2.0)
    assert [d.msg.req_id for d in carry_list(a2.datagrams_to_send(2.0), b, 2.0)] == [3]
    for data, _ in b.datagrams_to_send(2.0):
        a2.receive_datagram(data, "B", 2.0)
    assert a2.unacked() == 0 and a2.counters["gave_up"] == 0


def test_fragmented_client_batch_is_delivered_per_request() -> None:
    """A ClientBatch too big for one datagram travels in fragments; it must come out as one
    Delivery per request, as an unfragmented one does (the runtime has no ClientBatch
    handler: a batch delivered whole was counted drop_unexpected, already acked)."""
    a, b = pair()
    batch = ClientBatch(tuple(req(i, b"x" * 2000) for i in range(40)))  # ~80 KB
    assert a.send("B", batch, True, 0.0) and a.counters["fragmented"] == 1
    got = carry(a, "A", b, 0.0)
    assert [d.msg.req_id for d in got] == list(range(40))
    assert all(d.reliable and d.sender == "n1" for d in got)
    assert b.counters["client_batches_in"] == 1 and b.counters["delivered"] == 40


def test_acks_to_a_source_address_do_not_collide_with_other_traffic() -> None:
    """n1 sends Raft messages to n2's configured address ("cfg") but acks n2's reliable
    messages at the address they came from ("src"): the same receiver through two peer
    states. Per-peer unreliable ids made both sequences run over the same ids, so n2
    dropped n1's acks (and a heartbeat) as duplicates: 19 of 20 delivered messages were
    retransmitted until gave_up."""
    a, b = pair()
    hb = cm.Heartbeat("n1", "n2", 1, 0)
    heartbeats = 0
    for t in range(400):
        now = t * 0.01
        a.send("cfg", hb, False, now)
        if t % 10 == 0 and t < 200:
            b.send("A", req(t), True, now)
        b.handle_timer(now)
        for data, _ in b.datagrams_to_send(now):
            a.receive_datagram(data, "src", now)
        for data, _ in a.datagrams_to_send(now):
            heartbeats += sum(type(d.msg) is cm.Heartbeat for d in b.receive_datagram(data, "A", now))
    assert heartbeats == 400 and b.counters["duplicates"] == 0
    assert b.counters["acked"] == 20 and b.counters["gave_up"] == 0


def carry_list(
    datagrams: list[tuple[bytes, str]], dst: Ep, now: float = 1.0
) -> list[Delivery[str]]:
    out: list[Delivery[str]] = []
    for data, _ in datagrams:
        out += dst.receive_datagram(data, "A", now)
    return out


def test_unreliable_messages_are_never_retransmitted() -> None:
    a, b = pair()
    msg = cm.AppendEntries("n1", "n2", 3, 0, 0, (Entry(1, 3, b"x"),), 1)
    assert a.send("B", msg, False, 0.0)
    assert len(a.datagrams_to_send(0.0)) == 1  # and lost
    assert a.next_deadline() is None
    for t in (1.0, 10.0, 1000.0):
        a.handle_timer(t)
        assert a.datagrams_to_send(t) == []
    assert a.counters["retransmits"] == 0 and a.unacked() == 0
    a.send("B", msg, False, 2000.0)
    got = carry(a, "A", b, 2000.0)
    assert [d.msg for d in got] == [msg] and not got[0].reliable
    assert b.datagrams_to_send(2000.0) == []  # nothing to acknowledge


def test_window_bounds_backlog_and_memory() -> None:
    cfg = ReliabilityConfig(window_msgs=8, dedupe_window=8, backlog_msgs=10)
    a, b = pair(cfg)
    accepted = [a.send("B", req(i), True, 0.0) for i in range(25)]
    assert accepted == [True] * 18 + [False] * 7
    assert a.unacked("B") == 8 and a.backlog("B") == 10
    assert a.counters["backlog_full"] == 7
    delivered: list[int] = []
    now = 0.0
    while a.unacked() or a.backlog("B"):
        now += 0.001
        delivered += [d.msg.req_id for d in carry(a, "A", b, now)]
        assert a.unacked("B") <= 8
        carry(b, "B", a, now)
    assert delivered == list(range(18))
    assert a.reliable_bytes == 0


def test_send_queue_and_reliable_bytes_bounds() -> None:
    cfg = ReliabilityConfig(send_queue_datagrams=5, reliable_bytes_max=10_000)
    a, _ = pair(cfg)
    for _ in range(8):
        a.send("B", cm.Heartbeat("n1", "n2", 1, 0), False, 0.0)
    assert len(a.datagrams_to_send(0.0)) == 5 and a.counters["send_queue_full"] == 3
    assert a.send("B", req(1, b"x" * 6000), True, 0.0)
    assert not a.send("B", req(2, b"x" * 6000), True, 0.0)
    assert a.counters["reliable_bytes_full"] == 1
    a.handle_timer(0.5)
    a.handle_timer(5.0)
    assert a.counters["retransmits"] >= 1  # a reliable message outlives a full queue


def test_sender_table_and_peer_table_are_bounded() -> None:
    b: Ep = ReliableEndpoint(ctx("n2", 2), ReliabilityConfig(max_senders=3, max_peers=2))
    for k in range(5):
        sender: Ep = ReliableEndpoint(ctx(f"c{k}", 10 + k))
        sender.send("B", req(k), True, 0.0)
        for data, _ in sender.datagrams_to_send(0.0):
            b.receive_datagram(data, f"C{k}", 0.0)
    assert b.counters["senders_evicted"] == 2
    # ACKs to 5 addresses: they take ids from the endpoint-wide unreliable sequence and
    # need no peer state (max_ack_batches bounds them).
    assert len(b.datagrams_to_send(0.0)) == 5 and b.counters["peers_evicted"] == 0
    b.send("X", req(1), True, 0.0)
    b.send("Y", req(2), True, 0.0)
    assert not b.send("Z", req(3), True, 0.0)  # both peers busy (unacked)
    assert b.counters["peers_full"] == 1


def test_recreated_peer_state_never_reuses_ids() -> None:
    cfg = ReliabilityConfig(max_peers=1)
    a, b = pair(cfg)
    for i in range(3):
        a.send("B", req(i), True, float(i))
        assert len(carry(a, "A", b, float(i))) == 1
        carry(b, "B", a, float(i))
        a.send("OTHER", cm.Heartbeat("n1", "n2", 1, 0), False, float(i))  # evicts "B"
        a.datagrams_to_send(float(i))
    assert a.counters["peers_evicted"] >= 2 and b.counters["delivered"] == 3
    assert b.counters["replays"] == 0 and b.counters["duplicates"] == 0


def test_timer_heap_stays_bounded() -> None:
    a, b = pair()
    for i in range(5000):
        a.send("B", req(i), True, i * 1e-3)
        carry(a, "A", b, i * 1e-3)
        carry(b, "B", a, i * 1e-3)
        if i % 500 == 0:
            a.handle_timer(i * 1e-3)
    assert a.unacked() == 0
    assert a.timer_entries <= 2 * a.unacked() + 1024 + 500


def test_ack_delay_batches_into_one_datagram() -> None:
    a, b = pair(ReliabilityConfig(ack_delay_s=0.01))
    for i in range(30):
        a.send("B", req(i), True, 0.0)
    carry(a, "A", b, 0.0)
    assert b.datagrams_to_send(0.005) == []
    assert b.next_deadline() == pytest.approx(0.01)
    acks = b.datagrams_to_send(0.01)
    assert len(acks) == 1 and b.counters["ack_ids_sent"] == 30


def test_selective_acks_with_gaps() -> None:
    a, b = pair()
    for i in range(10):
        a.send("B", req(i), True, 0.0)
    got = carry(a, "A", b, 0.0, keep=lambda i: i % 3 != 0)
    assert len(got) == 6
    carry(b, "B", a, 0.01)
    assert a.unacked() == 4
    a.handle_timer(10.0)
    assert len(carry(a, "A", b, 10.0)) == 4
    carry(b, "B", a, 10.0)
    assert a.unacked() == 0


def test_oversize_messages_split_or_fragmented() -> None:
    a, b = pair()
    big = req(7, bytes(range(256)) * 1000)  # 256 KB: fragments
    assert a.send("B", big, True, 0.0)
    got = carry(a, "A", b, 0.0)
    assert [d.msg for d in got] == [big] and a.counters["fragmented"] == 1
    entries = tuple(Entry(i, 1, b"y" * 1000) for i in range(1, 201))  # 200 KB of entries
    ae = cm.AppendEntries("n1", "n2", 1, 0, 0, entries, 0)
    assert a.send("B", ae, False, 1.0)
    got = carry(a, "A", b, 1.0)
    assert a.counters["split_append_entries"] == 1
    assert sum((d.msg.entries for d in got), ()) == entries
    assert all(not d.reliable for d in got)


def test_misuse_and_bad_input() -> None:
    a, b = pair()
    with pytest.raises(EncodeError):
        a.send("B", Ack(1, ((1, 1),)), False, 0.0)
    with pytest.raises(EncodeError):
        a.send("B", Fragment(1, 0, 1, 1, b"x"), True, 0.0)
    with pytest.raises(EncodeError):
        a.send("B", cm.Heartbeat("n7", "n2", 1, 0), False, 0.0)
    with pytest.raises(EncodeError):
        a.send("B", req(1), True, 0.0, dst="x" * 65)
    assert b.receive_datagram(b"garbage", "A", 0.0) == []
    assert b.counters["drop_truncated"] == 1
    untracked = encode(cm.Heartbeat("n1", "n2", 1, 0), ctx("n1", 5), msg_id=0)
    assert b.receive_datagram(untracked, "A", 0.0) == []
    assert b.counters["no_msg_id"] == 1
    with pytest.raises(ValueError):
        ReliabilityConfig(window_msgs=2000, dedupe_window=1024)


def test_forget_peer_drops_its_state() -> None:
    a, _ = pair()
    a.send("B", req(1, b"x" * 100), True, 0.0)
    a.send("B", req(2), True, 0.0)
    assert a.unacked() == 2 and a.reliable_bytes > 0
    a.forget_peer("B")
    assert a.unacked() == 0 and a.reliable_bytes == 0 and a.counters["peers_forgotten"] == 1
    a.handle_timer(10.0)
    a.datagrams_to_send(10.0)
    assert a.counters["retransmits"] == 0 and a.next_deadline() is None
