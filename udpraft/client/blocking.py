"""``Client``: the blocking driver, on one plain UDP socket (so gevent can patch it).

How this works: each call sends its request, waits for an answer with a short per-try
timeout, and retries — same request id, same sequence number — on the leader it learns
from answers, rotating through the nodes when one is silent. The overall ``timeout`` bounds
the call; what is left unknown when it expires raises ``Timeout``. One ``Client`` serves one
caller at a time (give each thread or greenlet its own); ``AsyncClient`` pipelines.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

from udpraft.client.core import (
    ClientCore,
    Entry,
    NotApplied,
    Result,
    cluster_file_args,
    entries_of,
    expired_error,
    parse_nodes,
)
from udpraft.errors import ClusterConfigError, NoQuorum, Rejected, SessionExpired, Timeout
from udpraft.wire import ClientKind, ClientRequest, ClientResponse

TRY_TIMEOUT_S = 0.25
TRY_TIMEOUT_S_MAX = 1.0
RECV_BYTES = 65_535


class Client:
    def __init__(
        self,
        nodes: list[str] | dict[str, str],
        secret: bytes | None = None,
        cluster_id: str = "udpraft",
        client_id: str | None = None,
    ) -> None:
        addrs = parse_nodes(nodes)
        if secret is None:
            secret = _secret_from_env()
        self.core = ClientCore(addrs, cluster_id, secret, client_id)
        self._by_addr = {a: nid for nid, a in addrs.items()}
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.bind(("0.0.0.0", 0))

    @classmethod
    def from_cluster_file(cls, path: str = "data/cluster.json", **kw: Any) -> Client:
        return cls(**cluster_file_args(path), **kw)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ public API

    def submit(self, data: bytes, timeout: float = 5.0) -> Result:
        """Append ``data`` to the log; returns once it is committed (applied at most once)."""
        core = self.core
        deadline = time.monotonic() + timeout
        for _ in range(3):
            seq = core.next_seq()
            req = core.submit_request(core.new_req_id(), [seq], [bytes(data)])
            try:
                resp = self._call(req, max(0.01, deadline - time.monotonic()))
            except NotApplied:
                core.new_session()  # refused on its only try, so not applied: a fresh session
                continue
            except SessionExpired:
                core.new_session()  # an earlier try may have applied it: outcome unknown
                raise
            except Timeout:
                if not core.opened:
                    core.new_session()  # later seqs could not be matched to this session
                raise
            for s, index, term in resp.body.get("done", []):
                if s == seq:
                    core.opened = True
                    return Result(int(index), int(term))
            raise Rejected(f"unexpected answer to submit: {resp.body}")
        raise SessionExpired("the cluster keeps expiring this client's sessions")

    def retrieve(self, start: int = 1, timeout: float = 5.0) -> list[Entry]:
        """Committed entries from ``start`` on, in log order (linearizable)."""
        out: list[Entry] = []
        nxt = max(1, int(start))
        deadline = time.monotonic() + timeout
        while True:
            req = self.core.simple_request(
                ClientKind.RETRIEVE, self.core.new_req_id(), {"start": nxt}
            )
            resp = self._call(req, max(0.05, deadline - time.monotonic()))
            ents = entries_of(resp, nxt)
            if ents is None:
                raise Rejected("malformed retrieve answer")
            out.extend(ents)
            if not resp.body.get("more"):
                return out
            nxt = int(resp.body.get("next", nxt + len(ents)))

    def status(self, timeout: float = 1.0) -> list[dict[str, Any]]:
        """One status object per node that answered within ``timeout``."""
        out = []
        for nid, addr in self.core.nodes.items():
            req = self.core.simple_request(ClientKind.STATUS, self.core.new_req_id(), {})
            try:
                resp = self._exchange(req, addr, min(timeout, 0.5))
            except OSError:
                resp = None
            if resp is None:
                out.append({"id": nid, "reachable": False})
            else:
                out.append({**resp.body, "reachable": True})
        return out

    # ------------------------------------------------------------------ plumbing

    def _call(self, req: ClientRequest, timeout: float) -> ClientResponse:
        core = self.core
        deadline = time.monotonic() + timeout
        attempt = 0
        try_s = TRY_TIMEOUT_S
        last_error = ""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Timeout(f"no answer within {timeout:.2f}s ({last_error or 'silence'})")
            _, addr = core.target(attempt)
            attempt += 1
            try:
                resp = self._exchange(req, addr, min(try_s, left))
            except OSError as e:  # ECONNREFUSED from a dead node's port, EPERM from a firewall
                last_error = f"{addr[0]}:{addr[1]}: {e.strerror or e}"
                core.forget_leader()
                time.sleep(min(0.02, max(0.0, deadline - time.monotonic())))
                continue
            if resp is None:
                core.forget_leader()
                try_s = min(try_s * 1.5, TRY_TIMEOUT_S_MAX)
                continue
            if resp.ok:
                return resp
            code = str(resp.body.get("error", ""))
            last_error = code
            if code == "expired":
                raise expired_error(attempt, str(resp.body.get("message", "session expired")))
            if code in ("too_large", "bad_request"):
                raise Rejected(str(resp.body.get("message", code)))
            if code in ("no_leader", "busy", "not_leader", "unavailable"):
                if code != "not_leader" or not resp.leader_hint:
                    time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
                if code == "no_leader" and time.monotonic() >= deadline:
                    raise NoQuorum("no leader could be found")
                continue
            raise Rejected(f"request refused: {resp.body}")

    def _exchange(
        self, req: ClientRequest, addr: tuple[str, int], wait_s: float
    ) -> ClientResponse | None:
        self.sock.sendto(self.core.encode(req), addr)
        end = time.monotonic() + wait_s
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data, _src = self.sock.recvfrom(RECV_BYTES)
            except TimeoutError:
                return None
            for resp in self.core.parse_all(data):
                if resp.req_id == req.req_id and resp.kind == req.kind:
                    return resp


def _secret_from_env() -> bytes:
    path = os.environ.get("UDPRAFT_SECRET_FILE")
    if path:
        with open(path, "rb") as f:
            return f.read().strip()
    default = os.path.join("data", "secret")
    if os.path.exists(default):
        with open(default, "rb") as f:
            return f.read().strip()
    raise ClusterConfigError(
        "no cluster secret: pass secret=..., set UDPRAFT_SECRET_FILE, or use from_cluster_file"
    )
