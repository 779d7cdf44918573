"""Real node processes started directly (no launcher), for tests and benchmarks: free ports
on 127.0.0.1, a data dir, and cleanup of every process by PID — even when the caller fails."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def free_ports(n: int, kind: int = socket.SOCK_DGRAM) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, kind)
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def free_base_port(rng: random.Random | None = None, lo: int = 10_000, hi: int = 30_000) -> int:
    """A launcher base port whose node (P..P+7), HTTP (P+100..) and dashboard (P+1079) ports
    are all free right now (below 32768: the kernel lends higher ports to outgoing sockets)."""
    rng = rng or random.Random()
    for _ in range(200):
        base = rng.randrange(lo, hi)
        ports = [base + i for i in range(8)] + [base + 100 + i for i in range(8)] + [base + 1079]
        try:
            for p in ports:
                for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                    s = socket.socket(socket.AF_INET, kind)
                    try:
                        s.bind(("127.0.0.1", p))
                    finally:
                        s.close()
        except OSError:
            continue
        return base
    raise RuntimeError("no free port range found")


class LocalCluster:
    """N node processes started directly (no launcher), each restartable and killable."""

    def __init__(self, tmp: Path, n: int, storage: str = "file", extra_args: list[str] | None = None):
        self.dir = tmp
        self.n = n
        self.storage = storage
        self.extra = extra_args or []
        udp = free_ports(n)
        http = free_ports(n, socket.SOCK_STREAM)
        self.ids = [f"n{i + 1}" for i in range(n)]
        self.http = {nid: f"127.0.0.1:{http[i]}" for i, nid in enumerate(self.ids)}
        self.udp = {nid: f"127.0.0.1:{udp[i]}" for i, nid in enumerate(self.ids)}
        self.cluster_file = tmp / "cluster.json"
        cfg = {
            "cluster": "it-" + os.urandom(3).hex(),
            "nodes": [
                {"id": nid, "udp": self.udp[nid], "http": self.http[nid], "pid": 0,
                 "data_dir": str(tmp / nid)}
                for nid in self.ids
            ],
        }
        cfg["initial_voters"] = list(self.ids)
        self.cluster_file.write_text(json.dumps(cfg))
        (tmp / "secret").write_text(os.urandom(16).hex())
        os.chmod(tmp / "secret", 0o600)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def add_node(self, nid: str) -> tuple[str, str]:
        """Lay out a new node (free ports, a data dir) and list it in the cluster file; it
        is not a member until a membership change adds it. Returns (udp, http)."""
        udp, http = free_ports(1)[0], free_ports(1, socket.SOCK_STREAM)[0]
        self.udp[nid], self.http[nid] = f"127.0.0.1:{udp}", f"127.0.0.1:{http}"
        self.ids.append(nid)
        cfg = json.loads(self.cluster_file.read_text())
        cfg["nodes"].append({"id": nid, "udp": self.udp[nid], "http": self.http[nid], "pid": 0,
                             "data_dir": str(self.dir / nid)})
        tmp = self.cluster_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(cfg))
        os.replace(tmp, self.cluster_file)
        return self.udp[nid], self.http[nid]

    def start(self, nid: str) -> None:
        log = open(self.dir / f"{nid}.log", "ab")
        self.procs[nid] = subprocess.Popen(
            [sys.executable, "-m", "udpraft.node", "--id", nid, "--cluster-config",
             str(self.cluster_file), "--storage", self.storage, *self.extra],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
        )
        log.close()

    def start_all(self) -> None:
        for nid in self.ids:
            self.start(nid)

    def kill(self, nid: str, sig: int = signal.SIGKILL) -> None:
        p = self.procs.get(nid)
        if p is not None and p.poll() is None:
            os.kill(p.pid, sig)
            if sig in (signal.SIGKILL, signal.SIGTERM):
                p.wait(10)

    def stop_all(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGCONT)
                    p.terminate()
        deadline = time.time() + 8
        for p in self.procs.values():
            try:
                p.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)

    def status(self, nid: str, timeout: float = 1.0) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"http://{self.http[nid]}/status", timeout=timeout) as r:
                data: dict[str, Any] = json.loads(r.read())
                return data
        except OSError:
            return None

    def post(self, nid: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        req = urllib.request.Request(
            f"http://{self.http[nid]}{path}", data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"}, method="POST",
        )
        with urllib.request.urlopen(req, timeout=2) as r:
            data: dict[str, Any] = json.loads(r.read())
            return data

    def leader(self, among: list[str] | None = None) -> str | None:
        best: tuple[int, str] | None = None
        for nid in among or self.ids:
            st = self.status(nid)
            if st and st["role"] == "leader" and (best is None or st["term"] > best[0]):
                best = (st["term"], nid)
        return None if best is None else best[1]

    def wait_leader(self, timeout: float = 10.0, among: list[str] | None = None) -> str:
        deadline = time.time() + timeout
        while time.time() < deadline:
            ld = self.leader(among)
            if ld is not None:
                return ld
            time.sleep(0.05)
        raise AssertionError(f"no leader within {timeout}s")

    def wait_up(self, timeout: float = 10.0) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if all(self.status(n) for n in self.ids if n in self.procs and self.procs[n].poll() is None):
                return
            time.sleep(0.05)
        raise AssertionError("nodes did not come up")


@contextlib.contextmanager
def local_cluster(tmp: Path, n: int, storage: str = "file") -> Iterator[LocalCluster]:
    c = LocalCluster(tmp, n, storage)
    try:
        c.start_all()
        c.wait_up()
        yield c
    finally:
        c.stop_all()
