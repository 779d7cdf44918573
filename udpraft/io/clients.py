"""Client requests on a node: submit (with forwarding), retrieve, status.

How this works: part of NodeRuntime (a mixin; runtime.py owns the state it declares here).
A submit on a follower is forwarded to the leader, which answers the client directly. On the
leader each (client id, seq) is proposed once: a retry of a request already in the log waits
for that entry, and one already applied is answered from the session table. Waiters are
bounded (``MAX_WAITERS`` requests, then "busy"; ``MAX_WAITERS_PER_KEY`` tries of one), forgotten
after ``WAITER_TTL_S``, and sent to the leader when this node stops leading. Retrieve is a
linearizable read (ReadIndex) answered in pages of at most ``RETRIEVE_MAX_BYTES``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from udpraft.core.raft import RaftNode
from udpraft.core.ready import ReadState, Role
from udpraft.core.types import Entry
from udpraft.reliability.endpoint import ReliableEndpoint
from udpraft.service.logservice import APP_PREFIX, LogService
from udpraft.wire import ClientKind, ClientRequest, ClientResponse, Forward, entries_to_wire
from udpraft.wire.envelope import MAX_U63

Addr = tuple[str, int]
MAX_WAITERS = 200_000  # client requests waiting for their entry to apply
MAX_WAITERS_PER_KEY = 8  # retries of one (client, seq) waiting together; the oldest go first
WAITER_TTL_S = 30.0  # a waiter older than this is forgotten (the client has retried or left)
MAX_ENTRY_BYTES = 60_000
RETRIEVE_MAX_BYTES = 40_000


class ClientHandling:
    id: str
    raft: RaftNode
    service: LogService
    ep: ReliableEndpoint[Addr]
    addr_of: dict[str, Addr]
    counters: Counter[str]
    _proposals: list[tuple[bytes, str, int]]
    _waiters: dict[tuple[str, int], list[tuple[int, Addr, float]]]

    def status(self) -> dict[str, Any]:
        raise NotImplementedError

    def read_index(self, handler: Callable[[ReadState], None]) -> None:
        raise NotImplementedError

    def _on_client(self, req: ClientRequest, reply_to: Addr, forwarded: bool) -> None:
        self.counters[f"client_{req.kind.name.lower()}"] += 1
        if req.kind == ClientKind.SUBMIT:
            self._on_submit(req, reply_to, forwarded)
        elif req.kind == ClientKind.RETRIEVE:
            self._on_retrieve(req, reply_to)
        elif req.kind == ClientKind.STATUS:
            self._reply(ClientResponse(ClientKind.STATUS, req.req_id, True, self.status(), self.raft.leader), reply_to)
        else:
            self._reply_error(req.kind, req.req_id, reply_to, "bad_request", "unsupported request")

    def _on_submit(self, req: ClientRequest, reply_to: Addr, forwarded: bool) -> None:
        seqs = req.body.get("seqs")
        if (
            not isinstance(seqs, list)
            or len(seqs) != len(req.blobs)
            or not seqs
            # every seq travels in the log's appends, which carry u63s only: a larger one
            # would be an entry no follower accepts, stalling every commit after it
            or not all(type(s) is int and 0 < s < MAX_U63 for s in seqs)
        ):
            self._reply_error(ClientKind.SUBMIT, req.req_id, reply_to, "bad_request", "seqs/payloads mismatch")
            return
        if any(b.startswith(APP_PREFIX) for b in req.blobs):
            self._reply_error(ClientKind.SUBMIT, req.req_id, reply_to, "bad_request", "payload uses the reserved application prefix")
            return
        if any(len(b) > MAX_ENTRY_BYTES for b in req.blobs):
            self._reply_error(ClientKind.SUBMIT, req.req_id, reply_to, "too_large", f"payload over {MAX_ENTRY_BYTES} bytes")
            return
        if self.raft.role != Role.LEADER:
            leader = self.raft.leader
            if leader and leader in self.addr_of and not forwarded:
                fwd = Forward(reply_to[0], reply_to[1], req)
                self.ep.send(self.addr_of[leader], fwd, True, time.monotonic(), dst=leader)
                self.counters["forwarded"] += 1
            else:
                code = "not_leader" if leader else "no_leader"
                self._reply_error(ClientKind.SUBMIT, req.req_id, reply_to, code, "not the leader")
            return
        if len(self._waiters) >= MAX_WAITERS:
            self._reply_error(ClientKind.SUBMIT, req.req_id, reply_to, "busy", "too many requests in flight")
            return
        done = []
        cid = req.client_id
        hits = self.service.lookup_all(cid, seqs)  # retries already applied: usually none
        waiter = (req.req_id, reply_to, time.monotonic())
        waiters, propose = self._waiters, self._proposals.append
        for seq, data in zip(seqs, req.blobs):
            if hits:
                hit = hits.get(seq)
                if hit is not None:
                    done.append([seq, hit.index, hit.term])
                    continue
            key = (cid, seq)
            ws = waiters.get(key)
            if ws is not None:  # a retry of a request already in the log: just wait for it
                if len(ws) >= MAX_WAITERS_PER_KEY:
                    del ws[0]  # an older try of the same request: its client has moved on
                ws.append(waiter)
                continue
            waiters[key] = [waiter]
            propose((data, cid, seq))
        if done:
            self._reply(ClientResponse(ClientKind.SUBMIT, req.req_id, True, {"done": done}, self.id), reply_to)

    def _fail_waiters(self, props: list[tuple[bytes, str, int]], code: str, leader: str) -> None:
        for _data, cid, seq in props:
            for req_id, addr, _t in self._waiters.pop((cid, seq), []):
                self._reply_error(ClientKind.SUBMIT, req_id, addr, code, code, leader)

    def _lost_leadership(self) -> None:
        """This node stopped leading. The entries its waiters wait for may never commit (a
        new leader can overwrite them), and were this node to lead again, a retry here
        would only join the stale waiter instead of proposing: the client would wait
        forever, each retry keeping the waiter young. So every waiting request is told to
        retry at the leader (its (client, seq) keeps the retry exactly-once) and
        forgotten. Entries this node applies later answer nobody here."""
        waiters, self._waiters = self._waiters, {}
        leader = self.raft.leader
        code = "not_leader" if leader else "no_leader"
        told: set[tuple[int, Addr]] = set()
        for ws in waiters.values():
            for req_id, addr, _t in ws:
                if (req_id, addr) not in told:  # one answer per request, not per seq
                    told.add((req_id, addr))
                    self._reply_error(ClientKind.SUBMIT, req_id, addr, code, "leadership lost", leader)
        self.counters["waiters_lost_leadership"] += sum(map(len, waiters.values()))

    def _expire_waiters(self) -> None:
        cutoff = time.monotonic() - WAITER_TTL_S
        dead = [k for k, ws in self._waiters.items() if all(t < cutoff for _r, _a, t in ws)]
        for k in dead:
            del self._waiters[k]
        self.counters["waiters_expired"] += len(dead)

    def _on_retrieve(self, req: ClientRequest, reply_to: Addr) -> None:
        start = req.body.get("start", 1)
        if type(start) is not int or start < 1:
            self._reply_error(ClientKind.RETRIEVE, req.req_id, reply_to, "bad_request", "start must be >= 1")
            return

        def serve(rs: ReadState) -> None:
            if not rs.ok:
                code = "not_leader" if self.raft.leader else "no_leader"
                self._reply_error(ClientKind.RETRIEVE, req.req_id, reply_to, code, "read not confirmed")
                return
            ents, nxt, more = self.retrieve_entries(start, RETRIEVE_MAX_BYTES)
            rows, blobs = entries_to_wire(ents)
            body: dict[str, Any] = {"entries": rows, "next": nxt, "more": more}
            first = self.raft.log.first_index()
            if start < first:  # [snapshots] what lies before is in a snapshot, not the log
                body["compacted_before"] = first
            self._reply(ClientResponse(ClientKind.RETRIEVE, req.req_id, True, body, self.raft.leader, blobs), reply_to)

        self.read_index(serve)

    def retrieve_entries(self, start: int, max_bytes: int) -> tuple[list[Entry], int, bool]:
        """Client-visible applied entries from ``start``; (entries, next start, more?)."""
        log_ = self.raft.log
        hi = self.service.applied_index
        i = max(start, log_.first_index())
        out: list[Entry] = []
        size = 0
        while i <= hi:
            e = log_.entry(i)
            i += 1
            if not self.service.visible(e):
                continue
            size += len(e.data) + 64
            if out and size > max_bytes:
                return out, e.index, True
            out.append(e)
        return out, i, False

    def _reply(self, resp: ClientResponse, addr: Addr) -> None:
        self.ep.send(addr, resp, False, time.monotonic())

    def _reply_error(
        self, kind: ClientKind, req_id: int, addr: Addr, code: str, message: str, leader: str = ""
    ) -> None:
        body = {"error": code, "message": message}
        self._reply(ClientResponse(kind, req_id, False, body, leader or self.raft.leader), addr)
