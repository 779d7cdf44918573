"""Exceptions the core raises to its caller (misuse or "not now"); never for peer input."""

from __future__ import annotations


class RaftError(Exception):
    """Base of everything the core raises to its local caller."""


class NotLeader(RaftError):
    def __init__(self, leader: str) -> None:
        super().__init__(f"not the leader (leader: {leader or 'unknown'})")
        self.leader = leader


class ProposalDropped(RaftError):
    """The leader refuses proposals now: a transfer is in flight or too much is uncommitted."""


class InvalidRequest(RaftError):
    """The call itself is wrong (unknown peer, transfer to self, ...)."""
