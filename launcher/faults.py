"""Fault injection on a running cluster: the ``FaultOps`` half of ``ClusterSupervisor``.

How this works: process faults are signals to the node's pid (SIGKILL, SIGSTOP/SIGCONT);
network faults are requests to each node's transport fault hook (``POST /fault``): a
partition tells every node which peers to drop in both directions, so both sides of a cut
agree; loss and delay apply to what the named nodes send. ``heal`` resumes paused nodes and
clears the hook. Each call is recorded in ``DIR/faults.jsonl`` (see events.py), with the
errors of nodes that did not take the order (a node that is down cannot be partitioned).

The hook lives in the node's memory, but the faults stand for the network, which a process
restart does not mend: the supervisor keeps, per node, the network faults in force since
its last heal (``NetFaults``, bounded by the peers: a newer partition or link setting
replaces the older one, as in the hook), including those ``launcher ctl`` ordered (learnt
from faults.jsonl), and posts them again when a restarted node first answers.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from launcher import nodeapi
from launcher.events import EventLog
from launcher.procs import NodeProc, send_signal, signame

_LINK_FIELDS = ("drop_pct", "delay_ms", "jitter_ms")


@dataclass(slots=True)
class NetFaults:
    """The network faults in force on one node's hook, as the specs that rebuild them.

    ``add`` mirrors ``udpraft.io.faults.FaultHook.apply`` rather than reusing it: the
    launcher reaches nodes only through processes, ports and files (test_boundaries). A
    hypothesis test (test_launcher_netfaults) keeps the two in step: any sequence of orders
    replayed from here rebuilds the hook's state."""

    partition: list[str] | None = None
    link: dict[str, float] | None = None  # towards every peer
    per_peer: dict[str, dict[str, float]] = field(default_factory=dict)

    def add(self, spec: dict[str, Any]) -> None:
        """Mirror what the node's FaultHook.apply does with ``spec`` (it took it)."""
        if "peers" in spec or any(k in spec for k in _LINK_FIELDS):
            link = {k: float(spec.get(k, 0.0)) for k in _LINK_FIELDS}
            if spec.get("peers") is None:
                self.link = link
            else:
                for p in spec["peers"]:
                    self.per_peer[str(p)] = link
        if "partition" in spec:
            self.partition = [str(p) for p in spec["partition"]]

    def specs(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self.partition:
            out.append({"partition": list(self.partition)})
        if self.link is not None and any(self.link.values()):
            out.append(dict(self.link))
        out += [{**lf, "peers": [p]} for p, lf in sorted(self.per_peer.items())]
        return out


class FaultOps:
    """Mixin: needs ``_lock``, ``_nodes``, ``events``, ``_node()`` and ``leader()``."""

    _lock: threading.RLock
    _nodes: dict[str, NodeProc]
    events: EventLog
    _net: dict[str, NetFaults]  # network faults in force per node (see the module text)

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
            errors += self._post_fault(nid, {"partition": others}, remember=True)
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
        errors = [e for nid in targets for e in self._post_fault(nid, spec, remember=True)]
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
        errors = [e for nid in targets for e in self._post_fault(nid, None, remember=True)]
        self.events.fault("heal", targets, heals=heals, **details, **_errs(errors))
        return errors

    def transfer(self, target: str) -> None:
        """Ask the current leader to hand leadership to ``target``."""
        leader = self.leader()
        if leader is None:
            raise nodeapi.NodeUnreachable("no leader known")
        nodeapi.transfer(self._node(leader).addr.http, target)

    def _post_fault(self, node_id: str, spec: dict[str, Any] | None,
                    remember: bool = False) -> list[str]:
        """Order ``spec`` (None: heal) on the node; with ``remember``, it is part of the
        network from now on (kept even if the node is down and did not take it)."""
        if remember:
            self._remember(node_id, spec)
        return nodeapi.apply_fault(node_id, self._node(node_id).addr.http, spec)

    def _remember(self, node_id: str, spec: dict[str, Any] | None) -> None:
        with self._lock:
            if spec is None:
                self._net.pop(node_id, None)
            else:
                self._net.setdefault(node_id, NetFaults()).add(spec)

    def net_faults(self, node_id: str) -> list[dict[str, Any]]:
        """The specs that rebuild the network faults in force on ``node_id``."""
        with self._lock:
            nf = self._net.get(node_id)
            return nf.specs() if nf is not None else []

    def learn_fault(self, rec: dict[str, Any]) -> None:
        """A fault record another tool (``launcher ctl``) wrote to faults.jsonl: keep the
        network faults it ordered, as if ordered here (records this code writes)."""
        kind, targets = rec.get("kind"), [str(t) for t in rec.get("targets", [])]
        with self._lock:
            ids = list(self._nodes)
        try:
            if kind in ("partition", "split") and isinstance(rec.get("sides"), list):
                for nid, others in partition_specs(ids, rec["sides"]).items():
                    self._remember(nid, {"partition": others})
            elif kind in ("loss", "delay"):
                spec = {k: rec.get(k, 0.0) for k in _LINK_FIELDS}
                if rec.get("peers") is not None:
                    spec["peers"] = rec["peers"]
                for nid in targets:
                    self._remember(nid, spec)
            elif kind == "heal" and rec.get("heals") != "pause":
                for nid in targets:
                    self._remember(nid, None)
        except (TypeError, ValueError) as e:  # a record we cannot read: say so, carry on
            self.events.emit("warn", f"faults.jsonl: cannot follow {rec!r}: {e}")

    def restore_net_faults(self, node_id: str) -> None:
        """The node restarted with an empty fault hook: post the network's faults again."""
        specs = self.net_faults(node_id)
        if not specs:
            return
        errors = [e for spec in specs for e in self._post_fault(node_id, spec)]
        now = self.net_faults(node_id)
        if now != specs:  # healed or changed meanwhile: set what holds now instead
            errors += self._post_fault(node_id, None)
            errors += [e for spec in now for e in self._post_fault(node_id, spec)]
            specs = now
        what = "; ".join(", ".join(f"{k}={v}" for k, v in spec.items()) for spec in specs)
        if errors:
            self.events.emit("warn", f"{node_id} restarted inside a fault ({what}) that could "
                             f"not be set again: {'; '.join(errors)}", node_id)
        else:
            self.events.emit("info", f"{node_id} restarted inside a fault: set again ({what})",
                             node_id)

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
