"""Errors the public API raises. Everything is a UdpRaftError."""

from __future__ import annotations


class UdpRaftError(Exception):
    """Base class of every error udpraft raises to its users."""


class Timeout(UdpRaftError, TimeoutError):
    """No answer in time. A submit that timed out may or may not have been committed;
    retrying it with the same client is safe (it applies at most once)."""


class NoQuorum(UdpRaftError):
    """No leader could be found or confirmed: the cluster has no working majority now."""


class SessionExpired(UdpRaftError):
    """The client's session expired on the cluster; the client opens a new one for later
    calls. A submit that raises it may or may not have been applied: an earlier try may
    have been, before the session ended (one refused on its only try is sent again in
    the new session instead)."""


class Rejected(UdpRaftError):
    """The cluster refused the request (too large, overloaded, malformed)."""


class NotLeaderError(UdpRaftError):
    """This node is not the leader (``leader`` names the one it knows, or "")."""

    def __init__(self, message: str, leader: str = "") -> None:
        super().__init__(message)
        self.leader = leader


class ClusterConfigError(UdpRaftError):
    """The cluster file or secret is missing or malformed."""
