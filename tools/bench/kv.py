"""``python -m tools.bench kv --target fake-etcd|etcd|both --duration-s 5``

udpraft's etcd-compatible KV ("fake-etcd": the etcd v3 JSON API on every node's HTTP
port) against a real etcd 3.4 (Debian ``etcd-server``, ``/usr/bin/etcd``), under the same
load generator.

How this works:

- fake-etcd: ``tools.localcluster`` starts ``--nodes`` ``udpraft.node`` processes on free
  127.0.0.1 ports with the file log (fsync on), waits for a leader and checks that
  ``POST /v3/kv/put`` answers (if the KV layer is not there, that target is skipped with a
  message). etcd: ``EtcdCluster`` starts ``--nodes`` ``/usr/bin/etcd`` members on free
  ports with temporary data dirs (etcd's defaults: its WAL is fsynced), waits until every
  member answers ``/health``, and stops them by PID.
- Load (``drive``): ``--clients`` closed-loop clients in this process (uvloop, aiohttp),
  each with its own keep-alive connection, spread round-robin over all members (``--to
  all``, the default; ``--to leader`` for fake-etcd sends all to its leader). Phase 1:
  ``POST /v3/kv/put`` of ``--value-size``-byte values to keys ``bench/<client>/<n % 20>``
  for ``--duration-s``. Phase 2: linearizable ``POST /v3/kv/range`` of those keys (etcd's
  default, no ``serializable``) for ``--duration-s``. Any non-200 answer counts as an
  error. Each phase: ops/s, p50/p99, CPU seconds per 1,000 ops per member (psutil, sampled
  right before and after the phase) and, at the end, peak RSS per member (VmHWM).
- The load generator shares the 2 cores with the servers; its own CPU is reported.

Last line (INTERFACE.md), e.g. for ``--target both``:
``kv target=both nodes=3 clients=50 value=10 fake_etcd_put_ops_per_s=N etcd_put_ops_per_s=N
put_ratio=R ... get_ratio=R``; for one target: ``etcd kv nodes=3 clients=50 value=10
put_ops_per_s=N put_p50_ms=X put_p99_ms=Y get_ops_per_s=N get_p50_ms=X get_p99_ms=Y``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

from tools.bench.procs import (
    Measured,
    free_tcp_ports,
    latency_summary,
    sigterm_as_interrupt,
    stop_pids,
)
from tools.bench.profiles import start_spies, wait_spies
from tools.localcluster import LocalCluster

ETCD_BIN = os.environ.get("UDPRAFT_ETCD_BIN", "/usr/bin/etcd")
KEYS_PER_CLIENT = 20


class Skip(Exception):
    """This target cannot run here (missing binary, KV layer not built yet)."""


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _post(url: str, body: dict[str, Any], timeout: float = 2.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class EtcdCluster:
    """``n`` etcd members on 127.0.0.1 free ports, temp data dirs, stopped by PID."""

    def __init__(self, tmp: Path, n: int) -> None:
        if not Path(ETCD_BIN).exists():
            raise Skip(f"{ETCD_BIN} not found (apt-get install etcd-server)")
        self.dir = tmp
        ports = free_tcp_ports(2 * n)
        self.names = [f"e{i + 1}" for i in range(n)]
        self.client = {nm: f"127.0.0.1:{ports[i]}" for i, nm in enumerate(self.names)}
        self.peer = {nm: f"http://127.0.0.1:{ports[n + i]}" for i, nm in enumerate(self.names)}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self) -> None:
        initial = ",".join(f"{nm}={self.peer[nm]}" for nm in self.names)
        token = "bench-" + os.urandom(4).hex()
        for nm in self.names:
            log = open(self.dir / f"{nm}.log", "wb")
            self.procs[nm] = subprocess.Popen(
                [ETCD_BIN, "--name", nm, "--data-dir", str(self.dir / nm),
                 "--listen-client-urls", f"http://{self.client[nm]}",
                 "--advertise-client-urls", f"http://{self.client[nm]}",
                 "--listen-peer-urls", self.peer[nm], "--initial-advertise-peer-urls", self.peer[nm],
                 "--initial-cluster", initial, "--initial-cluster-token", token,
                 "--initial-cluster-state", "new"],
                stdout=log, stderr=subprocess.STDOUT,
            )
            log.close()

    def wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        pending = set(self.names)
        while pending:
            for nm in list(pending):
                if self.procs[nm].poll() is not None:
                    raise RuntimeError(f"etcd {nm} exited ({self.procs[nm].returncode}); see {self.dir}/{nm}.log")
                try:
                    with urllib.request.urlopen(f"http://{self.client[nm]}/health", timeout=1) as r:
                        if json.loads(r.read()).get("health") == "true":
                            pending.discard(nm)
                except (OSError, ValueError):
                    pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"etcd members {sorted(pending)} not healthy in {timeout:.0f}s")
            time.sleep(0.1)

    def stop(self) -> None:
        stop_pids(self.procs.values())

    def version(self) -> str:
        try:
            with urllib.request.urlopen(f"http://{self.client[self.names[0]]}/version", timeout=2) as r:
                return str(json.loads(r.read()).get("etcdserver", "?"))
        except (OSError, ValueError):
            return "?"


async def drive(endpoints: list[str], clients: int, value_size: int, duration_s: float,
                op: str, measured: Measured | None = None,
                profile_dir: Path | None = None) -> dict[str, Any]:
    """``clients`` closed-loop keep-alive clients doing ``op`` (put|get) for duration_s."""
    value = _b64(b"v" * value_size)
    keys = [[_b64(f"bench/{c:03d}/{k:02d}".encode()) for k in range(KEYS_PER_CLIENT)]
            for c in range(clients)]
    path = "/v3/kv/put" if op == "put" else "/v3/kv/range"
    sessions = [aiohttp.ClientSession(
        base_url=f"http://{endpoints[c % len(endpoints)]}",
        connector=aiohttp.TCPConnector(limit=1), timeout=aiohttp.ClientTimeout(total=10))
        for c in range(clients)]
    lat: list[float] = []
    errors = 0
    perf = time.perf_counter

    async def one(c: int, s: aiohttp.ClientSession, n: int) -> bool:
        body = ({"key": keys[c][n % KEYS_PER_CLIENT], "value": value} if op == "put"
                else {"key": keys[c][n % KEYS_PER_CLIENT]})
        try:
            async with s.post(path, json=body) as r:
                await r.read()
                return r.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    try:
        # Warm-up: open every connection (and, for puts, create every client's first key).
        await asyncio.gather(*(one(c, s, 0) for c, s in enumerate(sessions)))
        stop = perf() + duration_s
        cpu0 = time.process_time()
        spies = []
        if measured is not None:
            measured.start()
            if profile_dir is not None:
                spies = start_spies(profile_dir, measured.pids, duration_s)

        async def worker(c: int, s: aiohttp.ClientSession) -> None:
            nonlocal errors
            n = 0
            while perf() < stop:
                n += 1
                t0 = perf()
                if await one(c, s, n):
                    lat.append(perf() - t0)
                else:
                    errors += 1
                    await asyncio.sleep(0.01)

        t0 = perf()
        await asyncio.gather(*(worker(c, s) for c, s in enumerate(sessions)))
        elapsed = perf() - t0
        if measured is not None:
            measured.stop()
        wait_spies(spies)
        client_cpu = time.process_time() - cpu0
    finally:
        for s in sessions:
            await s.close()
    out: dict[str, Any] = {"op": op, "ops": len(lat), "errors": errors, "elapsed_s": round(elapsed, 3),
                           "ops_per_s": round(len(lat) / elapsed, 1), **latency_summary(lat),
                           "client_cpu_s": round(client_cpu, 3)}
    if measured is not None:
        out.update(measured.summary(len(lat)))
    return out


def _run_loop(coro: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)


def _phases(endpoints: list[str], pids: dict[str, int], clients: int, value_size: int,
            duration_s: float, profile_dir: Path | None = None) -> dict[str, Any]:
    put = _run_loop(drive(endpoints, clients, value_size, duration_s, "put", Measured(dict(pids)),
                          profile_dir / "put" if profile_dir else None))
    get = _run_loop(drive(endpoints, clients, value_size, duration_s, "get", Measured(dict(pids)),
                          profile_dir / "get" if profile_dir else None))
    return {"put": put, "get": get}


def run_fake_etcd(nodes: int, clients: int, value_size: int, duration_s: float,
                  to: str = "all", storage: str = "file",
                  profile_dir: Path | None = None) -> dict[str, Any]:
    try:
        import udpraft.kv.server  # noqa: F401
    except ImportError as e:
        raise Skip(f"udpraft.kv is not available yet ({e})") from e
    with tempfile.TemporaryDirectory(prefix="udpraft-kvbench-") as tmp:
        c = LocalCluster(Path(tmp), nodes, storage)
        try:
            c.start_all()
            c.wait_up(20)
            leader = c.wait_leader(20)
            code, body = _post(f"http://{c.http[leader]}/v3/kv/put",
                               {"key": _b64(b"bench/probe"), "value": _b64(b"x")}, timeout=5)
            if code != 200:
                raise Skip(f"fake-etcd: POST /v3/kv/put answered {code}: {body[:120]!r} "
                           "(KV layer not ready yet)")
            endpoints = [c.http[leader]] if to == "leader" else [c.http[n] for n in c.ids]
            pids = {n: c.procs[n].pid for n in c.ids}
            res = _phases(endpoints, pids, clients, value_size, duration_s, profile_dir)
        finally:
            c.stop_all()
    return {"target": "fake-etcd", "nodes": nodes, "storage": storage,
            "fsync": "on" if storage != "memory" else "off", "to": to, "leader": leader, **res}


def run_etcd(nodes: int, clients: int, value_size: int, duration_s: float,
             profile_dir: Path | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="etcd-bench-") as tmp:
        e = EtcdCluster(Path(tmp), nodes)
        try:
            e.start()
            e.wait_healthy()
            version = e.version()
            endpoints = [e.client[n] for n in e.names]
            pids = {n: p.pid for n, p in e.procs.items()}
            res = _phases(endpoints, pids, clients, value_size, duration_s, profile_dir)
        finally:
            e.stop()
    return {"target": "etcd", "version": version, "nodes": nodes, "fsync": "on (etcd default)",
            "to": "all", **res}


def run_target(target: str, nodes: int, clients: int, value_size: int, duration_s: float,
               to: str = "all", profile_dir: Path | None = None) -> dict[str, Any]:
    """One target's figures, or ``{"target": ..., "skipped": reason}``. Profiles (py-spy)
    are taken of fake-etcd's nodes only: etcd is not a Python process."""
    try:
        if target == "fake-etcd":
            return run_fake_etcd(nodes, clients, value_size, duration_s, to, profile_dir=profile_dir)
        if shutil.which(ETCD_BIN) is None and not Path(ETCD_BIN).exists():
            raise Skip(f"{ETCD_BIN} not found (apt-get install etcd-server)")
        return run_etcd(nodes, clients, value_size, duration_s)
    except Skip as s:
        print(f"# kv: skipping {target}: {s}", file=sys.stderr)
        return {"target": target, "skipped": str(s)}
    except (RuntimeError, TimeoutError, AssertionError) as ex:
        print(f"# kv: {target} failed: {ex}", file=sys.stderr)
        return {"target": target, "skipped": f"failed: {ex}"}


def ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b else 0.0


def table(results: list[dict[str, Any]]) -> str:
    rows = [f"{'target':<10} {'op':<4} {'ops/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'err':>5} "
            f"{'cpu s/1k ops/member':>22} {'peak RSS MB':>12} {'client cpu s':>12}"]
    for r in results:
        if "skipped" in r:
            rows.append(f"{r['target']:<10} skipped: {r['skipped']}")
            continue
        for op in ("put", "get"):
            x = r[op]
            cpu = "/".join(f"{v:.3f}" for v in x["cpu_s_per_1k_ops"].values())
            rss = "/".join(f"{v:.0f}" for v in x["peak_rss_mb"].values())
            rows.append(f"{r['target']:<10} {op:<4} {x['ops_per_s']:>9.0f} {x['p50_ms']:>8.2f} "
                        f"{x['p99_ms']:>8.2f} {x['errors']:>5} {cpu:>22} {rss:>12} {x['client_cpu_s']:>12.2f}")
    return "\n".join(rows)


def summary_line(results: list[dict[str, Any]], nodes: int, clients: int, value_size: int) -> str:
    ok = {r["target"]: r for r in results if "skipped" not in r}
    head = f"nodes={nodes} clients={clients} value={value_size}"
    if len(results) == 1:
        r = results[0]
        if "skipped" in r:
            return f"{r['target']} kv {head} skipped=true"
        p, g = r["put"], r["get"]
        return (f"{r['target']} kv {head} put_ops_per_s={p['ops_per_s']:.0f} put_p50_ms={p['p50_ms']:.2f} "
                f"put_p99_ms={p['p99_ms']:.2f} get_ops_per_s={g['ops_per_s']:.0f} "
                f"get_p50_ms={g['p50_ms']:.2f} get_p99_ms={g['p99_ms']:.2f}")
    parts = [f"kv target=both {head}"]
    for op in ("put", "get"):
        f, e = ok.get("fake-etcd"), ok.get("etcd")
        fv = f[op]["ops_per_s"] if f else 0.0
        ev = e[op]["ops_per_s"] if e else 0.0
        parts.append(f"fake_etcd_{op}_ops_per_s={fv:.0f} etcd_{op}_ops_per_s={ev:.0f} "
                     f"{op}_ratio={ratio(fv, ev) if f and e else 'na'}")
        for nm, x in (("fake_etcd", f), ("etcd", e)):
            if x:
                parts.append(f"{nm}_{op}_p50_ms={x[op]['p50_ms']:.2f} {nm}_{op}_p99_ms={x[op]['p99_ms']:.2f}")
    return " ".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.bench kv", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", choices=["fake-etcd", "etcd", "both"], default="both")
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--value-size", type=int, default=10)
    ap.add_argument("--duration-s", type=float, default=5.0, help="per phase (puts, then gets)")
    ap.add_argument("--to", choices=["all", "leader"], default="all",
                    help="fake-etcd: spread clients over all nodes, or send all to the leader")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--profile", help="record py-spy profiles of fake-etcd's nodes into this dir")
    a = ap.parse_args(argv)
    targets = ["fake-etcd", "etcd"] if a.target == "both" else [a.target]
    results: list[dict[str, Any]] = []
    with sigterm_as_interrupt():
        for t in targets:
            results.append(run_target(t, a.nodes, a.clients, a.value_size, a.duration_s, a.to,
                                      Path(a.profile) if a.profile else None))
    print(table(results))
    ok = {r["target"]: r for r in results if "skipped" not in r}
    if "fake-etcd" in ok and "etcd" in ok:
        for op in ("put", "get"):
            print(f"# ratio fake-etcd/etcd {op}s/s: "
                  f"{ratio(ok['fake-etcd'][op]['ops_per_s'], ok['etcd'][op]['ops_per_s'])}")
    if a.json:
        Path(a.json).write_text(json.dumps({"kv": results}, indent=1))
    print(summary_line(results, a.nodes, a.clients, a.value_size))
    return 0
