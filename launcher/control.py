"""The dashboard's ``Control`` over a running ``ClusterSupervisor`` (the launcher's half of
udpraft/dashboard/control.py): what the web page and its HTTP API may do to the processes,
and what the launcher knows about them. Refusals raise the dashboard's ``ActionError``
(HTTP 409), failures ``ActionFailed``."""

from __future__ import annotations

from typing import Any, NoReturn

from launcher import members, nodeapi
from launcher.cluster import ClusterSupervisor
from udpraft.config import ClusterConfig, ensure_secret


class DashboardControl:
    """The dashboard's ``Control`` (udpraft/dashboard/control.py) over a supervisor: what the
    web page and its HTTP API may do to processes, and what the launcher knows about them.
    Faults it causes are recorded like any other, with ``"via": "dashboard"``."""

    def __init__(self, sup: ClusterSupervisor) -> None:
        self.sup = sup
        self._secret = ensure_secret(sup.data_dir)  # the nodes' key, read once

    @property
    def config(self) -> ClusterConfig:
        return self.sup.config

    def secret(self) -> bytes:
        return self._secret

    def nodes(self) -> list[dict[str, Any]]:
        return [{"id": v.id, "pid": v.pid, "state": v.state, "restarts": v.restarts,
                 "cpu_pct": v.cpu_pct, "rss_bytes": v.rss_bytes, "last_fault": v.last_fault}
                for v in self.sup.snapshot()]

    def events(self, limit: int) -> list[dict[str, Any]]:
        return [{"ts": e.ts, "kind": e.kind, "text": e.text, "node": e.node}
                for e in self.sup.events.recent(limit)]

    def kill(self, node: str) -> None:
        if not self.sup.kill(node, via="dashboard"):
            _refuse(f"{node} is not running")

    def restart(self, node: str) -> None:
        self._not_wiped(node)
        self.sup.restart(node)

    def _not_wiped(self, node: str) -> None:
        if self.sup.is_wiped(node):
            _refuse(f"{node} lost its data and is being replaced; it never starts again")

    def stop_node(self, node: str) -> None:
        self.sup.stop_node(node)
        self.sup.events.emit("info", f"{node} stopped on request; it stays down until started",
                             node)

    def start_node(self, node: str) -> None:
        self._not_wiped(node)
        self.sup.start_node(node)
        self.sup.events.emit("info", f"start of {node} requested", node)

    def pause(self, node: str) -> None:
        if not self.sup.pause(node, via="dashboard"):
            _refuse(f"{node} is not running")

    def resume(self, node: str) -> None:
        self.sup.resume(node)
        self.sup.events.fault("heal", [node], heals="pause", via="dashboard")

    def partition(self, groups: list[list[str]]) -> list[str]:
        return self.sup.partition(*groups, via="dashboard")

    def degrade(self, nodes: list[str], peers: list[str] | None, drop_pct: float,
                delay_ms: float, jitter_ms: float) -> list[str]:
        kind = "loss" if drop_pct else "delay" if delay_ms else "clear"
        return self.sup.degrade(nodes, drop_pct, delay_ms, jitter_ms, peers=peers, kind=kind,
                                via="dashboard")

    def heal(self) -> list[str]:
        return self.sup.heal(heals="all", via="dashboard")

    def add_node(self) -> dict[str, Any]:
        try:
            return self.sup.add_node()
        except (members.Busy, members.Refused) as e:
            _refuse(str(e))
        except members.MemberError as e:
            _fail(str(e))

    def retire_node(self, node: str) -> dict[str, Any]:
        try:
            return self.sup.retire_node(node)
        except (members.Busy, members.Refused) as e:
            _refuse(str(e))
        except members.MemberError as e:
            _fail(str(e))

    def wipe(self, node: str) -> dict[str, Any]:
        data_dir = self.sup.config.node(node).data_dir
        try:
            pid = self.sup.wipe(node, via="dashboard")
        except members.Refused as e:
            _refuse(str(e))
        return {"pid": pid, "data_dir": data_dir, "replacing": "a fresh node (see the events)"}

    def transfer(self, target: str) -> str:
        leader = self.sup.leader()
        if leader is None:
            _refuse("no leader now: nobody to hand leadership over")
        elif leader == target:
            _refuse(f"{target} already leads")
        else:
            try:
                nodeapi.transfer(self.sup.config.node(leader).http, target)
            except nodeapi.NodeUnreachable as e:
                _refuse(f"{leader} did not take the transfer: {e}")
            self.sup.events.emit("info", f"asked {leader} to hand leadership to {target}",
                                 target)
        return leader or ""


def _refuse(text: str) -> NoReturn:
    from udpraft.dashboard.control import ActionError

    raise ActionError(text)


def _fail(text: str) -> NoReturn:
    from udpraft.dashboard.control import ActionFailed

    raise ActionFailed(text)
