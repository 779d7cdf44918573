"""``python -m tools.bench memory --entries 1000000 --nodes 3 --payload 10``

Issue 7's memory target: a cluster holding N committed entries stays under 250 MB RSS per
node. How this works: a fresh cluster of real ``udpraft.node`` processes (file log, fsync on,
no snapshots: every entry stays in the log, on disk and in memory), filled through
``--clients`` ``AsyncClient`` sessions in this process with ``--inflight`` submits in flight
each (batched into few datagrams) until N submits committed; then it waits until every node
has applied them all, lets the nodes settle for ``--settle-s`` and reads every node's RSS
(``VmRSS``) and peak RSS (``VmHWM``, the kernel's high-water mark over the process's life)
from ``/proc``. With ``--restart`` it then restarts one follower (``n3`` when it is not the
leader), so the figure includes recovery: reading the whole log back from disk (straight
into compact columns, see storage/file.py), and reports how long until it answered a status
request (``restart_up_s``) and until it had applied everything again. Every
process is stopped by PID at the end. The last line (INTERFACE.md):
``udpraft memory nodes=3 entries=N payload=10 max_rss_mb=X max_peak_rss_mb=Y ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from tools.bench.procs import peak_rss_mb
from tools.localcluster import LocalCluster
from udpraft.client.aio import AsyncClient
from udpraft.errors import UdpRaftError


def rss_mb(pid: int) -> float:
    """The process's current resident set size (VmRSS) in MiB; 0.0 if it cannot be read."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


async def fill(cluster_file: str, entries: int, payload: int, clients: int, inflight: int,
               progress: bool = True) -> tuple[int, int, float]:
    """Submit until ``entries`` submits committed; returns (committed, errors, seconds)."""
    data = b"x" * payload
    cls = [AsyncClient.from_cluster_file(cluster_file) for _ in range(clients)]
    for c in cls:  # open every session first (its first request travels alone)
        await c.submit(data, timeout=10)
    done = clients
    issued = clients
    errors = 0
    t0 = time.perf_counter()
    last = t0

    async def worker(c: AsyncClient) -> None:
        nonlocal done, issued, errors, last
        while issued < entries:
            issued += 1
            try:
                await c.submit(data, timeout=10)
            except UdpRaftError:
                errors += 1
                issued -= 1  # not known to be committed: submit another in its place
                continue
            done += 1
            now = time.perf_counter()
            if progress and now - last >= 5.0:
                last = now
                print(f"# filled {done}/{entries} ({done / (now - t0):.0f}/s)", flush=True)

    await asyncio.gather(*(worker(c) for c in cls for _ in range(inflight)))
    elapsed = time.perf_counter() - t0
    for c in cls:
        await c.close()
    return done, errors, elapsed


def wait_applied(c: LocalCluster, index: int, timeout_s: float) -> dict[str, dict[str, Any]]:
    deadline = time.time() + timeout_s
    sts: dict[str, dict[str, Any]] = {}
    while time.time() < deadline:
        sts = {n: st for n in c.ids if (st := c.status(n, timeout=5.0)) is not None}
        if len(sts) == len(c.ids) and all(st["applied_index"] >= index for st in sts.values()):
            return sts
        time.sleep(0.2)
    applied = {n: st.get("applied_index") for n, st in sts.items()}
    raise TimeoutError(f"not every node applied {index} within {timeout_s}s: {applied}")


def measure(c: LocalCluster) -> dict[str, dict[str, float]]:
    out = {}
    for nid in c.ids:
        pid = c.procs[nid].pid
        out[nid] = {"rss_mb": round(rss_mb(pid), 1), "peak_rss_mb": round(peak_rss_mb(pid), 1)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.bench memory", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--payload", type=int, default=10)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--inflight", type=int, default=256, help="submits in flight per client")
    ap.add_argument("--storage", default="file", choices=["file", "sqlite", "memory"])
    ap.add_argument("--settle-s", type=float, default=2.0)
    ap.add_argument("--restart", action="store_true",
                    help="then restart a follower and measure it after recovery")
    a = ap.parse_args(argv)
    import uvloop

    with tempfile.TemporaryDirectory(prefix="udpraft-mem-") as tmp:
        c = LocalCluster(Path(tmp), a.nodes, a.storage)
        try:
            c.start_all()
            c.wait_up()
            leader = c.wait_leader()
            before = measure(c)
            done, errors, elapsed = uvloop.run(
                fill(str(c.cluster_file), a.entries, a.payload, a.clients, a.inflight))
            st = c.status(leader, timeout=5.0) or {}
            target = int(st.get("commit_index", 0))
            sts = wait_applied(c, target, 120.0)
            time.sleep(a.settle_s)
            after = measure(c)
            restarted: dict[str, Any] = {}
            if a.restart:
                nid = next(n for n in reversed(c.ids) if n != leader)
                c.kill(nid)
                t0 = time.perf_counter()
                c.start(nid)
                c.wait_up(60)
                up = time.perf_counter() - t0
                wait_applied(c, target, 120.0)
                restarted = {"node": nid, "up_s": round(up, 2),
                             "catch_up_s": round(time.perf_counter() - t0, 2),
                             **measure(c)[nid]}
        finally:
            c.stop_all()
    fsync = "off" if a.storage == "memory" else "on"
    print(f"# storage={a.storage} fsync={fsync} clients={a.clients} inflight={a.inflight} "
          f"committed={done} errors={errors} fill_s={elapsed:.1f} "
          f"fill_ops_per_s={done / elapsed:.0f} leader={leader}")
    for nid in c.ids:
        print(f"# {nid}: start rss {before[nid]['rss_mb']} MB; holding "
              f"{sts[nid]['applied_index']} applied entries (log {sts[nid].get('last_log_index')}): "
              f"rss {after[nid]['rss_mb']} MB, peak {after[nid]['peak_rss_mb']} MB")
    extra = ""
    if restarted:
        print(f"# restarted {restarted['node']}: answering status after {restarted['up_s']} s"
              f" (log recovered), caught up (applied everything again) in"
              f" {restarted['catch_up_s']} s, rss {restarted['rss_mb']} MB,"
              f" peak {restarted['peak_rss_mb']} MB")
        extra = (f" restart_rss_mb={restarted['rss_mb']}"
                 f" restart_peak_rss_mb={restarted['peak_rss_mb']}"
                 f" restart_up_s={restarted['up_s']} restart_catch_up_s={restarted['catch_up_s']}")
    max_rss = max(m["rss_mb"] for m in after.values())
    max_peak = max(m["peak_rss_mb"] for m in after.values())
    print(f"udpraft memory nodes={a.nodes} entries={done} payload={a.payload} "
          f"storage={a.storage} max_rss_mb={max_rss} max_peak_rss_mb={max_peak}"
          f"{extra} target_mb=250 met={'yes' if max(max_peak, max_rss) < 250 else 'no'}")
    return 0
