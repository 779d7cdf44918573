"""The supervisor's records: options, one mutable ``NodeProc`` per node, read-only ``NodeView``
snapshots, and the small process helpers (signals, log tails) they share.

How this works: ``ClusterSupervisor`` (cluster.py) owns a ``NodeProc`` per node and guards
them with one lock; its fault methods (faults.py) and the live view (view.py) see nodes only
through the supervisor's methods or ``NodeView`` copies.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]  # psutil ships no type hints

from udpraft.config import NodeAddr


@dataclass(slots=True)
class SupervisorOptions:
    data_dir: Path
    nodes: int | None = None  # None: as many as DIR's cluster has, else 3
    host: str = "127.0.0.1"
    base_port: int | None = None  # None: DIR's ports, else layout.DEFAULT_BASE_PORT
    storage: str = "file"
    python: str = sys.executable
    node_args: tuple[str, ...] = ()
    poll_interval_s: float = 0.25
    status_timeout_s: float = 0.5
    backoff_s: float = 0.2
    backoff_s_max: float = 5.0
    stable_s: float = 30.0
    stop_grace_s: float = 5.0
    replace_timeout_s: float = 180.0  # how long a wiped node's replacement is retried
    replace_catch_up_s: float = 60.0  # how long its fresh node may take to catch up


@dataclass(slots=True)
class NodeProc:
    """The supervisor's mutable record of one node (guarded by the supervisor's lock)."""

    addr: NodeAddr
    backoff_s: float
    proc: subprocess.Popen[bytes] | None = None
    pid: int = 0
    restarts: int = 0
    started_mono: float = 0.0
    restart_at: float | None = None  # monotonic time of a pending (re)start
    restart_now: bool = False  # the next death was asked for: restart without backoff
    held: bool = False  # stopped on purpose: not restarted
    retired: bool = False  # removed from the cluster: its poller ends, it is never restarted
    paused: bool = False
    answered: bool = False  # has answered /status since its latest start
    status: dict[str, Any] | None = None
    status_mono: float = 0.0
    last_fault: str = ""
    ran: bool = False  # the launcher started it before (this run, or an earlier one here)
    marked: bool = False  # its data dir holds the launcher's marker (wiped.py) this run
    ever_answered: bool = False  # answered /status at some point of this run
    wiped: str = ""  # why it lost its data: never restarted, being replaced (cluster.py)
    ps: Any = None  # psutil.Process of the current pid, kept for CPU % deltas
    cpu_pct: float = 0.0
    rss_bytes: int = 0


@dataclass(frozen=True, slots=True)
class NodeView:
    """A read-only snapshot of one node, for the live view and for callers."""

    id: str
    pid: int
    state: str  # up | starting | down | paused | held | stale
    role: str
    term: int
    leader: str
    commit_index: int
    applied_index: int
    cpu_pct: float
    rss_bytes: int
    restarts: int
    last_fault: str
    udp: str
    http: str


def send_signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def signame(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def log_tail(path: Path, max_bytes: int = 2048) -> str:
    """The last non-empty line of a node's log: usually why it exited."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - max_bytes))
            lines = [ln for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1].strip()[:200] if lines else ""


def is_node_process(pid: int) -> bool:
    try:
        return "udpraft.node" in " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return False


def sample_process(ps: Any, pid: int) -> tuple[Any, float, int] | None:
    """(process handle, CPU %, RSS bytes) of ``pid``; pass the handle back next time (CPU %
    is measured since the previous call on the same handle). None if the process is gone."""
    try:
        if ps is None or ps.pid != pid:
            ps = psutil.Process(pid)
            ps.cpu_percent(None)  # the first call only sets the baseline
        return ps, float(ps.cpu_percent(None)), int(ps.memory_info().rss)
    except psutil.Error:
        return None


class DirLocked(Exception):
    """Another launcher holds the data dir."""


def lock_dir(lock_path: Path) -> int:
    """Hold an exclusive flock on ``lock_path`` (our pid inside) until ``unlock_dir``; the
    kernel drops it if we die, so a stale lock never blocks. Raises DirLocked."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise DirLocked(f"another launcher (pid {holder}) is running on {lock_path.parent}") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def unlock_dir(fd: int) -> None:
    os.close(fd)  # closing releases the flock


def leftover_nodes(boot_file: Path) -> list[tuple[int, str]]:
    """(pid, command line) of node processes started from ``boot_file`` by an earlier
    launcher that died without stopping them (only possible when no launcher holds DIR)."""
    found = []
    key = str(boot_file)
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "udpraft.node" in cmd and key in cmd and p.info["pid"] != os.getpid():
            found.append((int(p.info["pid"]), cmd))
    return found


def stop_pids(pids: list[int], grace_s: float) -> None:
    """SIGCONT + SIGTERM, then SIGKILL whatever still runs after ``grace_s``."""
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.Error:
            continue
        send_signal(pid, signal.SIGCONT)
        send_signal(pid, signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for p in alive:
        send_signal(p.pid, signal.SIGKILL)
    psutil.wait_procs(alive, timeout=grace_s)


@dataclass(slots=True)
class Tracking:
    """What the supervisor's threads know about the cluster as a whole."""

    leader: str | None = None
    term: int = 0
    no_leader_since: float | None = None
    published: bool = False
    stopping: bool = False
    warned_slow: bool = False
    threads: list[threading.Thread] = field(default_factory=list)
