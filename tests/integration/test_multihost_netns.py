"""Nodes on separate "hosts": one network namespace each, joined by veth pairs to a bridge.

The same cluster.json (real per-host addresses, not loopback) starts every node with
``ip netns exec``. Then an nftables drop rule on the input hook of one host cuts it off from
its peers: the others elect a leader and keep committing; deleting the rule heals it and the
cut-off node catches up. Skips with a message where namespaces or nftables are unavailable.
All addresses belong to namespaces this test creates and removes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from udpraft.client.blocking import Client

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration
TAG = f"u{os.getpid() % 100000}"
BRIDGE = f"br{TAG}"
SUBNET = "10.231.{}.{}"


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=check, timeout=20)


def _can_netns() -> str | None:
    if os.geteuid() != 0:
        return "needs root for ip netns"
    if shutil.which("ip") is None:
        return "iproute2 (ip) is not installed"
    if shutil.which("nft") is None:
        return "nftables (nft) is not installed (make test installs it with apt-get)"
    probe = f"{TAG}probe"
    r = sh("ip", "netns", "add", probe, check=False)
    if r.returncode != 0:
        return f"ip netns add failed: {r.stderr.strip()}"
    sh("ip", "netns", "del", probe, check=False)
    return None


@pytest.fixture
def hosts() -> Iterator[list[tuple[str, str]]]:
    why = _can_netns()
    if why:
        pytest.skip(why)
    third = 100 + os.getpid() % 100
    names = [f"{TAG}n{i}" for i in (1, 2, 3)]
    made: list[str] = []
    try:
        sh("ip", "link", "add", BRIDGE, "type", "bridge")
        sh("ip", "addr", "add", SUBNET.format(third, 254) + "/24", "dev", BRIDGE)
        sh("ip", "link", "set", BRIDGE, "up")
        out = []
        for i, ns in enumerate(names, start=1):
            sh("ip", "netns", "add", ns)
            made.append(ns)
            veth = f"v{TAG}{i}"
            sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh("ip", "link", "set", veth, "master", BRIDGE, "up")
            addr = SUBNET.format(third, i)
            sh("ip", "-n", ns, "addr", "add", addr + "/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            out.append((ns, addr))
        yield out
    finally:
        for ns in made:
            sh("ip", "netns", "del", ns, check=False)
        sh("ip", "link", "del", BRIDGE, check=False)


def _status(addr: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://{addr}:7101/status", timeout=1) as r:
            data: dict[str, Any] = json.loads(r.read())
            return data
    except OSError:
        return None


def _leader(addrs: list[str], exclude: str = "") -> str | None:
    for a in addrs:
        st = _status(a)
        if st and st["role"] == "leader" and st["id"] != exclude:
            return str(st["id"])
    return None


def _wait(cond: Any, timeout: float) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return True
        time.sleep(0.1)
    return False


def test_partition_one_host_with_nftables(tmp_path: Path, hosts: list[tuple[str, str]]) -> None:
    cfg = {
        "cluster": "netns",
        "nodes": [
            {"id": f"n{i}", "udp": f"{addr}:7001", "http": f"{addr}:7101",
             "data_dir": str(tmp_path / f"n{i}")}
            for i, (_ns, addr) in enumerate(hosts, start=1)
        ],
    }
    cluster_file = tmp_path / "cluster.json"
    cluster_file.write_text(json.dumps(cfg))
    (tmp_path / "secret").write_text(os.urandom(16).hex())
    procs = []
    try:
        for i, (ns, _addr) in enumerate(hosts, start=1):
            log = open(tmp_path / f"n{i}.log", "wb")
            procs.append(subprocess.Popen(
                ["ip", "netns", "exec", ns, sys.executable, "-m", "udpraft.node", "--id", f"n{i}",
                 "--cluster-config", str(cluster_file)],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            ))
        addrs = [a for _ns, a in hosts]
        assert _wait(lambda: _leader(addrs) is not None, 20), "no leader across namespaces"
        with Client.from_cluster_file(str(cluster_file)) as c:
            before = c.submit(b"across-hosts").index
            # cut host 1 off from its peers with an nftables drop rule on its input hook
            ns1, _a1 = hosts[0]
            peers = ", ".join(a for _ns, a in hosts[1:])
            sh("ip", "netns", "exec", ns1, "nft", "add", "table", "inet", "udpraft")
            sh("ip", "netns", "exec", ns1, "nft", "add", "chain", "inet", "udpraft", "input",
               "{ type filter hook input priority 0 ; }")
            sh("ip", "netns", "exec", ns1, "nft", "add", "rule", "inet", "udpraft", "input",
               "ip", "saddr", "{ " + peers + " }", "drop")
            assert _wait(lambda: _leader(addrs[1:]) is not None, 15), "majority elected no leader"
            during = [c.submit(b"cut-%d" % k, timeout=10).index for k in range(20)]
            assert min(during) > before
            st1 = _status(addrs[0])
            assert st1 is not None and st1["commit_index"] < max(during), "isolated node committed"
            sh("ip", "netns", "exec", ns1, "nft", "delete", "table", "inet", "udpraft")
            assert _wait(lambda: (_status(addrs[0]) or {}).get("applied_index", 0) >= max(during),
                         20), "healed node did not catch up"
            got = {e.data for e in c.retrieve(1)}
            assert {b"across-hosts"} | {b"cut-%d" % k for k in range(20)} <= got
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
