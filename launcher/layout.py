"""Where the cluster lives: node ids, ports, data dirs and the cluster files.

How this works: a fresh data dir gets nodes ``n1..nN``; node i listens on UDP
``base_port+i-1`` and HTTP ``base_port+100+i-1``, keeps its data in ``DIR/n<i>`` and its
output in ``DIR/n<i>.log``; the dashboard URL points at ``base_port+1079`` (8080 for the
default 7001). A data dir that already holds ``cluster.json`` (or the boot file of a run
that never got that far) is reused as it is: same cluster id, node ids and ports, so the
nodes come back with everything they had committed. A cluster whose membership changed
(``initial_voters`` differ from the nodes listed: ``launcher ctl add-node``/``retire-node``)
comes back with the nodes listed now, whatever ``--nodes`` says; otherwise a different
``--nodes`` is refused.

Two files are written. ``DIR/.cluster.boot.json`` is what the node processes start from (pids
0; nodes only read addresses from it). ``DIR/cluster.json`` is published once every node
answers ``/status`` and rewritten, atomically, whenever a pid changes; it is removed when a
launcher starts, so "cluster.json exists" always means "this run's nodes all answered".
Ports are checked before anything starts: a busy one fails the start with its name.
"""

from __future__ import annotations

import errno
import os
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from udpraft.config import (
    ClusterConfig,
    NodeAddr,
    cluster_to_json,
    load_cluster,
    write_atomic,
)

DEFAULT_BASE_PORT = 7001
HTTP_PORT_OFFSET = 100
DASHBOARD_PORT_OFFSET = 1079
CLUSTER_FILE = "cluster.json"
BOOT_FILE = ".cluster.boot.json"
FAULTS_FILE = "faults.jsonl"
PORT_MAX = 65_535


class LayoutError(Exception):
    """The cluster cannot be laid out as asked (busy port, wrong node count, bad file)."""


@dataclass(frozen=True, slots=True)
class Plan:
    """What a launcher run will use, and what it had to say about it."""

    config: ClusterConfig
    reused: bool
    notes: tuple[str, ...] = ()
    previous_pids: tuple[tuple[str, int], ...] = ()  # as recorded by the last run


def node_ports(base_port: int, index: int) -> tuple[int, int]:
    """(udp, http) ports of the ``index``-th node, counting from 1."""
    if index < 1:
        raise ValueError("node index counts from 1")
    udp = base_port + index - 1
    http = base_port + HTTP_PORT_OFFSET + index - 1
    if base_port < 1 or http > PORT_MAX:
        raise LayoutError(f"base port {base_port} leaves node n{index} outside 1..{PORT_MAX}")
    return udp, http


def dashboard_url(host: str, base_port: int) -> str:
    port = base_port + DASHBOARD_PORT_OFFSET
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def new_cluster_id() -> str:
    return f"udpraft-{secrets.token_hex(4)}"


def fresh_layout(
    nodes: int, data_dir: str | os.PathLike[str], host: str, base_port: int,
    cluster_id: str | None = None,
) -> ClusterConfig:
    if nodes < 1:
        raise LayoutError("--nodes must be at least 1")
    addrs = []
    for i in range(1, nodes + 1):
        udp, http = node_ports(base_port, i)
        nid = f"n{i}"
        addrs.append(
            NodeAddr(nid, (host, udp), (host, http), 0, os.path.join(os.fspath(data_dir), nid))
        )
    return ClusterConfig(
        cluster=cluster_id or new_cluster_id(),
        nodes=tuple(addrs),
        dashboard=dashboard_url(host, base_port),
    )


def existing_layout(data_dir: str | os.PathLike[str]) -> ClusterConfig | None:
    """The cluster recorded in DIR (cluster.json, else the boot file), or None if fresh."""
    d = Path(data_dir)
    for name in (CLUSTER_FILE, BOOT_FILE):
        p = d / name
        if p.exists():
            try:
                return load_cluster(p)
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise LayoutError(f"cannot reuse {p}: {e} (move it away to start afresh)") from e
    return None


def plan_cluster(
    data_dir: str | os.PathLike[str],
    nodes: int | None,
    host: str = "127.0.0.1",
    base_port: int | None = None,
) -> Plan:
    """Reuse DIR's cluster if it has one, else lay out a fresh one. Raises LayoutError."""
    old = existing_layout(data_dir)
    if old is None:
        cfg = fresh_layout(nodes or 3, data_dir, host, base_port or DEFAULT_BASE_PORT)
        return Plan(cfg, reused=False)
    notes = [f"reusing cluster {old.cluster} from {data_dir}"]
    changed = set(old.ids) != set(old.initial_voters)  # nodes were added or retired
    if nodes is not None and nodes != len(old.nodes):
        if not changed:
            raise LayoutError(
                f"{data_dir} holds a {len(old.nodes)}-node cluster ({old.cluster}); refusing "
                f"to start it with --nodes {nodes}. Use --nodes {len(old.nodes)}, or another "
                "--data-dir (a running cluster grows and shrinks with `python -m launcher ctl "
                "add-node` / `retire-node ID`)."
            )
        notes.append(
            f"--nodes {nodes} ignored: the cluster was created with {len(old.initial_voters)} "
            f"nodes and its membership changed since; it has {len(old.nodes)} now "
            f"({', '.join(old.ids)}), as {CLUSTER_FILE} records")
    elif changed:
        notes.append(f"membership as {CLUSTER_FILE} records it: {', '.join(old.ids)} "
                     f"(created with {', '.join(old.initial_voters)})")
    first = old.nodes[0]
    if base_port is not None and first.udp[1] != base_port:
        notes.append(f"keeping the ports recorded in {data_dir} (udp from {first.udp[1]}), "
                     f"not --base-port {base_port}")
    if host != first.udp[0]:
        notes.append(f"keeping the host recorded in {data_dir} ({first.udp[0]}), not {host}")
    # data dirs follow DIR as given now, so a moved data dir still finds its nodes' state
    nodes_now = tuple(
        replace(n, pid=0, data_dir=os.path.join(os.fspath(data_dir), n.id)) for n in old.nodes
    )
    dashboard = old.dashboard or dashboard_url(first.udp[0], first.udp[1])
    return Plan(
        ClusterConfig(old.cluster, nodes_now, dashboard, initial=old.initial_voters),
        reused=True, notes=tuple(notes),
        previous_pids=tuple((n.id, n.pid) for n in old.nodes if n.pid),
    )


# ---------------------------------------------------------------------------- ports


def port_is_free(host: str, port: int, kind: str) -> bool:
    """Can a node bind ``port``? UDP is tried without SO_REUSEADDR (nodes set it, and Linux
    would then let two nodes share one UDP port silently); TCP with it, as aiohttp does, so a
    previous run's TIME_WAIT sockets do not count as busy."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    stype = socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM
    with socket.socket(family, stype) as s:
        if kind != "udp":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise LayoutError(f"cannot bind {kind} {host}:{port}: {e}") from e
    return True


def ephemeral_range() -> tuple[int, int]:
    """The ports the kernel hands to outgoing connections; a node port in there can be taken
    for a moment by any client (the launcher's own status polls included)."""
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32_768, 60_999


def ephemeral_note(cfg: ClusterConfig) -> str:
    lo, hi = ephemeral_range()
    ports = [p for n in cfg.nodes for p in (n.udp[1], n.http[1])]
    if any(lo <= p <= hi for p in ports):
        return (f" (ports {lo}-{hi} are also lent to outgoing connections; "
                f"a --base-port below {lo} avoids such clashes)")
    return ""


def busy_ports(cfg: ClusterConfig) -> list[str]:
    """One line per port a node of ``cfg`` could not bind right now."""
    busy = []
    for n in cfg.nodes:
        for kind, (host, port) in (("udp", n.udp), ("http", n.http)):
            if not port_is_free(host, port, kind):
                busy.append(f"port {port} ({kind} of {n.id}, {host}) is busy")
    return busy


# ---------------------------------------------------------------------------- files


def with_pids(cfg: ClusterConfig, pids: Mapping[str, int]) -> ClusterConfig:
    return replace(cfg, nodes=tuple(replace(n, pid=pids.get(n.id, 0)) for n in cfg.nodes))


def write_cluster(path: str | os.PathLike[str], cfg: ClusterConfig) -> None:
    write_atomic(path, cluster_to_json(cfg) + b"\n")


def remove_quietly(path: str | os.PathLike[str]) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
