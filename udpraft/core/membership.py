"""Cluster membership: who votes, who only learns, and which ids are gone for good.

How this works (dissertation §4.1, single-server changes): a configuration is carried by a
CONFIG log entry holding the *whole* membership, and a node uses the last one in its log —
effective as soon as it is appended, not when committed. If a truncation removes that entry
the node falls back to the previous one (or to its snapshot's, or its initial voters).

The encoding is small and deterministic: ``b"v:n1,n2,n3;l:n4;r:n5"`` — voters, learners
and removed ids, each sorted. Removed ids are kept so that an id is never reused. A member
added with an address gets it carried along (``;a:n4=ADDR,...``, sorted by id): the core
never looks at it, but the runtime must know where a member it never heard of lives, and a
replicated address is the one every present and future leader agrees on. Members of the
initial configuration have none (their addresses come from the cluster file).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from udpraft.core.errors import InvalidRequest

CONF_OPS = ("add_learner", "add_voter", "promote", "remove")
_BAD_ID_CHARS = frozenset(",;: ")
_BAD_ADDR_CHARS = frozenset(",;= ")
MAX_ADDR_LEN = 200


def _norm(ids: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(ids)))


@dataclass(frozen=True, slots=True)
class Membership:
    voters: tuple[str, ...] = ()
    learners: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    addrs: tuple[tuple[str, str], ...] = ()  # (id, opaque address) of members, sorted

    @classmethod
    def of(
        cls,
        voters: Iterable[str],
        learners: Iterable[str] = (),
        removed: Iterable[str] = (),
        addrs: Iterable[tuple[str, str]] = (),
    ) -> Membership:
        v, lr = _norm(voters), _norm(learners)
        members = set(v) | set(lr)
        return cls(v, lr, _norm(removed), tuple(sorted((i, a) for i, a in dict(addrs).items() if i in members)))

    def addr(self, node: str) -> str:
        """The address recorded for ``node`` ("" when none is)."""
        for i, a in self.addrs:
            if i == node:
                return a
        return ""

    def members(self) -> tuple[str, ...]:
        return _norm((*self.voters, *self.learners))

    def ids(self) -> frozenset[str]:
        return frozenset((*self.voters, *self.learners, *self.removed))

    def encode(self) -> bytes:
        text = f"v:{','.join(self.voters)};l:{','.join(self.learners)};r:{','.join(self.removed)}"
        if self.addrs:
            text += ";a:" + ",".join(f"{i}={a}" for i, a in self.addrs)
        return text.encode()

    @classmethod
    def decode(cls, data: bytes) -> Membership | None:
        """The membership in ``data``; None when it is not a valid encoding."""
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError:
            return None
        parts = text.split(";")
        if len(parts) not in (3, 4):
            return None
        addrs: dict[str, str] = {}
        if len(parts) == 4:
            if not parts[3].startswith("a:") or len(parts[3]) == 2:
                return None
            for item in parts[3][2:].split(","):
                node, eq, addr = item.partition("=")
                if not eq or not _valid_addr(addr) or node in addrs:
                    return None
                addrs[node] = addr
        lists: list[tuple[str, ...]] = []
        for part, tag in zip(parts[:3], ("v:", "l:", "r:")):
            if not part.startswith(tag):
                return None
            body = part[2:]
            ids = tuple(body.split(",")) if body else ()
            if any(not i or set(i) & _BAD_ID_CHARS for i in ids):
                return None
            lists.append(ids)
        v, lr, r = (frozenset(x) for x in lists)
        if v & lr or v & r or lr & r or not set(addrs) <= (v | lr):
            return None
        return cls.of(v, lr, r, addrs.items())

    def change(self, op: str, node: str, addr: str = "") -> Membership:
        """The membership after one single-server change; InvalidRequest for nonsense.

        ``addr`` (for the two adds) records where the new member lives."""
        if not node or set(node) & _BAD_ID_CHARS or len(node) > 64:
            raise InvalidRequest(f"bad node id {node!r}")
        if addr and (op not in ("add_learner", "add_voter") or not _valid_addr(addr)):
            raise InvalidRequest(f"bad address {addr!r} for {op}")
        if op in ("add_learner", "add_voter"):
            if node in self.removed:
                raise InvalidRequest(f"{node} was removed; node ids are never reused")
            if node in self.voters or node in self.learners:
                raise InvalidRequest(f"{node} is already a member")
            addrs = (*self.addrs, (node, addr)) if addr else self.addrs
            if op == "add_voter":
                return Membership.of((*self.voters, node), self.learners, self.removed, addrs)
            return Membership.of(self.voters, (*self.learners, node), self.removed, addrs)
        if op == "promote":
            if node not in self.learners:
                raise InvalidRequest(f"{node} is not a learner")
            return Membership.of(
                (*self.voters, node),
                (x for x in self.learners if x != node),
                self.removed,
                self.addrs,
            )
        if op == "remove":
            if node not in self.voters and node not in self.learners:
                raise InvalidRequest(f"{node} is not a member")
            if self.voters == (node,):
                raise InvalidRequest(f"{node} is the last voter")
            return Membership.of(
                (x for x in self.voters if x != node),
                (x for x in self.learners if x != node),
                (*self.removed, node),
                self.addrs,  # of() keeps members' addresses only
            )
        raise InvalidRequest(f"unknown membership change {op!r}")


def _valid_addr(addr: str) -> bool:
    return 0 < len(addr) <= MAX_ADDR_LEN and addr.isprintable() and not set(addr) & _BAD_ADDR_CHARS
