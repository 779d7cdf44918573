"""What the dashboard needs from whoever runs the cluster: the ``Control`` interface.

How this works: the dashboard reads each node over its HTTP port by itself, but everything
that takes a process (kill -9, pause, restart) or the launcher's memory (pids, restarts,
its event log) goes through a ``Control`` handed in by the launcher. The launcher's
implementation (``launcher.control.DashboardControl``) wraps ``ClusterSupervisor``; the
unit tests use a fake. Every method may block for a moment (signals, a few short HTTP
requests to nodes): the dashboard calls them from a worker thread, never on its event loop.

A method refuses a bad request (unknown node, nothing to do) with ``ActionError``; its text
reaches the user. Network-fault methods return the errors of nodes that did not take the
order (a node that is down cannot be faulted) instead of raising.
"""

from __future__ import annotations

from typing import Any, Protocol

from udpraft.config import ClusterConfig

__all__ = ["ActionError", "ActionFailed", "Control", "LauncherNode", "MembershipControl",
           "TimelineItem"]

# One node as the launcher sees it: {"id", "pid", "state" (up | starting | stale | paused |
# down | held), "restarts", "cpu_pct", "rss_bytes", "last_fault"}.
LauncherNode = dict[str, Any]
# One event for the timeline: {"ts" (epoch seconds), "kind", "text", "node" ("" if none)}.
TimelineItem = dict[str, Any]


class ActionError(Exception):
    """A control request that cannot be carried out (bad node id, no leader, ...)."""


class ActionFailed(Exception):
    """A control request that was tried and did not complete (a membership change the
    cluster did not commit in time, ...)."""


class Control(Protocol):
    """The launcher's side of the dashboard. ``config`` lists the nodes and their ports."""

    @property
    def config(self) -> ClusterConfig: ...

    def secret(self) -> bytes:
        """The cluster secret, for the dashboard's client (submit)."""
        ...

    def nodes(self) -> list[LauncherNode]: ...

    def events(self, limit: int) -> list[TimelineItem]:
        """The launcher's latest events (starts, deaths, restarts, leader changes, faults,
        heals), oldest first."""
        ...

    def kill(self, node: str) -> None:
        """SIGKILL the node; the launcher restarts it (with its data) after a short backoff."""
        ...

    def restart(self, node: str) -> None: ...

    def stop_node(self, node: str) -> None:
        """Stop the node and keep it down until ``start_node``."""
        ...

    def start_node(self, node: str) -> None: ...

    def pause(self, node: str) -> None: ...

    def resume(self, node: str) -> None: ...

    def partition(self, groups: list[list[str]]) -> list[str]:
        """Cut the cluster into ``groups``; nodes named in none form one more group."""
        ...

    def degrade(
        self, nodes: list[str], peers: list[str] | None, drop_pct: float, delay_ms: float,
        jitter_ms: float,
    ) -> list[str]:
        """Make what ``nodes`` send (to ``peers``, or to everyone) lossy and/or slow."""
        ...

    def heal(self) -> list[str]:
        """Resume every paused node and clear every network fault."""
        ...

    def transfer(self, target: str) -> str:
        """Ask the leader to hand over to ``target``; returns the leader asked."""
        ...


class MembershipControl(Protocol):
    """What a ``Control`` may also do (the launcher's does): change the membership. The API
    answers 409 to add_node/retire_node when the control has no such methods."""

    def add_node(self) -> dict[str, Any]:
        """Add a fresh node (new id, ports, data dir; learner, then voter once caught up);
        returns {"node", "udp", "http", "voters", ...}. May take a while."""
        ...

    def retire_node(self, node: str) -> dict[str, Any]:
        """Remove ``node`` from the cluster, then stop its process for good."""
        ...

    # optional, the launcher's has it: ``wipe(node) -> dict`` (SIGKILL the node, delete its
    # data dir; the launcher replaces it with a fresh node); the API answers 409 without it

