"""``python -m tools.bench submit --nodes 3 --payload 10 --clients 64 --duration-s 10``

Starts a fresh cluster of real node processes (file log, fsync on by default), then runs
``--clients`` client sessions in one uvloop process, each with one submit in flight (a
closed loop, like ``--clients`` blocking users), for ``--duration-s``. Every submit returns
only once committed. Prints the figures and, last, the INTERFACE.md line:
``udpraft submit nodes=3 payload=10 clients=64 ops_per_s=N p50_ms=X p99_ms=Y``.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from tools.bench.stats import percentile_ms
from tools.localcluster import LocalCluster
from udpraft.client.aio import AsyncClient
from udpraft.errors import UdpRaftError


async def drive(
    cluster_file: str, clients: int, payload: int, duration_s: float, inflight: int = 1
) -> tuple[int, list[float], int]:
    data = b"x" * payload
    lat: list[float] = []
    errors = 0
    cls = [AsyncClient.from_cluster_file(cluster_file) for _ in range(clients)]
    for c in cls:  # open every session before the clock starts
        await c.submit(data, timeout=10)
    stop = time.perf_counter() + duration_s

    async def worker(c: AsyncClient) -> None:
        nonlocal errors
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            try:
                await c.submit(data, timeout=5)
            except UdpRaftError:
                errors += 1
                continue
            lat.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in cls for _ in range(inflight)))
    elapsed = time.perf_counter() - t0
    for c in cls:
        await c.close()
    return int(len(lat) / elapsed), lat, errors


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.bench submit", description=__doc__)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--payload", type=int, default=10)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--duration-s", type=float, default=10.0)
    ap.add_argument("--storage", default="file", choices=["file", "sqlite", "memory"])
    ap.add_argument("--inflight", type=int, default=1, help="submits in flight per client")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="udpraft-bench-") as tmp:
        c = LocalCluster(Path(tmp), a.nodes, a.storage)
        try:
            c.start_all()
            c.wait_up()
            c.wait_leader()
            try:
                import uvloop

                ops, lat, errors = uvloop.run(drive(str(c.cluster_file), a.clients, a.payload, a.duration_s, a.inflight))
            except ImportError:  # pragma: no cover
                ops, lat, errors = asyncio.run(drive(str(c.cluster_file), a.clients, a.payload, a.duration_s, a.inflight))
        finally:
            c.stop_all()
    fsync = "off" if a.storage == "memory" else "on"
    print(f"# storage={a.storage} fsync={fsync} inflight={a.inflight} errors={errors} samples={len(lat)}")
    print(
        f"udpraft submit nodes={a.nodes} payload={a.payload} clients={a.clients} "
        f"ops_per_s={ops} p50_ms={percentile_ms(lat, 0.5):.2f} p99_ms={percentile_ms(lat, 0.99):.2f}"
    )
    return 0
