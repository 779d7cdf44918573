"""The sans-IO half of the client: session, request building, response parsing, targeting.

How this works: a client is one exactly-once session (dissertation §6.3): a random client id
and sequence numbers 1, 2, 3, ... A request keeps its ``req_id`` and ``seq`` across retries,
so a retry after a lost answer can never apply twice. The first request of a session travels
alone (it opens the session on the cluster); after its answer, requests may be pipelined.

Targeting: send to the leader we believe in; a follower forwards to its leader anyway, and
every answer carries a leader hint. After a silent try, rotate to the next node. Both
drivers (blocking sockets for gevent/locust, asyncio) share this logic.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from udpraft.errors import Compacted, SessionExpired
from udpraft.wire import (
    ClientKind,
    ClientRequest,
    ClientResponse,
    ClientResponses,
    Decoded,
    WireContext,
    decode,
    encode,
    entries_from_wire,
)


@dataclass(frozen=True, slots=True)
class Result:
    """A committed submit: where it sits in the log."""

    index: int
    term: int


def _result_builder() -> Callable[[int, int], Result]:
    """``Result(index, term)`` through the slot setters: a frozen dataclass's ``__init__``
    (``object.__setattr__`` per field) costs ~2x, once per committed submit on hot paths.
    The plain constructor if Result's shape ever changes."""
    if getattr(Result, "__slots__", None) != ("index", "term"):
        return Result
    si, st = (getattr(Result, n).__set__ for n in ("index", "term"))
    new = object.__new__

    def build(index: int, term: int) -> Result:
        r: Result = new(Result)
        si(r, index)
        st(r, term)
        return r

    return build


new_result = _result_builder()


@dataclass(frozen=True, slots=True)
class Entry:
    """A committed log entry as clients see it."""

    index: int
    term: int
    data: bytes


class ClientCore:
    def __init__(
        self,
        nodes: dict[str, tuple[str, int]],
        cluster_id: str,
        secret: bytes,
        client_id: str | None = None,
    ) -> None:
        if not nodes:
            raise ValueError("a client needs at least one node address")
        self.nodes = dict(nodes)
        self.order = list(self.nodes)
        self._cluster_id = cluster_id
        self._secret = secret
        self._req_ids = itertools.count(1)
        self._msg_ids = itertools.count(1)
        self.leader = ""
        self._rr = 0
        self.new_session(client_id)

    def new_session(self, client_id: str | None = None) -> None:
        """Start a fresh session: a new random client id, sequence numbers from 1.

        Used when the cluster refused a request as expired (so it did not apply) or when the
        session's opening request timed out (so later ones could not be matched to it).
        """
        self.client_id = client_id or "c-" + secrets.token_hex(8)
        self.ctx = WireContext(
            cluster_id=self._cluster_id,
            secret=self._secret,
            node_id=self.client_id,
            incarnation=secrets.randbelow(2**62) + 1,
        )
        self._seq = 0
        self.opened = False  # the session's first request was answered

    # ---------------------------------------------------------------- requests

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def new_req_id(self) -> int:
        return next(self._req_ids)

    def submit_request(self, req_id: int, seqs: list[int], payloads: list[bytes]) -> ClientRequest:
        return ClientRequest(
            ClientKind.SUBMIT, req_id, self.client_id, {"seqs": seqs}, tuple(payloads)
        )

    def simple_request(self, kind: ClientKind, req_id: int, body: dict[str, Any]) -> ClientRequest:
        return ClientRequest(kind, req_id, self.client_id, body)

    def encode(self, req: ClientRequest) -> bytes:
        return encode(req, self.ctx, msg_id=next(self._msg_ids))

    # ---------------------------------------------------------------- targeting

    def target(self, attempt: int) -> tuple[str, tuple[str, int]]:
        """Where to send try number ``attempt`` (0 = first)."""
        if self.leader in self.nodes and attempt % 3 != 2:
            return self.leader, self.nodes[self.leader]
        self._rr = (self._rr + 1) % len(self.order)
        nid = self.order[self._rr]
        return nid, self.nodes[nid]

    def note_leader(self, hint: str) -> None:
        if hint in self.nodes:
            self.leader = hint

    def forget_leader(self) -> None:
        self.leader = ""

    # ---------------------------------------------------------------- responses

    def parse(self, data: bytes) -> ClientResponse | None:
        """The first response in ``data`` (see :meth:`parse_all`), or None."""
        got = self.parse_all(data)
        return got[0] if got else None

    def parse_all(self, data: bytes) -> list[ClientResponse]:
        """The responses in one datagram: a ClientResponse, or several in ClientResponses
        (a node answering several requests to this address at once). Notes leader hints."""
        return responses_in(data, self.ctx, self.note_leader)


def responses_in(
    data: bytes, ctx: WireContext, note_leader: Callable[[str], None] | None = None
) -> list[ClientResponse]:
    """Decode one datagram sent to a client; [] for anything that is not a response."""
    d = decode(data, ctx)
    if not isinstance(d, Decoded):
        return []
    msg = d.msg
    if type(msg) is ClientResponse:
        if msg.leader_hint and note_leader is not None:
            note_leader(msg.leader_hint)
        return [msg]
    if type(msg) is ClientResponses:
        if note_leader is not None:
            for r in msg.responses:
                if r.leader_hint:
                    note_leader(r.leader_hint)
                    break
        return list(msg.responses)
    return []


class NotApplied(SessionExpired):
    """An "expired" refusal of a request sent only once: that one entry is the request's
    only copy in the log, and it was refused, so the payload may be sent again in a new
    session. After several tries an earlier copy may have applied before the session
    ended (a lost answer): that refusal is a plain SessionExpired, the outcome unknown."""


def expired_error(tries: int, message: str) -> SessionExpired:
    """What an "expired" answer to a request sent ``tries`` times means for its caller."""
    return NotApplied(message) if tries == 1 else SessionExpired(message)


def entries_of(resp: ClientResponse, start: int) -> list[Entry] | None:
    """The entries of a retrieve answer for ``start`` (None: malformed); raises Compacted
    when the log no longer holds ``start`` (the node answered from its first index)."""
    first = resp.body.get("compacted_before")
    if type(first) is int and start < first:
        raise Compacted(start, first)
    ents = entries_from_wire(resp.body.get("entries"), resp.blobs)
    if ents is None:
        return None
    return [Entry(e.index, e.term, e.data) for e in ents]


def parse_nodes(nodes: list[str] | dict[str, str]) -> dict[str, tuple[str, int]]:
    """``["host:port", ...]`` (ids = addresses) or ``{id: "host:port"}`` as addresses."""
    from udpraft.config import parse_addr

    if isinstance(nodes, dict):
        return {nid: parse_addr(a) for nid, a in nodes.items()}
    return {a: parse_addr(a) for a in nodes}


def cluster_file_args(path: str) -> dict[str, Any]:
    """Constructor arguments of a client for the cluster described by ``path``."""
    from udpraft.config import load_cluster, load_secret
    from udpraft.errors import ClusterConfigError

    try:
        cfg = load_cluster(path)
        secret = load_secret(path)
    except (OSError, ValueError) as e:
        raise ClusterConfigError(str(e)) from e
    nodes = {n.id: f"{n.udp[0]}:{n.udp[1]}" for n in cfg.nodes}
    return {"nodes": nodes, "secret": secret, "cluster_id": cfg.cluster}
