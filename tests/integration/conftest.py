"""Fixtures for the key-value tests: a real etcd 3.4 to compare against, and HTTP clients.

``etcd_binary`` (session) installs Debian's etcd-server with apt-get when /usr/bin/etcd is
missing (once per machine: a file lock keeps parallel pytest workers from racing dpkg) and
skips, saying why, only when apt cannot reach its archive. ``etcd`` starts a fresh
single-member etcd on free loopback ports for one test and stops it by PID afterwards.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.apt import ensure_package
from tests.helpers.procs import free_ports

ETCD = "/usr/bin/etcd"


def ensure_etcd() -> str | None:
    """Install etcd if needed; returns a reason to skip, or None when /usr/bin/etcd is there."""
    return ensure_package(ETCD, ["etcd-server", "etcd-client"], 600)


@pytest.fixture(scope="session")
def etcd_binary() -> str:
    reason = ensure_etcd()
    if reason is not None:
        pytest.skip(reason)
    return ETCD


class EtcdProcess:
    def __init__(self) -> None:
        base = "/dev/shm" if os.path.isdir("/dev/shm") else None  # fsync on tmpfs is free
        self.dir = tempfile.mkdtemp(prefix="udpraft-etcd-", dir=base)
        client, peer = free_ports(2, socket.SOCK_STREAM)
        self.addr = f"127.0.0.1:{client}"
        self.url = f"http://{self.addr}"
        peer_url = f"http://127.0.0.1:{peer}"
        self.log = open(os.path.join(self.dir, "etcd.log"), "wb")
        self.proc = subprocess.Popen(
            [ETCD, "--name", "default", "--data-dir", os.path.join(self.dir, "data"),
             "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
             "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
             "--initial-cluster", f"default={peer_url}", "--log-level", "error"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited: {Path(self.log.name).read_text()[-2000:]}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                st, body = KvHttp(self.addr, timeout=1.0).post("/v3/maintenance/status", {})
                if st == 200 and body.get("leader"):
                    return
            time.sleep(0.1)
        raise RuntimeError("etcd did not become ready")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def etcd(etcd_binary: str) -> Iterator[EtcdProcess]:
    e = EtcdProcess()
    try:
        e.wait_ready()
        yield e
    finally:
        e.stop()


class KvHttp:
    """A keep-alive JSON client for one etcd-style HTTP address."""

    def __init__(self, addr: str, timeout: float = 15.0) -> None:
        host, port = addr.rsplit(":", 1)
        self.host, self.port, self.timeout = host, int(port), timeout
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def post(self, path: str, body: Any) -> tuple[int, Any]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        for attempt in range(2):
            try:
                self.conn.request("POST", path, body=data, headers={"Content-Type": "application/json"})
                r = self.conn.getresponse()
                raw = r.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
                if attempt:
                    raise
        lines = [json.loads(x) for x in raw.split(b"\n") if x.strip()]
        if path.endswith("/keepalive") and raw.startswith(b'{"result"'):
            return r.status, lines
        return r.status, lines[0] if lines else None

    def close(self) -> None:
        self.conn.close()


class WatchClient:
    """A /v3/watch stream over a raw socket. The request objects go in one body: etcd's
    gateway answers only once the request body is complete (Go's HTTP/1 server), so a
    stream cannot add requests later there. Response objects arrive on a queue."""

    def __init__(self, addr: str, *requests: Any) -> None:
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        data = b"".join(r if isinstance(r, bytes) else json.dumps(r).encode() for r in requests)
        self.sock.sendall(b"POST /v3/watch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (len(data), data))
        self.q: queue.Queue[Any] = queue.Queue()
        self.status = 0
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        f = self.sock.makefile("rb")
        try:
            self.status = int(f.readline().split()[1])
            headers = {}
            while (line := f.readline().strip()):
                k, _, v = line.decode().partition(":")
                headers[k.strip().lower()] = v.strip()
            if "content-length" in headers:
                self.q.put(json.loads(f.read(int(headers["content-length"]))))
                return
            buf = b""
            while True:
                size = int(f.readline().strip() or b"0", 16)
                if size == 0:
                    return
                buf += f.read(size)
                f.readline()
                *done, buf = buf.split(b"\n")
                for x in done:
                    if x.strip():
                        self.q.put(json.loads(x))
        except (OSError, ValueError):
            return

    def get(self, timeout: float = 5.0) -> Any:
        return self.q.get(timeout=timeout)

    def drain(self, quiet_s: float = 0.3) -> list[Any]:
        out = []
        while True:
            try:
                out.append(self.q.get(timeout=quiet_s))
            except queue.Empty:
                return out

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


@pytest.fixture
def kv_clients() -> Any:
    """Factories for the KV test clients: (KvHttp, WatchClient)."""
    return KvHttp, WatchClient
