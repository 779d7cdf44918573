"""``python -m tools.bench embedded --nodes 3 --payload 10 --window 1000 --duration-s 10``

The library use case: this process hosts node n1 (an ``EmbeddedNode``) and makes it the
leader; the other nodes are separate processes. Proposals are made inside the leader's
process with ``--window`` in flight; each completes when committed and applied. Prints the
figures and, last, one key=value line.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from tools.bench.stats import percentile_ms
from tools.localcluster import LocalCluster
from udpraft.embed import EmbeddedNode


async def drive(cluster_file: str, data_dir: str, storage: str, payload: int, window: int,
                duration_s: float) -> tuple[float, list[float]]:
    node = await EmbeddedNode.start("n1", cluster_file, data_dir, storage)
    try:
        await node.wait_leader(15)
        await node.transfer_leadership_here(15)
        data = b"x" * payload
        lat: list[float] = []
        stop = time.perf_counter() + duration_s

        async def one() -> None:
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                await node.submit(data, timeout=10)
                lat.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(window)))
        return len(lat) / (time.perf_counter() - t0), lat
    finally:
        await node.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.bench embedded", description=__doc__)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--payload", type=int, default=10)
    ap.add_argument("--window", type=int, default=1000)
    ap.add_argument("--duration-s", type=float, default=10.0)
    ap.add_argument("--storage", default="file", choices=["file", "sqlite", "memory"])
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="udpraft-bench-") as tmp:
        c = LocalCluster(Path(tmp), a.nodes, a.storage)
        try:
            for nid in c.ids[1:]:
                c.start(nid)
            import uvloop

            ops, lat = uvloop.run(drive(str(c.cluster_file), str(Path(tmp) / "n1"), a.storage,
                                        a.payload, a.window, a.duration_s))
        finally:
            c.stop_all()
    fsync = "off" if a.storage == "memory" else "on"
    print(f"# storage={a.storage} fsync={fsync} samples={len(lat)}")
    print(f"udpraft embedded nodes={a.nodes} payload={a.payload} window={a.window} "
          f"storage={a.storage} ops_per_s={ops:.0f} p50_ms={percentile_ms(lat, 0.5):.2f} "
          f"p99_ms={percentile_ms(lat, 0.99):.2f}")
    return 0
