"""ReliableEndpoint: retransmission, acknowledgement and dedupe over datagrams, sans-IO.

Shape (after aioquic): the IO layer owns the socket and the clock and drives this object::

    for msg in ep.receive_datagram(data, addr, now): ...     # on every datagram
    ep.send(addr, msg, reliable, now)                        # whenever it has something
    ep.handle_timer(now)                                     # when next_deadline() passes
    for data, addr in ep.datagrams_to_send(now): sock.sendto(data, addr)   # after each

Policy per message class (see :func:`reliable_by_default`)
-----------------------------------------------------------
- Raft messages are sent UNRELIABLE: Raft repeats heartbeats and re-sends AppendEntries
  from its own progress tracking, so a transport retransmit would only double the load
  exactly when the network is already failing (a partition).
- Client requests, client responses and FORWARDs are RELIABLE: retransmitted until acked,
  at most ``max_retries`` times, then dropped and counted as ``gave_up``.
- A message too big for one datagram is carried in FRAGMENTs, always reliable (losing one
  piece would lose the whole). An oversize AppendEntries is first split into smaller
  AppendEntries (wire.split_append_entries); only a single huge entry gets fragments.

Message ids and windows
-----------------------
Reliable ids run in one sequence per destination address; unreliable ids (Raft messages,
ACKs, unreliable responses) in one sequence for the whole endpoint. The receiver keeps a
dedupe window per (sender, incarnation, channel) (dedupe.py), whatever address it was
reached at, and ACKs go to the address a datagram came from, which need not be the one we
send to (``localhost`` configured, ``127.0.0.1`` seen): with a sequence per address, the
ACKs' and the Raft messages' ids collided at the receiver, which dropped one of each pair
as a duplicate. Unreliable ids are never retransmitted, so they need not be dense. A
reliable id is admitted only while ``id - oldest_unacked < window_msgs <= dedupe_window``,
so every id the sender may still retransmit lies inside the receiver's window: an id below
it is a replay, never a late retransmission. Messages that do not fit the window wait in a
per-peer backlog. A peer state is created with ids above every id this incarnation has
used, so evicting an idle peer state (LRU, ``max_peers``) can never make ids repeat.
Reliable messages to one receiver must go through one address per sender incarnation; call
:meth:`forget_peer` when a node's address changes.

Acknowledgements
----------------
Every reliable datagram (duplicates too: the first ACK may have been lost) queues its id
for an ACK to the address it came from. Pending ids are batched per (address, sender,
incarnation) and flushed by :meth:`datagrams_to_send` after ``ack_delay_s`` as range
lists: one ACK datagram acknowledges many ids, a run of consecutive ids costs one range.
An ACK names the incarnation it acknowledges, so a restarted sender ignores ACKs meant
for its previous life.

Retransmission
--------------
Per peer RTT estimate (RFC 6298, rtt.py). A message's k-th transmission waits
``min(RTO * 2**(k-1), rto_s_max)`` for its ACK (capped exponential backoff, per message);
Karn's rule: only messages acknowledged after a single transmission give RTT samples.
A retransmission re-sends the same bytes (same id), so the receiver can dedupe it.
Timers live in one heap with lazy deletion, compacted when stale entries pile up.

Client batches
--------------
A :class:`ClientBatch` (requests of several client sessions sharing one socket) is
delivered as one :class:`Delivery` per request, so the application handles each exactly as
if it had come alone. Its address is remembered (LRU, ``max_batch_addrs``) as one that
understands :class:`ClientResponses`: unreliable ``ClientResponse`` sends to it are held
until :meth:`datagrams_to_send` and then go out together, up to ``max_datagram_bytes`` a
datagram (a lone one, or one carrying blobs, goes out as a plain ``ClientResponse``).

Bounds (each drop is counted in ``counters``)
---------------------------------------------
window_msgs per peer in flight; backlog_msgs per peer waiting (``backlog_full``);
reliable_bytes_max over all reliable bytes in flight or waiting (``reliable_bytes_full``);
send_queue_datagrams / send_queue_bytes for datagrams not yet taken by the IO layer
(``send_queue_full``; a reliable one is still retransmitted later); max_peers
(``peers_full``); max_senders (``senders_evicted``); acks: max_ack_batches and
pending_acks_per_peer (``ack_overflow``); the reassembler's own bounds (``reassembly_*``).
The bounds (``ReliabilityConfig``), the per-peer state and the counter names are in
config.py.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict, deque
from typing import Generic

from udpraft.core.messages import AppendEntries
from udpraft.reliability import dedupe
from udpraft.reliability.acks import acked_ids, to_ranges
from udpraft.reliability.config import (
    COUNTER_NAMES,
    A,
    AckBatch,
    Delivery,
    PeerState,
    PendingSend,
    ReliabilityConfig,
)
from udpraft.reliability.rtt import RttEstimator
from udpraft.wire import (
    FLAG_ACK_REQUESTED,
    FLAG_INNER,
    Ack,
    ClientBatch,
    ClientResponse,
    ClientResponses,
    Decoded,
    EncodedBody,
    EncodeError,
    Fragment,
    Reassembler,
    WireContext,
    WireMessage,
    decode,
    encode_body,
    fragment_chunk_size,
    seal,
    split_append_entries,
    split_into_fragments,
)
from udpraft.wire.envelope import id_bytes


class ReliableEndpoint(Generic[A]):
    """One per node (or client): all peers share it. Addresses are any hashable value."""

    def __init__(self, ctx: WireContext, config: ReliabilityConfig | None = None) -> None:
        self.ctx = ctx
        self.config = cfg = config or ReliabilityConfig()
        self.counters: dict[str, int] = dict.fromkeys(COUNTER_NAMES, 0)
        self._senders = dedupe.SenderTable(
            window=cfg.dedupe_window,
            max_senders=cfg.max_senders,
            retired_max=cfg.retired_incarnations,
            counters=self.counters,
        )
        self._reassembler: Reassembler[tuple[str, int, int]] = Reassembler(
            max_total_bytes=cfg.reassembly_max_bytes,
            max_messages=cfg.reassembly_max_messages,
            max_message_bytes=ctx.max_message_bytes,
            timeout_s=cfg.reassembly_timeout_s,
            counters=self.counters,
        )
        self._peers: OrderedDict[A, PeerState] = OrderedDict()
        self._id_floor = 1  # above every message id this incarnation has used
        self._next_group = 1
        self._timers: list[tuple[float, int, A, int]] = []  # (deadline, seq, addr, msg id)
        self._timer_seq = 0
        self._n_unacked = 0
        self._reliable_bytes = 0
        self._outbox: deque[tuple[bytes, A]] = deque()
        self._outbox_bytes = 0
        self._acks: dict[tuple[A, str, int], AckBatch] = {}
        self._batch_addrs: OrderedDict[A, None] = OrderedDict()  # they speak ClientResponses
        self._responses: dict[A, list[ClientResponse]] = {}  # held for those addresses

    # ------------------------------------------------------------------ introspection

    def rtt(self, addr: A) -> RttEstimator | None:
        peer = self._peers.get(addr)
        return None if peer is None else peer.rtt

    def unacked(self, addr: A | None = None) -> int:
        """Reliable messages in flight (to ``addr``, or to everyone)."""
        if addr is None:
            return self._n_unacked
        peer = self._peers.get(addr)
        return 0 if peer is None else len(peer.unacked)

    def backlog(self, addr: A) -> int:
        peer = self._peers.get(addr)
        return 0 if peer is None else len(peer.backlog)

    @property
    def reliable_bytes(self) -> int:
        return self._reliable_bytes

    # ------------------------------------------------------------------ sending

    def send(self, addr: A, msg: WireMessage, reliable: bool, now: float, *, dst: str = "") -> bool:
        """Queue ``msg`` for ``addr``. False if a bound dropped it (counted).

        ``dst`` names the receiving node for non-Raft messages ("" = whoever is there).
        Raises :class:`EncodeError` on misuse (a message the wire cannot carry, a Raft
        message from another node, transport types, which are this layer's own).
        """
        if type(msg) is ClientResponse and not reliable and not dst and addr in self._batch_addrs:
            held = self._responses.get(addr)
            if held is None:
                self._responses[addr] = [msg]
            else:
                held.append(msg)
            return True
        if isinstance(msg, Ack | Fragment):
            raise EncodeError("ACK and FRAGMENT are sent by the endpoint itself")
        body = encode_body(msg, dst)
        if body.src and body.src != self.ctx.node_id:
            raise EncodeError(f"message from {body.src!r} sent by node {self.ctx.node_id!r}")
        id_bytes("dst", body.dst, allow_empty=True)
        size = self.ctx.overhead(body.dst) + len(body.body)
        if size > self.ctx.max_datagram_bytes:
            return self._send_oversize(addr, msg, body, reliable, now)
        peer = self._peer(addr)
        if peer is None:
            return False
        if reliable:
            return self._enqueue_reliable(addr, peer, [body], now)
        msg_id = self._id_floor  # unreliable ids: one sequence for all peers (see above)
        self._id_floor += 1
        self.counters["sent_unreliable"] += 1
        return self._emit(seal(body, self.ctx, msg_id=msg_id), addr)

    def _send_oversize(
        self, addr: A, msg: WireMessage, body: EncodedBody, reliable: bool, now: float
    ) -> bool:
        if isinstance(msg, AppendEntries) and len(msg.entries) > 1:
            parts = split_append_entries(msg, self.ctx.max_datagram_bytes)
            if len(parts) > 1:
                self.counters["split_append_entries"] += 1
                results = [self.send(addr, part, reliable, now) for part in parts]
                return all(results)
        group_id = self._next_group
        self._next_group += 1
        inner = seal(
            body, self.ctx, msg_id=group_id, flags=FLAG_INNER, max_bytes=self.ctx.max_message_bytes
        )
        chunk = fragment_chunk_size(self.ctx, body.dst)
        units = [encode_body(f, body.dst) for f in split_into_fragments(inner, group_id, chunk)]
        peer = self._peer(addr)
        if peer is None:
            return False
        self.counters["fragmented"] += 1
        self.counters["fragments_sent"] += len(units)
        return self._enqueue_reliable(addr, peer, units, now)

    def _enqueue_reliable(self, addr: A, peer: PeerState, units: list[EncodedBody], now: float) -> bool:
        if len(peer.backlog) + len(units) > self.config.backlog_msgs:
            self.counters["backlog_full"] += 1
            return False
        size = sum(self.ctx.overhead(u.dst) + len(u.body) for u in units)  # = sealed sizes
        if self._reliable_bytes + size > self.config.reliable_bytes_max:
            self.counters["reliable_bytes_full"] += 1
            return False
        self._reliable_bytes += size
        peer.backlog.extend(units)
        self._pump(addr, peer, now)
        return True

    def _pump(self, addr: A, peer: PeerState, now: float) -> None:
        """Admit backlogged reliable messages while the peer's id window allows."""
        backlog = peer.backlog
        window = self.config.window_msgs
        while backlog:
            oldest = next(iter(peer.unacked), peer.next_rel)
            if peer.next_rel - oldest >= window:
                return
            body = backlog.popleft()
            msg_id = peer.next_rel
            peer.next_rel += 1
            self._id_floor = max(self._id_floor, peer.next_rel)
            data = seal(body, self.ctx, msg_id=msg_id, flags=FLAG_ACK_REQUESTED)
            deadline = now + peer.rtt.rto_s
            peer.unacked[msg_id] = PendingSend(data, now, deadline)
            self._n_unacked += 1
            self._push_timer(deadline, addr, msg_id)
            self.counters["sent_reliable"] += 1
            self._emit(data, addr)

    def _emit(self, data: bytes, addr: A) -> bool:
        cfg = self.config
        if (
            len(self._outbox) >= cfg.send_queue_datagrams
            or self._outbox_bytes + len(data) > cfg.send_queue_bytes
        ):
            self.counters["send_queue_full"] += 1
            return False
        self._outbox.append((data, addr))
        self._outbox_bytes += len(data)
        return True

    def _peer(self, addr: A) -> PeerState | None:
        peers = self._peers
        peer = peers.get(addr)
        if peer is not None:
            peers.move_to_end(addr)
            return peer
        if len(peers) >= self.config.max_peers and not self._evict_idle_peer():
            self.counters["peers_full"] += 1
            return None
        cfg = self.config
        rtt = RttEstimator(cfg.rto_s_initial, cfg.rto_s_min, cfg.rto_s_max, cfg.clock_granularity_s)
        peer = peers[addr] = PeerState(self._id_floor, rtt)
        return peer

    def _evict_idle_peer(self) -> bool:
        for i, (addr, peer) in enumerate(self._peers.items()):
            if i >= 64:
                break
            if not peer.unacked and not peer.backlog:
                del self._peers[addr]
                self.counters["peers_evicted"] += 1
                return True
        return False

    def forget_peer(self, addr: A) -> None:
        """Drop all state for ``addr`` (e.g. the node moved); its queued messages are lost."""
        self._responses.pop(addr, None)
        self._batch_addrs.pop(addr, None)
        peer = self._peers.pop(addr, None)
        if peer is None:
            return
        self._n_unacked -= len(peer.unacked)
        self._reliable_bytes -= sum(len(p.data) for p in peer.unacked.values())
        self._reliable_bytes -= sum(self.ctx.overhead(b.dst) + len(b.body) for b in peer.backlog)
        self.counters["peers_forgotten"] += 1

    # ------------------------------------------------------------------ receiving

    def receive_datagram(self, data: bytes, addr: A, now: float) -> list[Delivery[A]]:
        """Check, dedupe and acknowledge one datagram; return what to deliver (0 or 1)."""
        r = decode(data, self.ctx)
        if not isinstance(r, Decoded):
            self.counters["drop_" + r.reason.value] += 1
            return []
        if r.msg_id == 0:
            self.counters["no_msg_id"] += 1
            return []
        reliable = bool(r.flags & FLAG_ACK_REQUESTED)
        channel = dedupe.RELIABLE if reliable else dedupe.UNRELIABLE
        verdict = self._senders.observe(r.sender, r.incarnation, channel, r.msg_id)
        if verdict == dedupe.TOO_OLD:
            self.counters["replays"] += 1
            return []
        if reliable:
            self._queue_ack(addr, r.sender, r.incarnation, r.msg_id, now)
        if verdict == dedupe.DUPLICATE:
            self.counters["duplicates"] += 1
            return []
        msg = r.msg
        if isinstance(msg, Ack):
            self._on_ack(addr, msg, now)
            return []
        if isinstance(msg, Fragment):
            return self._on_fragment(addr, r, msg, now)
        if type(msg) is ClientBatch:
            return self._on_client_batch(addr, r.sender, r.incarnation, r.msg_id, reliable, msg, now)
        self.counters["delivered"] += 1
        return [Delivery(msg, r.sender, r.incarnation, addr, r.msg_id, reliable)]

    def _on_fragment(self, addr: A, r: Decoded, frag: Fragment, now: float) -> list[Delivery[A]]:
        whole = self._reassembler.add((r.sender, r.incarnation, frag.group_id), frag, now)
        if whole is None:
            return []
        inner = decode(whole, self.ctx, inner=True)
        if not isinstance(inner, Decoded):
            self.counters["inner_dropped"] += 1
            self.counters["drop_" + inner.reason.value] += 1
            return []
        same_origin = inner.sender == r.sender and inner.incarnation == r.incarnation
        if not same_origin or inner.msg_id != frag.group_id:
            self.counters["inner_dropped"] += 1
            return []
        if isinstance(inner.msg, Ack | Fragment):
            self.counters["nested"] += 1
            return []
        if type(inner.msg) is ClientBatch:
            batch = inner.msg
            return self._on_client_batch(addr, r.sender, r.incarnation, inner.msg_id, True, batch, now)
        self.counters["delivered"] += 1
        return [Delivery(inner.msg, r.sender, r.incarnation, addr, inner.msg_id, True)]

    def _on_client_batch(
        self, addr: A, sender: str, inc: int, msg_id: int, rel: bool, batch: ClientBatch, now: float
    ) -> list[Delivery[A]]:
        marks = self._batch_addrs
        if addr in marks:
            marks.move_to_end(addr)
        else:
            if len(marks) >= self.config.max_batch_addrs:
                old, _ = marks.popitem(last=False)
                self._flush_responses_to(old, now)
            marks[addr] = None
        n = len(batch.requests)
        self.counters["client_batches_in"] += 1
        self.counters["client_batched_requests"] += n
        self.counters["delivered"] += n
        return [Delivery(req, sender, inc, addr, msg_id, rel) for req in batch.requests]

    def _queue_ack(self, addr: A, sender: str, incarnation: int, msg_id: int, now: float) -> None:
        key = (addr, sender, incarnation)
        batch = self._acks.get(key)
        if batch is None:
            if len(self._acks) >= self.config.max_ack_batches:
                self.counters["ack_overflow"] += 1
                return
            batch = self._acks[key] = AckBatch(now)
        if len(batch.ids) >= self.config.pending_acks_per_peer:
            self.counters["ack_overflow"] += 1
            return
        batch.ids.append(msg_id)

    def _on_ack(self, addr: A, ack: Ack, now: float) -> None:
        if ack.incarnation != self.ctx.incarnation:
            self.counters["ack_stale"] += 1
            return
        peer = self._peers.get(addr)
        if peer is None or not peer.unacked:
            return
        unacked = peer.unacked
        acked = 0
        for msg_id in acked_ids(ack.ranges, unacked):
            pending = unacked.pop(msg_id, None)
            if pending is None:
                continue
            acked += 1
            self._reliable_bytes -= len(pending.data)
            if pending.transmissions == 1:  # Karn's rule
                peer.rtt.sample(now - pending.first_sent_s)
                self.counters["rtt_samples"] += 1
        self._n_unacked -= acked
        self.counters["acked"] += acked
        if peer.backlog:
            self._pump(addr, peer, now)

    # ------------------------------------------------------------------ output and timers

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, A]]:
        """Everything ready to go out: due ACKs first, then the client responses held for
        this flush, then the other queued datagrams (in the order they were queued).

        Responses go before the rest because loopback (and any fast link) delivers a
        datagram inside ``sendto`` and wakes its receiver there: a client answered first
        gets a CPU before the followers woken by the same flush's commit notices start
        applying (64 clients x 8 in flight on 2 cores: the answer otherwise waited ~1.4 ms
        for both followers' apply)."""
        out: list[tuple[bytes, A]] = self._flush_acks(now) if self._acks else []
        outbox = self._outbox
        if self._responses:
            queued = len(outbox)
            for addr in list(self._responses):
                self._flush_responses_to(addr, now)
            if queued:
                outbox.rotate(-queued)  # the responses just queued to the front
        if outbox:
            out.extend(outbox)
            outbox.clear()
            self._outbox_bytes = 0
        return out

    def _flush_responses_to(self, addr: A, now: float) -> None:
        """Send the responses held for ``addr``: together where they fit, else alone."""
        held = self._responses.pop(addr, None)
        if not held:
            return
        self.counters["client_responses_out"] += len(held)
        alone = [r for r in held if r.blobs]
        together = [r for r in held if not r.blobs] if alone else held
        per = self.config.responses_per_datagram
        for i in range(0, len(together), per):
            self._send_responses(addr, together[i : i + per], now)
        for r in alone:
            self._send_plain(addr, r, now)

    def _send_responses(self, addr: A, group: list[ClientResponse], now: float) -> None:
        if len(group) == 1:
            self._send_plain(addr, group[0], now)
            return
        body = encode_body(ClientResponses(tuple(group)))
        if self.ctx.overhead() + len(body.body) > self.ctx.max_datagram_bytes:
            half = len(group) // 2
            self._send_responses(addr, group[:half], now)
            self._send_responses(addr, group[half:], now)
            return
        if self._emit_unreliable(addr, body):
            self.counters["client_responses_coalesced"] += len(group)

    def _send_plain(self, addr: A, resp: ClientResponse, now: float) -> None:
        body = encode_body(resp)
        if self.ctx.overhead() + len(body.body) > self.ctx.max_datagram_bytes:
            self._send_oversize(addr, resp, body, False, now)
            return
        self._emit_unreliable(addr, body)

    def _emit_unreliable(self, addr: A, body: EncodedBody) -> bool:
        """Seal one body under the peer's next unreliable id and queue it (False: no peer
        slot for ``addr``)."""
        peer = self._peer(addr)
        if peer is None:
            return False
        msg_id = self._id_floor  # unreliable ids: one sequence for all peers (see above)
        self._id_floor += 1
        self.counters["sent_unreliable"] += 1
        self._emit(seal(body, self.ctx, msg_id=msg_id), addr)
        return True

    def _flush_acks(self, now: float) -> list[tuple[bytes, A]]:
        out: list[tuple[bytes, A]] = []
        delay = self.config.ack_delay_s
        per_datagram = self.config.ack_ranges_per_datagram
        for key, batch in list(self._acks.items()):
            if batch.first_s + delay > now:
                continue
            del self._acks[key]
            addr, sender, incarnation = key
            ranges = to_ranges(batch.ids)
            for i in range(0, len(ranges), per_datagram):
                body = encode_body(Ack(incarnation, tuple(ranges[i : i + per_datagram])), sender)
                msg_id = self._id_floor
                self._id_floor += 1
                out.append((seal(body, self.ctx, msg_id=msg_id), addr))
                self.counters["acks_sent"] += 1
            self.counters["ack_ids_sent"] += len(batch.ids)
        return out

    def next_deadline(self) -> float | None:
        """The earliest time :meth:`handle_timer` or :meth:`datagrams_to_send` has work."""
        deadlines = [0.0] if self._responses else []  # held responses: due now
        timers = self._timers
        while timers and not self._timer_live(timers[0]):
            heapq.heappop(timers)
        if timers:
            deadlines.append(timers[0][0])
        for batch in self._acks.values():  # insertion order: the first is the oldest
            deadlines.append(batch.first_s + self.config.ack_delay_s)
            break
        reassembly = self._reassembler.next_deadline()
        if reassembly is not None:
            deadlines.append(reassembly)
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        """Retransmit what timed out, give up on what ran out of retries, expire reassembly."""
        cfg = self.config
        timers = self._timers
        pump: dict[A, PeerState] = {}
        while timers and timers[0][0] <= now:
            entry = heapq.heappop(timers)
            if not self._timer_live(entry):
                continue
            _, _, addr, msg_id = entry
            peer = self._peers[addr]
            pending = peer.unacked[msg_id]
            if pending.transmissions > cfg.max_retries:
                del peer.unacked[msg_id]
                self._n_unacked -= 1
                self._reliable_bytes -= len(pending.data)
                self.counters["gave_up"] += 1
                pump[addr] = peer
                continue
            pending.transmissions += 1
            timeout = peer.rtt.rto_s * 2.0 ** min(pending.transmissions - 1, 62)
            pending.deadline_s = now + min(timeout, cfg.rto_s_max)
            self._push_timer(pending.deadline_s, addr, msg_id)
            self.counters["retransmits"] += 1
            self._emit(pending.data, addr)
        for addr, peer in pump.items():
            self._pump(addr, peer, now)
        self._reassembler.expire(now)
        if len(timers) > 2 * self._n_unacked + 1024:
            self._compact_timers()

    def _push_timer(self, deadline: float, addr: A, msg_id: int) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, (deadline, self._timer_seq, addr, msg_id))

    def _timer_live(self, entry: tuple[float, int, A, int]) -> bool:
        deadline, _, addr, msg_id = entry
        peer = self._peers.get(addr)
        if peer is None:
            return False
        pending = peer.unacked.get(msg_id)
        return pending is not None and pending.deadline_s == deadline

    def _compact_timers(self) -> None:
        self._timers = [e for e in self._timers if self._timer_live(e)]
        heapq.heapify(self._timers)

    @property
    def timer_entries(self) -> int:
        """Size of the timer heap, live and stale (bounded: see handle_timer)."""
        return len(self._timers)
