"""Membership administration over the nodes' HTTP ``/members`` endpoint (blocking).

    from udpraft.admin import Admin
    adm = Admin.from_cluster_file("data/cluster.json")
    adm.members()                                        # voters, learners, removed, addresses
    adm.add("n6", udp="127.0.0.1:7006", http="127.0.0.1:2384")   # learner, catch up, promote
    adm.remove("n2")

How this works: a change is sent to any node; a follower answers 421 with the leader's id
and HTTP address, and the request is retried there (each node at most twice). ``add`` is
the safe way to grow a cluster: the new node joins as a learner (it does not count for any
quorum while its log is empty), ``add`` waits until its log matches the leader's commit
index, then promotes it. Ids are never reused: a removed id is refused for good.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

from udpraft.config import format_addr, load_cluster
from udpraft.errors import ClusterConfigError, NoQuorum, Rejected, Timeout, UdpRaftError

CATCH_UP_SLACK = 64  # a learner this close to the leader's commit index is caught up


class MembershipError(Rejected):
    """The cluster refused the membership change (``status`` is the HTTP status)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class Admin:
    def __init__(self, http_addrs: list[str], timeout: float = 15.0) -> None:
        if not http_addrs:
            raise ClusterConfigError("no node HTTP addresses given")
        self.addrs = list(http_addrs)
        self.timeout = timeout

    @classmethod
    def from_cluster_file(cls, path: str, timeout: float = 15.0) -> Admin:
        try:
            cfg = load_cluster(path)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ClusterConfigError(str(e)) from None
        return cls([format_addr(n.http) for n in cfg.nodes], timeout)

    # ---------------------------------------------------------------- requests

    def _call(self, addr: str, method: str, body: dict[str, Any] | None, timeout: float) -> tuple[int, dict[str, Any]]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"http://{addr}/members", data=data, method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            try:
                got: dict[str, Any] = json.loads(e.read())
            except ValueError:
                got = {"error": f"HTTP {e.code}"}
            return e.code, got

    def _leader_first(self, op: str, body: dict[str, Any] | None, deadline: float) -> dict[str, Any]:
        """Send to the nodes in turn, following leader hints, until one answers for real."""
        queue = list(self.addrs)
        tried: dict[str, int] = {}
        last = "no node answered"
        while queue and time.monotonic() < deadline:
            addr = queue.pop(0)
            if tried.get(addr, 0) >= 2:
                continue
            tried[addr] = tried.get(addr, 0) + 1
            left = max(0.5, deadline - time.monotonic())
            try:
                status, got = self._call(addr, op, body, left)
            except OSError as e:  # down, refused, timed out: try the next node
                last = f"{addr}: {e}"
                continue
            if status == 200:
                return got
            if status == 421:
                hint = got.get("leader_http") or ""
                last = f"{addr}: {got.get('error')}"
                if hint:
                    queue.insert(0, hint)
                elif not queue:
                    time.sleep(0.2)  # an election under way: go round again
                    queue = [a for a in self.addrs if tried.get(a, 0) < 2]
                continue
            if status == 504:
                raise Timeout(got.get("error", "membership change not committed in time"))
            raise MembershipError(str(got.get("error", f"HTTP {status}")), status)
        raise NoQuorum(f"no leader accepted the change ({last})")

    # ---------------------------------------------------------------- API

    def members(self) -> dict[str, Any]:
        """The membership as the first node that answers sees it (its leader's view if it
        is the leader: then each member's ``match`` is included)."""
        last: Exception | None = None
        for addr in self.addrs:
            try:
                status, got = self._call(addr, "GET", None, min(self.timeout, 3.0))
            except OSError as e:
                last = e
                continue
            if status == 200:
                if got.get("leader") and got["leader"] != got.get("id"):
                    lead = got.get("members", {}).get(got["leader"], {}).get("http")
                    if lead and lead != addr:
                        try:
                            s2, g2 = self._call(lead, "GET", None, min(self.timeout, 3.0))
                            if s2 == 200:
                                return g2
                        except OSError:
                            pass
                return got
        raise NoQuorum(f"no node answered ({last})")

    def change(
        self, op: str, node: str, udp: str = "", http: str = "", force: bool = False
    ) -> dict[str, Any]:
        """One single-server change: add_learner, add_voter, promote or remove. ``force``
        skips the leader's liveness checks (see udpraft/io/members.py)."""
        body = {"op": op, "id": node, "udp": udp, "http": http, "force": force,
                "timeout_s": min(60.0, max(1.0, self.timeout))}
        return self._leader_first("POST", body, time.monotonic() + self.timeout)

    def add_learner(self, node: str, udp: str, http: str) -> dict[str, Any]:
        return self.change("add_learner", node, udp, http)

    def promote(self, node: str) -> dict[str, Any]:
        return self.change("promote", node)

    def remove(self, node: str, force: bool = False) -> dict[str, Any]:
        return self.change("remove", node, force=force)

    def add(self, node: str, udp: str, http: str, catch_up_s: float = 60.0) -> dict[str, Any]:
        """Add ``node`` as a learner, wait until its log has caught up, then promote it.

        The new node's process should be running (``python -m udpraft.node`` with a cluster
        file that lists it) — it catches up either way, but a promotion waits for it."""
        mem = self.members()
        if node not in mem.get("learners", []) and node not in mem.get("voters", []):
            mem = self.add_learner(node, udp, http)["membership"]
        if node in mem.get("voters", []):
            return {"ok": True, "op": "add", "id": node, "membership": mem}
        deadline = time.monotonic() + catch_up_s
        while True:
            mem = self.members()
            me = mem.get("members", {}).get(node, {})
            # Under load the commit index keeps moving: close enough is caught up.
            if "match" in me and me["match"] + CATCH_UP_SLACK >= mem.get("commit_index", 0):
                break
            if time.monotonic() > deadline:
                raise Timeout(f"{node} did not catch up within {catch_up_s} s (match "
                              f"{me.get('match')} of {mem.get('commit_index')}); it stays a learner")
            time.sleep(0.1)
        try:
            out = self.promote(node)
        except MembershipError as e:
            if "not a learner" in str(e) and node in self.members().get("voters", []):
                return {"ok": True, "op": "add", "id": node, "membership": self.members()}
            raise
        out["op"] = "add"
        return out


__all__ = ["Admin", "MembershipError", "UdpRaftError"]
