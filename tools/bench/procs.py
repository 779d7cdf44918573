"""Process plumbing shared by the comparison benchmarks (``compare``, ``kv``).

How this works:

- ``Measured`` samples each node process's CPU seconds (user + system, psutil) right before
  the load starts and right after it ends, and reads its peak RSS (``VmHWM`` from
  ``/proc/PID/status``: the kernel's high-water mark of resident memory over the process's
  whole life, which is why every run uses fresh processes).
- Handshake with a load-generating worker process (the udpraft embedded leader, the
  PySyncObj leader) through files in a control directory: the worker writes ``ready`` once
  it leads and is connected, waits for ``go`` (written by the controller right after the
  "before" CPU sample), runs its load, then writes ``result.json`` atomically and idles
  until it is stopped. So the CPU window is the load window, for every node alike.
- ``stop_pids`` ends processes by PID only: SIGCONT + SIGTERM, then SIGKILL after a grace
  period. ``sigterm_as_interrupt`` turns a SIGTERM to the controller into
  ``KeyboardInterrupt`` so that its ``finally`` blocks (which stop every child) run.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import psutil  # type: ignore[import-untyped]  # psutil ships no type hints


def free_tcp_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set size (VmHWM) in MiB; 0.0 if it cannot be read."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def cpu_seconds(pid: int) -> float:
    try:
        t = psutil.Process(pid).cpu_times()
        return float(t.user + t.system)
    except psutil.Error:
        return 0.0


@dataclass
class Measured:
    """CPU seconds of named node processes over the load window, and their peak RSS."""

    pids: dict[str, int]
    before: dict[str, float] = field(default_factory=dict)
    after: dict[str, float] = field(default_factory=dict)
    rss_mb: dict[str, float] = field(default_factory=dict)

    def start(self) -> None:
        self.before = {n: cpu_seconds(p) for n, p in self.pids.items()}

    def stop(self) -> None:
        self.after = {n: cpu_seconds(p) for n, p in self.pids.items()}
        self.rss_mb = {n: peak_rss_mb(p) for n, p in self.pids.items()}

    def cpu_s(self) -> dict[str, float]:
        return {n: self.after.get(n, 0.0) - self.before.get(n, 0.0) for n in self.pids}

    def summary(self, ops: int) -> dict[str, Any]:
        """Per node: CPU seconds per 1,000 operations, and peak RSS in MiB."""
        cpu = self.cpu_s()
        per_k = {n: (1000.0 * c / ops if ops else 0.0) for n, c in cpu.items()}
        return {
            "cpu_s": {n: round(c, 3) for n, c in cpu.items()},
            "cpu_s_per_1k_ops": {n: round(v, 4) for n, v in per_k.items()},
            "cpu_s_per_1k_ops_max": round(max(per_k.values(), default=0.0), 4),
            "peak_rss_mb": {n: round(v, 1) for n, v in self.rss_mb.items()},
            "peak_rss_mb_max": round(max(self.rss_mb.values(), default=0.0), 1),
        }


def log_tail(path: Path, n: int = 15) -> str:
    """The last ``n`` lines of a process log, for an error message (the temp dir goes away)."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


def wait_for(pred: Callable[[], bool], timeout: float, what: str,
             alive: Callable[[], str | None] | None = None, poll_s: float = 0.005) -> None:
    """Poll ``pred`` until true; raise TimeoutError after ``timeout`` s, or RuntimeError as
    soon as ``alive()`` names a process that died."""
    deadline = time.monotonic() + timeout
    while not pred():
        if alive is not None:
            dead = alive()
            if dead:
                raise RuntimeError(f"{dead} exited while waiting for {what}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(poll_s)


def first_dead(procs: dict[str, subprocess.Popen[bytes]]) -> str | None:
    for name, p in procs.items():
        if p.poll() is not None:
            return f"{name} (pid {p.pid}, exit {p.returncode})"
    return None


def read_json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def run_handshake(ctl: Path, procs: dict[str, subprocess.Popen[bytes]], duration_s: float,
                  startup_s: float = 40.0, drain_s: float = 60.0,
                  profile_dir: Path | None = None) -> tuple[dict[str, Any], Measured]:
    """Wait for a worker's ``ready``, sample CPU, say ``go``, wait for ``result.json``,
    sample CPU and RSS. Bounded: startup_s + duration_s + drain_s at most. With
    ``profile_dir``, py-spy samples every node during the load (``profiles.py``)."""
    wait_for(lambda: (ctl / "ready").exists(), startup_s, "the leader to be ready",
             lambda: first_dead(procs))
    m = Measured({n: p.pid for n, p in procs.items()})
    m.start()
    (ctl / "go").write_text("go")
    spies: list[subprocess.Popen[bytes]] = []
    try:
        if profile_dir is not None:
            from tools.bench.profiles import start_spies

            spies = start_spies(profile_dir, m.pids, duration_s)
        wait_for(lambda: (ctl / "result.json").exists(), duration_s + drain_s, "the load result",
                 lambda: first_dead(procs), poll_s=0.002)
        m.stop()
    finally:
        if spies:
            from tools.bench.profiles import wait_spies

            wait_spies(spies)
    return read_json(ctl / "result.json"), m


def wait_go(ctl: Path, stop: Callable[[], bool] = lambda: False) -> bool:
    """Worker side: block until the controller writes ``go`` (False if told to stop)."""
    while not (ctl / "go").exists():
        if stop() or os.getppid() == 1:
            return False
        time.sleep(0.002)
    return True


def stop_pids(procs: Iterable[subprocess.Popen[bytes]], grace_s: float = 8.0) -> None:
    """SIGTERM each still-running process (by PID), SIGKILL whatever outlives the grace."""
    plist = list(procs)
    for p in plist:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGCONT)
                os.kill(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for p in plist:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)
            p.wait(5)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises KeyboardInterrupt (so cleanup code runs)."""

    def handler(_sig: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def latency_summary(lat_s: list[float]) -> dict[str, float]:
    if not lat_s:
        return {"p50_ms": 0.0, "p99_ms": 0.0}
    s = sorted(lat_s)
    n = len(s)
    return {"p50_ms": round(1000 * s[n // 2], 3), "p99_ms": round(1000 * s[min(n - 1, int(0.99 * n))], 3)}
