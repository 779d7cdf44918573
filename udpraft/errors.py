"""Errors the public API raises. Everything is a UdpRaftError."""

from __future__ import annotations


class UdpRaftError(Exception):
    """Base class of every error udpraft raises to its users."""


class Timeout(UdpRaftError, TimeoutError):
    """No answer in time. A submit that timed out may or may not have been committed.
    The client retries each submit under its (client id, seq) until the timeout, which is
    what makes it apply at most once; a new ``submit`` call of the same payload is a new
    request (a new seq) and may apply a second time."""


class NoQuorum(UdpRaftError):
    """No leader could be found or confirmed: the cluster has no working majority now."""


class SessionExpired(UdpRaftError):
    """The client's session expired on the cluster; the client opens a new one for later
    calls. A submit that raises it may or may not have been applied: an earlier try may
    have been, before the session ended (one refused on its only try is sent again in
    the new session instead)."""


class Compacted(UdpRaftError):
    """``retrieve(start)``: the entries from ``start`` to ``first_index - 1`` are no longer
    in the log (the nodes run with ``--snapshot-entries``: they live on only in a snapshot
    of the state); ``retrieve(first_index)`` returns what the log still holds."""

    def __init__(self, start: int, first_index: int) -> None:
        super().__init__(f"entries {start}..{first_index - 1} were compacted into a snapshot; "
                         f"the log starts at {first_index}")
        self.start = start
        self.first_index = first_index


class Rejected(UdpRaftError):
    """The cluster refused the request (too large, overloaded, malformed)."""


class NotLeaderError(UdpRaftError):
    """This node is not the leader (``leader`` names the one it knows, or "")."""

    def __init__(self, message: str, leader: str = "") -> None:
        super().__init__(message)
        self.leader = leader


class ClusterConfigError(UdpRaftError):
    """The cluster file or secret is missing or malformed."""
