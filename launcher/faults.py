"""Fault injection on a running cluster: the ``FaultOps`` half of ``ClusterSupervisor``.

How this works: process faults are signals to the node's pid (SIGKILL, SIGSTOP/SIGCONT);
network faults are requests to each node's transport fault hook (``POST /fault``): a
partition tells every node which peers to drop in both directions, so both sides of a cut
agree; loss and delay apply to what the named nodes send. ``heal`` resumes paused nodes and
clears the hook. Each call is recorded in ``DIR/faults.jsonl`` (see events.py), with the
errors of nodes that did not take the order (a node that is down cannot be partitioned,
and comes back healed anyway: the hook lives in memory).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterable
from typing import Any

from launcher import nodeapi
from launcher.events import EventLog
from launcher.procs import NodeProc, send_signal, signame


class FaultOps:
    """Mixin: needs ``_lock``, ``_nodes``, ``events``, ``_node()`` and ``leader()``."""

    _lock: threading.RLock
    _nodes: dict[str, NodeProc]
    events: EventLog

    def _node(self, node_id: str) -> NodeProc:
        raise NotImplementedError

    def leader(self) -> str | None:
        raise NotImplementedError

    def kill(
        self, node_id: str, sig: int = signal.SIGKILL, kind: str = "kill", **details: Any
    ) -> int:
        """Send ``sig`` to the node's process; the monitor restarts it. Returns the pid (0 if
        it was not running). Recorded in faults.jsonl as ``kind``."""
        with self._lock:
            n = self._node(node_id)
            pid = n.pid if n.proc is not None else 0
            if pid:
                send_signal(pid, sig)
                n.last_fault = f"{kind} {signame(sig)}"
        if pid:
            self.events.fault(kind, [node_id], signal=signame(sig), pid=pid, **details)
        return pid

    def pause(self, node_id: str, **details: Any) -> int:
        """SIGSTOP the node (it keeps its sockets but answers nothing) until ``resume``."""
        with self._lock:
            n = self._node(node_id)
            pid = n.pid if n.proc is not None else 0
            if pid:
                send_signal(pid, signal.SIGSTOP)
                n.paused, n.last_fault = True, "pause"
        if pid:
            self.events.fault("pause", [node_id], pid=pid, **details)
        return pid

    def resume(self, node_id: str) -> None:
        with self._lock:
            n = self._node(node_id)
            if n.proc is not None:
                send_signal(n.pid, signal.SIGCONT)
            n.paused = False

    def restart(self, node_id: str) -> None:
        """Restart the node now: SIGTERM if it runs (no backoff), else start it at once."""
        with self._lock:
            n = self._node(node_id)
            if n.wiped:  # lost its data: it is being replaced, never started again
                return
            n.held = False
            if n.proc is not None:
                n.restart_now = True
                send_signal(n.pid, signal.SIGCONT)
                send_signal(n.pid, signal.SIGTERM)
            else:
                n.restart_at = time.monotonic()
        self.events.emit("info", f"restart of {node_id} requested", node_id)

    def stop_node(self, node_id: str) -> None:
        """SIGTERM the node and keep it down until ``start_node``."""
        with self._lock:
            n = self._node(node_id)
            n.held, n.restart_at = True, None
            if n.proc is not None:
                send_signal(n.pid, signal.SIGCONT)
                send_signal(n.pid, signal.SIGTERM)

    def start_node(self, node_id: str) -> None:
        with self._lock:
            n = self._node(node_id)
            if n.wiped:  # lost its data: it is being replaced, never started again
                return
            n.held = False
            if n.proc is None:
                n.restart_at = time.monotonic()

    def partition(self, *groups: Iterable[str], kind: str = "partition", **details: Any) -> list[str]:
        """Cut the cluster into ``groups`` (nodes named in none form one more group): each
        node drops all traffic from and to nodes outside its group. Returns the errors."""
        with self._lock:
            ids = list(self._nodes)
        sides = cut_sides(ids, groups)
        named = {nid for g in groups for nid in g}
        errors = []
        for nid, others in partition_specs(ids, sides).items():
            errors += self._post_fault(nid, {"partition": others})
        targets = min(sides, key=len) if len(sides) == 2 else sorted(named, key=self._ids_order)
        self._mark(targets, kind)
        self.events.fault(kind, targets, sides=sides, **details, **_errs(errors))
        return errors

    def degrade(
        self, node_ids: Iterable[str], drop_pct: float = 0.0, delay_ms: float = 0.0,
        jitter_ms: float = 0.0, peers: list[str] | None = None, kind: str = "loss",
        **details: Any,
    ) -> list[str]:
        """Make the nodes' outgoing traffic lossy and/or slow (the transport's fault hook)."""
        targets = list(node_ids)
        spec: dict[str, Any] = {"drop_pct": drop_pct, "delay_ms": delay_ms, "jitter_ms": jitter_ms}
        if peers is not None:
            spec["peers"] = list(peers)
        errors = [e for nid in targets for e in self._post_fault(nid, spec)]
        self._mark(targets, kind)
        info = {k: v for k, v in spec.items() if v}
        self.events.fault(kind, targets, **info, **details, **_errs(errors))
        return errors

    def heal(self, node_ids: Iterable[str] | None = None, heals: str = "",
             **details: Any) -> list[str]:
        """Resume paused nodes and clear network faults on ``node_ids`` (default: all)."""
        if node_ids is None:
            with self._lock:
                node_ids = list(self._nodes)
        targets = list(node_ids)
        for nid in targets:
            self.resume(nid)
        errors = [e for nid in targets for e in self._post_fault(nid, None)]
        self.events.fault("heal", targets, heals=heals, **details, **_errs(errors))
        return errors

    def transfer(self, target: str) -> None:
        """Ask the current leader to hand leadership to ``target``."""
        leader = self.leader()
        if leader is None:
            raise nodeapi.NodeUnreachable("no leader known")
        nodeapi.transfer(self._node(leader).addr.http, target)

    def _post_fault(self, node_id: str, spec: dict[str, Any] | None) -> list[str]:
        return nodeapi.apply_fault(node_id, self._node(node_id).addr.http, spec)

    def _ids_order(self, node_id: str) -> int:
        with self._lock:
            return list(self._nodes).index(node_id)

    def _mark(self, node_ids: Iterable[str], what: str) -> None:
        with self._lock:
            for nid in node_ids:
                self._node(nid).last_fault = what


def cut_sides(ids: list[str], groups: Iterable[Iterable[str]]) -> list[list[str]]:
    """The sides of a cut: the groups given, plus one of every node they leave out."""
    sides = [list(g) for g in groups]
    named = {nid for g in sides for nid in g}
    unknown = named - set(ids)
    if unknown:
        raise KeyError(f"no node(s) {sorted(unknown)} (have {', '.join(ids)})")
    rest = [nid for nid in ids if nid not in named]
    return [*sides, rest] if rest else sides


def partition_specs(ids: list[str], sides: list[list[str]]) -> dict[str, list[str]]:
    """For each node of a cut: the peers it must stop hearing and reaching."""
    return {nid: [o for o in ids if o not in side] for side in sides for nid in side}


def _errs(errors: list[str]) -> dict[str, Any]:
    return {"errors": errors} if errors else {}
