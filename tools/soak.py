"""``python -m tools.soak --minutes 10 --snapshot-entries 20000``: a bounded-resources soak.

How this works: a fresh 3-node cluster (file log, fsync on, snapshots every N entries) takes
continuous submits from ``--clients`` pipelined sessions. Every ``--every-s`` seconds it
prints each node's RSS, the size of its data dir (log segments + snapshots) and its log
span in memory (last index - first index). At the end it wipes one follower's data dir,
restarts it, and reports how long it took to catch up (by snapshot). A report, not a test:
the figures go to the README; the exit status is non-zero only if the cluster stalled.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

import psutil  # type: ignore[import-untyped]

from tools.localcluster import LocalCluster
from udpraft.client.aio import AsyncClient
from udpraft.errors import UdpRaftError


def dir_bytes(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.exists() else 0


def sample(c: LocalCluster) -> list[str]:
    rows = []
    for nid in c.ids:
        st = c.status(nid) or {}
        proc = c.procs.get(nid)
        rss = psutil.Process(proc.pid).memory_info().rss if proc and proc.poll() is None else 0
        span = int(st.get("last_log_index", 0)) - int(st.get("first_log_index", 1)) + 1
        rows.append(
            f"{nid} applied={st.get('applied_index', 0)} rss_mb={rss / 2**20:.0f} "
            f"disk_mb={dir_bytes(c.dir / nid) / 2**20:.1f} log_span={span}"
        )
    return rows


async def load(cluster_file: str, clients: int, inflight: int, stop: asyncio.Event) -> int:
    done = 0
    cls = [AsyncClient.from_cluster_file(cluster_file) for _ in range(clients)]

    async def worker(cl: AsyncClient) -> None:
        nonlocal done
        while not stop.is_set():
            try:
                await cl.submit(b"soak-0123456789", timeout=5)
                done += 1
            except UdpRaftError:
                await asyncio.sleep(0.05)

    tasks = [asyncio.create_task(worker(cl)) for cl in cls for _ in range(inflight)]
    await stop.wait()
    await asyncio.gather(*tasks, return_exceptions=True)
    for cl in cls:
        await cl.close()
    return done


async def run(a: argparse.Namespace, c: LocalCluster) -> int:
    stop = asyncio.Event()
    t0 = time.time()
    job = asyncio.create_task(load(str(c.cluster_file), a.clients, a.inflight, stop))
    end = t0 + a.minutes * 60
    while time.time() < end:
        await asyncio.sleep(a.every_s)
        print(f"t={time.time() - t0:6.0f}s", flush=True)
        for row in await asyncio.to_thread(sample, c):
            print("   ", row, flush=True)
    stop.set()
    total = await job
    print(f"soak submits={total} ops_per_s={total / (time.time() - t0):.0f}", flush=True)
    return total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.soak", description=__doc__)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--snapshot-entries", type=int, default=20_000)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--inflight", type=int, default=8)
    ap.add_argument("--every-s", type=float, default=30.0)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="udpraft-soak-") as tmp:
        c = LocalCluster(Path(tmp), 3, "file",
                         extra_args=["--snapshot-entries", str(a.snapshot_entries)])
        try:
            c.start_all()
            c.wait_up()
            ld = c.wait_leader()
            total = asyncio.run(run(a, c))
            victim = next(n for n in c.ids if n != ld)
            c.kill(victim)
            shutil.rmtree(c.dir / victim)
            target = (c.status(ld) or {}).get("commit_index", 0)
            t0 = time.time()
            c.start(victim)
            while (c.status(victim) or {}).get("applied_index", 0) < target:
                if time.time() - t0 > 60:
                    print(f"soak: wiped {victim} did not catch up in 60 s: "
                          f"{c.status(victim)} leader: {c.status(ld)}")
                    print((c.dir / f"{victim}.log").read_text()[-3000:])
                    return 1
                time.sleep(0.05)
            st = c.status(victim) or {}
            print(f"soak wiped_node={victim} caught_up_s={time.time() - t0:.2f} "
                  f"snapshot={st.get('snapshot')} first_log_index={st.get('first_log_index')}")
            for row in sample(c):
                print("   ", row)
            return 0 if total > 0 else 1
        finally:
            c.stop_all()


if __name__ == "__main__":
    sys.exit(main())
