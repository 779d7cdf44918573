"""Cluster membership: who votes, who only learns, and which ids are gone for good.

How this works (dissertation §4.1, single-server changes): a configuration is carried by a
CONFIG log entry holding the *whole* membership, and a node uses the last one in its log —
effective as soon as it is appended, not when committed. If a truncation removes that entry
the node falls back to the previous one (or to its snapshot's, or its initial voters).

The encoding is small and deterministic: ``b"v:n1,n2,n3;l:n4;r:n5"`` — voters, learners
and removed ids, each sorted. Removed ids are kept so that an id is never reused.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from udpraft.core.errors import InvalidRequest

CONF_OPS = ("add_learner", "add_voter", "promote", "remove")
_BAD_ID_CHARS = frozenset(",;: ")


def _norm(ids: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(ids)))


@dataclass(frozen=True, slots=True)
class Membership:
    voters: tuple[str, ...] = ()
    learners: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()

    @classmethod
    def of(
        cls, voters: Iterable[str], learners: Iterable[str] = (), removed: Iterable[str] = ()
    ) -> Membership:
        return cls(_norm(voters), _norm(learners), _norm(removed))

    def members(self) -> tuple[str, ...]:
        return _norm((*self.voters, *self.learners))

    def ids(self) -> frozenset[str]:
        return frozenset((*self.voters, *self.learners, *self.removed))

    def encode(self) -> bytes:
        return (
            f"v:{','.join(self.voters)};l:{','.join(self.learners)};r:{','.join(self.removed)}"
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> Membership | None:
        """The membership in ``data``; None when it is not a valid encoding."""
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError:
            return None
        parts = text.split(";")
        if len(parts) != 3:
            return None
        lists: list[tuple[str, ...]] = []
        for part, tag in zip(parts, ("v:", "l:", "r:")):
            if not part.startswith(tag):
                return None
            body = part[2:]
            ids = tuple(body.split(",")) if body else ()
            if any(not i or set(i) & _BAD_ID_CHARS for i in ids):
                return None
            lists.append(ids)
        v, lr, r = (frozenset(x) for x in lists)
        if v & lr or v & r or lr & r:
            return None
        return cls.of(v, lr, r)

    def change(self, op: str, node: str) -> Membership:
        """The membership after one single-server change; InvalidRequest for nonsense."""
        if not node or set(node) & _BAD_ID_CHARS:
            raise InvalidRequest(f"bad node id {node!r}")
        if op in ("add_learner", "add_voter"):
            if node in self.removed:
                raise InvalidRequest(f"{node} was removed; node ids are never reused")
            if node in self.voters or node in self.learners:
                raise InvalidRequest(f"{node} is already a member")
            if op == "add_voter":
                return Membership.of((*self.voters, node), self.learners, self.removed)
            return Membership.of(self.voters, (*self.learners, node), self.removed)
        if op == "promote":
            if node not in self.learners:
                raise InvalidRequest(f"{node} is not a learner")
            return Membership.of(
                (*self.voters, node), (x for x in self.learners if x != node), self.removed
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
            )
        raise InvalidRequest(f"unknown membership change {op!r}")
