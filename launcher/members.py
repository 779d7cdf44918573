"""Membership changes as the launcher makes them: fresh ids, ports, and ``/members`` calls.

How this works: the cluster decides who is a member (CONFIG entries in the Raft log, one
change at a time); the launcher only asks, over each node's ``POST /members``, and keeps
``cluster.json`` (the address book) in step. ``ensure`` drives one change to its goal: it
reads the leader's ``GET /members`` first (a change that already happened — say, one whose
answer was lost — is not sent again), sends the change to any node and follows the 421
leader hints, and retries what may be retried (409: another change in flight; 504 or no
answer: not committed in time, or a new leader) until ``timeout_s``. A 400 (a change that
makes no sense) is final and raises ``Refused``.

Ids are never reused: a new node is ``n<K>`` with K one more than any id the cluster ever
had — those in the cluster file, the members and the *removed* ids the leader reports, and
the ``n<K>`` data dirs and logs left in the data dir (a retired node's stay). Its ports
follow the layout's scheme (node K: udp base+K-1, http base+100+K-1) when the cluster was
laid out by it and they are free; else the next free slot of the scheme, else ports the
kernel picks.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from launcher import layout, nodeapi
from udpraft.config import ClusterConfig, format_addr, parse_addr

Addr = tuple[str, int]
ID_RE = re.compile(r"n(\d+)")
CATCH_UP_SLACK = 64  # a learner this close to the commit index counts as caught up


class MemberError(Exception):
    """A membership change that did not happen (or whose outcome is not known)."""


class Refused(MemberError):
    """The cluster said no (HTTP 400): the change makes no sense as asked."""


class Busy(MemberError):
    """Another membership change is under way (in the launcher or the cluster)."""


def id_number(node_id: str) -> int | None:
    m = ID_RE.fullmatch(node_id)
    return int(m.group(1)) if m else None


def used_ids(cfg: ClusterConfig, members: dict[str, Any] | None, data_dir: Path) -> set[str]:
    """Every node id this cluster has ever used, as far as can be told."""
    used = set(cfg.ids) | set(cfg.initial_voters)
    if members:
        for key in ("voters", "learners", "removed"):
            used |= {str(x) for x in members.get(key) or []}
        used |= {str(x) for x in (members.get("members") or {})}
    try:
        for p in data_dir.iterdir():
            name = p.name[:-4] if p.name.endswith(".log") else p.name
            if id_number(name) is not None:
                used.add(name)
    except OSError:
        pass
    return used


def next_id(used: Iterable[str]) -> str:
    """``n<K>``, K one more than the largest ``n<number>`` ever used (n1 if none)."""
    return f"n{max((id_number(u) or 0 for u in used), default=0) + 1}"


def scheme_base(cfg: ClusterConfig) -> int | None:
    """The base port if every ``n<K>`` node sits where the layout's scheme puts it."""
    base = None
    for n in cfg.nodes:
        k = id_number(n.id)
        if k is None:
            continue
        b = n.udp[1] - (k - 1)
        if base is None:
            base = b
        if b != base or n.http[1] != base + layout.HTTP_PORT_OFFSET + k - 1:
            return None
    return base


def _free(host: str, port: int, kind: str) -> bool:
    try:
        return layout.port_is_free(host, port, kind)
    except layout.LayoutError:
        return False


def pick_ports(cfg: ClusterConfig, new_id: str) -> tuple[Addr, Addr]:
    """(udp, http) for a new node: the scheme's slot for its number if free, else the next
    free slot, else kernel-chosen ports; never an address a listed node has."""
    host = cfg.nodes[0].udp[0]
    taken = {a for n in cfg.nodes for a in (n.udp, n.http)}
    base = scheme_base(cfg)
    k = id_number(new_id)
    if base is not None and k is not None:
        for slot in range(k, layout.HTTP_PORT_OFFSET + 1):
            try:
                udp, http = layout.node_ports(base, slot)
            except layout.LayoutError:
                break
            if ((host, udp) not in taken and (host, http) not in taken
                    and _free(host, udp, "udp") and _free(host, http, "tcp")):
                return (host, udp), (host, http)
    return (host, _kernel_port(host, socket.SOCK_DGRAM)), (host, _kernel_port(host, socket.SOCK_STREAM))


def _kernel_port(host: str, kind: int) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------- talking


def leader_view(addrs: Sequence[Addr], timeout_s: float = nodeapi.MEMBERS_TIMEOUT_S
                ) -> dict[str, Any] | None:
    """``GET /members`` from the leader (found through any node's answer), else None."""
    for addr in addrs:
        got = nodeapi.get_members(addr, timeout_s)
        if got is None:
            continue
        leader = got.get("leader")
        if leader and leader == got.get("id"):
            return got
        lead_http = (got.get("members") or {}).get(leader or "", {}).get("http")
        if lead_http:
            try:
                lead = nodeapi.get_members(parse_addr(lead_http), timeout_s)
            except ValueError:
                lead = None
            if lead is not None and lead.get("leader") == lead.get("id"):
                return lead
    return None


def goal_reached(op: str, node: str, mem: dict[str, Any]) -> bool:
    if not mem.get("config_committed", False):
        return False
    voters, learners = mem.get("voters") or [], mem.get("learners") or []
    if op == "add_learner":
        return node in voters or node in learners
    if op in ("promote", "add_voter"):
        return node in voters
    if op == "remove":
        return node not in voters and node not in learners
    raise ValueError(f"unknown membership change {op!r}")


def ensure(
    addrs: Callable[[], Sequence[Addr]], op: str, node: str, udp: str = "", http: str = "",
    timeout_s: float = 30.0, stop: Callable[[], bool] = lambda: False,
) -> dict[str, Any]:
    """Bring the cluster to the state ``op`` asks for; returns the leader's view after it.
    Raises Refused (400), Busy (still 409 at the end) or MemberError (no answer in time)."""
    deadline = time.monotonic() + timeout_s
    last = "no node answered"
    busy = False
    while True:
        nodes = list(addrs())
        mem = leader_view(nodes)
        if mem is not None and goal_reached(op, node, mem):
            return mem
        left = deadline - time.monotonic()
        if left <= 0 or stop():
            if busy:
                raise Busy(f"{op} {node}: another membership change is under way ({last})")
            raise MemberError(f"{op} {node} not done within {timeout_s:.0f}s ({last})")
        order = list(nodes)
        if mem is not None:
            lead = (mem.get("members") or {}).get(mem.get("leader") or "", {}).get("http")
            if lead:
                try:
                    order.insert(0, parse_addr(lead))
                except ValueError:
                    pass
        body = {"op": op, "id": node, "udp": udp, "http": http,
                "timeout_s": round(max(1.0, min(20.0, left)), 1)}
        status, got = _send(order, body, min(left, 25.0) + 1.0)
        if status == 200:
            mem2 = got.get("membership")
            if isinstance(mem2, dict) and goal_reached(op, node, mem2):
                return mem2
            continue
        text = str(got.get("error", f"HTTP {status}"))
        if status == 400:
            # the change may have happened meanwhile (a lost answer, a retry): look again
            mem = leader_view(list(addrs()))
            if mem is not None and goal_reached(op, node, mem):
                return mem
            if mem is not None and "still catching up" not in text:
                raise Refused(text)
        busy = status == 409
        last = text
        time.sleep(0.2)


def _send(order: list[Addr], body: dict[str, Any], timeout_s: float) -> tuple[int, dict[str, Any]]:
    """POST the change to the first node that takes it, following leader hints (each node
    at most twice). (0, {...}) when nobody answered for real."""
    queue = list(order)
    tried: dict[Addr, int] = {}
    last: tuple[int, dict[str, Any]] = (0, {"error": "no node answered"})
    while queue:
        addr = queue.pop(0)
        if tried.get(addr, 0) >= 2:
            continue
        tried[addr] = tried.get(addr, 0) + 1
        try:
            status, got = nodeapi.post_members(addr, body, timeout_s)
        except nodeapi.NodeUnreachable as e:
            last = (0, {"error": str(e)})
            continue
        if status == 421:
            last = (status, got)
            hint = got.get("leader_http") or ""
            if hint:
                try:
                    queue.insert(0, parse_addr(hint))
                except ValueError:
                    pass
            continue
        return status, got
    return last


def caught_up(mem: dict[str, Any], node: str, floor: int) -> bool:
    """The learner holds the log up to ``floor`` (the entry that made it a learner) and is
    within CATCH_UP_SLACK entries of the leader's commit index (under load it trails)."""
    me = (mem.get("members") or {}).get(node) or {}
    if "match" not in me:
        return False
    match = int(me["match"])
    return match >= floor and match + CATCH_UP_SLACK >= int(mem.get("commit_index", 0))


def addr_text(addr: Addr) -> str:
    return format_addr(addr)
