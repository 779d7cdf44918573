"""Membership at run time: where members live, and changing who they are.

How this works. The core decides *who* is a member (CONFIG entries, one single-server change
at a time, effective on append: udpraft/core/membership.py). The runtime must also know
*where* each member is. Members of the initial configuration are found in the cluster file;
a member added later has its addresses replicated in the CONFIG entry that adds it
(``"UDP/HTTP"``, e.g. ``"127.0.0.1:7006/127.0.0.1:2384"``), so every node that holds the entry
(and every node restored from a snapshot, which carries the configuration) can reach it.
``AddressBook.sync`` folds the configuration's addresses into the runtime's ``addr_of`` /
``id_of`` maps whenever the configuration changes; entries the cluster file has for nodes
that are no longer members stay (harmless: the core sends them nothing).

A node that hears an authenticated Raft message from an id it cannot place (its own copy of
the cluster file is older than the sender) learns the sender's address from the datagram;
at most ``MAX_LEARNED`` such ids are remembered.

Changes (``MemberChanges.change``) go through the leader's core and resolve once the CONFIG
entry is applied on the leader (i.e. committed). Because a configuration is effective once
appended, the new one must be able to commit itself: with one change at a time there is no
second change to rescue a configuration whose quorum is dead. So, unless forced, the leader
refuses a change after which the voters it has heard from in the last ``ACTIVE_S`` seconds
are not a quorum of the new voters (e.g. removing a live node of three while another is
down, or adding a voter that is not running), and a change that leaves exactly two voters
(no failure tolerated, and neither can be removed while the other is down). ``promote`` is
refused while the learner is more than ``MAX_PROMOTE_LAG`` entries behind the commit index
(the cluster would wait for it; dissertation §4.2.1).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from udpraft.config import ClusterConfig, format_addr, parse_addr
from udpraft.core.errors import InvalidRequest, NotLeader
from udpraft.core.membership import Membership
from udpraft.core.ready import Role

if TYPE_CHECKING:
    from udpraft.io.runtime import NodeRuntime

Addr = tuple[str, int]
MAX_LEARNED = 64
MAX_PROMOTE_LAG = 1_000
ACTIVE_S = 1.0
OPS = ("add_learner", "add_voter", "promote", "remove")


def encode_addr(udp: str, http: str) -> str:
    """The address replicated for a member: ``UDP/HTTP``; both must be host:port."""
    parse_addr(udp)
    parse_addr(http)
    return f"{udp}/{http}"


def decode_addr(text: str) -> tuple[Addr, str] | None:
    udp, sep, http = text.partition("/")
    try:
        return parse_addr(udp), (format_addr(parse_addr(http)) if sep else "")
    except ValueError:
        return None


class AddressBook:
    def __init__(self, cluster: ClusterConfig, addr_of: dict[str, Addr], id_of: dict[Addr, str]):
        self.addr_of = addr_of
        self.id_of = id_of
        self.http_of: dict[str, str] = {n.id: format_addr(n.http) for n in cluster.nodes}
        self._conf: Membership | None = None
        self.learned = 0

    def sync(self, conf: Membership) -> None:
        if conf is self._conf:
            return
        self._conf = conf
        for node, text in conf.addrs:
            got = decode_addr(text)
            if got is None:
                continue  # the core validated the characters, not the syntax: skip nonsense
            udp, http = got
            self._set(node, udp)
            if http:
                self.http_of[node] = http

    def learn(self, node: str, addr: Addr) -> bool:
        """An authenticated Raft message from ``node`` at ``addr`` we could not place."""
        if node in self.addr_of or self.learned >= MAX_LEARNED:
            return False
        self.learned += 1
        self._set(node, addr)
        return True

    def _set(self, node: str, udp: Addr) -> None:
        old = self.addr_of.get(node)
        if old == udp:
            return
        if old is not None and self.id_of.get(old) == node:
            del self.id_of[old]
        self.addr_of[node] = udp
        self.id_of[udp] = node


class MemberChanges:
    def __init__(self, rt: NodeRuntime) -> None:
        self.rt = rt

    def describe(self) -> dict[str, Any]:
        """The membership as this node sees it, with each member's addresses (and, on the
        leader, how far each follower's log matches)."""
        raft = self.rt.raft
        conf = raft.conf
        book = self.rt.book
        out: dict[str, Any] = {
            "id": self.rt.id,
            "leader": raft.leader,
            "term": raft.term,
            "commit_index": raft.log.committed,
            "voters": list(conf.voters),
            "learners": list(conf.learners),
            "removed": list(conf.removed),
            "config_index": raft._conf_index,
            "config_committed": raft._conf_index <= raft.log.committed,
            "members": {
                m: {
                    "role": "voter" if m in conf.voters else "learner",
                    "udp": format_addr(self.rt.addr_of[m]) if m in self.rt.addr_of else "",
                    "http": book.http_of.get(m, ""),
                }
                for m in conf.members()
            },
        }
        if raft.role == Role.LEADER:
            for m, pr in raft.progress.items():
                if m in out["members"]:
                    out["members"][m]["match"] = pr.match
            if self.rt.id in out["members"]:  # (not while it commits its own removal)
                out["members"][self.rt.id]["match"] = raft.log.last_index()
        return out

    def active_voters(self, voters: tuple[str, ...]) -> list[str]:
        now = time.monotonic()
        heard = self.rt.heard_at
        return [v for v in voters if v == self.rt.id or now - heard.get(v, -1e9) <= ACTIVE_S]

    def _check_safe(self, voters: tuple[str, ...]) -> None:
        if len(voters) == 2:
            raise InvalidRequest(
                "the change leaves two voters, which tolerate no failure (and neither can be "
                "removed while the other is down); add a node first, or pass force"
            )
        live = self.active_voters(voters)
        need = len(voters) // 2 + 1
        if len(live) < need:
            raise InvalidRequest(
                f"after the change {need} of the voters {', '.join(voters)} must be up to commit "
                f"anything, but only {', '.join(live) or 'none'} answered in the last {ACTIVE_S} s; "
                "start the missing nodes first, or pass force"
            )

    async def change(
        self, op: str, node: str, udp: str = "", http: str = "", timeout_s: float = 10.0,
        force: bool = False,
    ) -> dict[str, Any]:
        """Propose one change on this node (the leader) and wait until it is committed.

        Raises NotLeader (with the leader's id) on a follower, InvalidRequest for a change
        that makes no sense, ProposalDropped while another change is uncommitted,
        ProposalLost if a new leader overwrote it, TimeoutError after ``timeout_s``.
        """
        rt = self.rt
        raft = rt.raft
        if op not in OPS:
            raise InvalidRequest(f"unknown membership change {op!r}: one of {', '.join(OPS)}")
        if raft.role != Role.LEADER:
            raise NotLeader(raft.leader)
        addr = ""
        if op in ("add_learner", "add_voter"):
            if not udp or not http:
                raise InvalidRequest(f"{op} needs the new node's udp and http addresses")
            try:
                addr = encode_addr(udp, http)
            except ValueError as e:
                raise InvalidRequest(str(e)) from None
            raft.conf.change(op, node, addr)  # the core's refusals (ids never reused) first
            taken = {format_addr(a) for n, a in rt.addr_of.items() if n in raft.conf.members()}
            if udp in taken:
                raise InvalidRequest(f"udp address {udp} belongs to another member")
        elif udp or http:
            raise InvalidRequest(f"{op} takes no addresses")
        if op == "promote" and node in raft.conf.learners:
            pr = raft.progress.get(node)
            match = pr.match if pr is not None else 0
            if match + MAX_PROMOTE_LAG < raft.log.committed:
                raise InvalidRequest(
                    f"{node} is still catching up (has {match} of {raft.log.committed}); "
                    "promote it once it is within "
                    f"{MAX_PROMOTE_LAG} entries"
                )
        new = raft.conf.change(op, node, addr)
        if not force:
            self._check_safe(new.voters)
        idx = raft.propose_conf_change(op, node, addr)
        fut = rt.wait_local(idx, raft.term, timeout_s)
        rt._kick()
        t0 = time.monotonic()
        await fut
        rt.counters[f"member_{op}"] += 1
        return {
            "ok": True,
            "op": op,
            "id": node,
            "index": idx,
            "ms": round((time.monotonic() - t0) * 1000, 1),
            "membership": self.describe(),
        }
