"""The cluster file (``cluster.json``) and the cluster secret beside it.

How this works: the launcher writes ``DIR/cluster.json`` (atomically) and ``DIR/secret``
(mode 0600). ``initial_voters`` names the configuration the cluster was created with (every
node listed, when absent); a node listed but not among them joined later: it starts empty
and learns the membership from the leader. Membership changes happen in the Raft log; the
file is the address book and the launcher keeps it current. A node, a client or a tool finds the secret next to the cluster file, or in
``UDPRAFT_SECRET_FILE``. On several hosts, copy both files to each host.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class NodeAddr:
    id: str
    udp: tuple[str, int]
    http: tuple[str, int]
    pid: int = 0
    data_dir: str = ""


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    cluster: str
    nodes: tuple[NodeAddr, ...]
    dashboard: str = ""
    path: str = ""
    initial: tuple[str, ...] = ()  # the voters the cluster was created with; () = all

    @property
    def initial_voters(self) -> tuple[str, ...]:
        return self.initial or tuple(self.ids)

    def node(self, node_id: str) -> NodeAddr:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(f"node {node_id!r} is not in the cluster file {self.path}")

    @property
    def ids(self) -> list[str]:
        return [n.id for n in self.nodes]


def parse_addr(text: str) -> tuple[str, int]:
    host, _, port = str(text).rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"bad address {text!r}: want host:port")
    return host.strip("[]"), int(port)


def format_addr(addr: tuple[str, int]) -> str:
    return f"{addr[0]}:{addr[1]}"


def load_cluster(path: str | os.PathLike[str]) -> ClusterConfig:
    p = Path(path)
    try:
        raw: Any = orjson.loads(p.read_bytes())
    except FileNotFoundError:
        raise FileNotFoundError(f"no cluster file at {p} (start one with python -m launcher)") from None
    except orjson.JSONDecodeError as e:
        raise ValueError(f"cluster file {p} is not JSON: {e}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("nodes"), list) or not raw["nodes"]:
        raise ValueError(f"cluster file {p}: want an object with a non-empty 'nodes' list")
    nodes = []
    for n in raw["nodes"]:
        nodes.append(
            NodeAddr(
                id=str(n["id"]),
                udp=parse_addr(n["udp"]),
                http=parse_addr(n["http"]),
                pid=int(n.get("pid") or 0),
                data_dir=str(n.get("data_dir") or ""),
            )
        )
    ids = [n.id for n in nodes]
    if len(set(ids)) != len(ids):
        raise ValueError(f"cluster file {p}: duplicate node ids")
    initial = raw.get("initial_voters") or []
    if not isinstance(initial, list) or not all(isinstance(i, str) and i for i in initial):
        raise ValueError(f"cluster file {p}: 'initial_voters' must be a list of node ids")
    return ClusterConfig(
        cluster=str(raw.get("cluster") or "udpraft"),
        nodes=tuple(nodes),
        dashboard=str(raw.get("dashboard") or ""),
        path=str(p),
        initial=tuple(initial),
    )


def cluster_to_json(cfg: ClusterConfig) -> bytes:
    return orjson.dumps(
        {
            "cluster": cfg.cluster,
            "nodes": [
                {
                    "id": n.id,
                    "udp": format_addr(n.udp),
                    "http": format_addr(n.http),
                    "pid": n.pid,
                    "data_dir": n.data_dir,
                }
                for n in cfg.nodes
            ],
            "dashboard": cfg.dashboard,
            "initial_voters": list(cfg.initial_voters),
        },
        option=orjson.OPT_INDENT_2,
    )


def write_atomic(path: str | os.PathLike[str], data: bytes, mode: int = 0o644) -> None:
    """temp file, fsync, rename, fsync the directory: readers see old or new, never half."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, p)
    dfd = os.open(p.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def secret_path_for(cluster_file: str | os.PathLike[str]) -> Path:
    env = os.environ.get("UDPRAFT_SECRET_FILE")
    if env:
        return Path(env)
    return Path(cluster_file).parent / "secret"


def load_secret(cluster_file: str | os.PathLike[str]) -> bytes:
    p = secret_path_for(cluster_file)
    try:
        data = p.read_bytes().strip()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no cluster secret at {p}: the launcher writes it beside cluster.json "
            "(or set UDPRAFT_SECRET_FILE)"
        ) from None
    if len(data) < 16:
        raise ValueError(f"cluster secret {p} is too short (need >= 16 bytes)")
    return data


def ensure_secret(directory: str | os.PathLike[str]) -> bytes:
    """Create ``DIR/secret`` (mode 0600) unless it exists; return its bytes."""
    p = Path(directory) / "secret"
    if not p.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(p, secrets.token_hex(32).encode(), mode=0o600)
    os.chmod(p, 0o600)
    return p.read_bytes().strip()
