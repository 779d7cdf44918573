"""``python -m tools.bench submit --nodes 3 --payload 10 --clients 64 --duration-s 10``

Starts a fresh cluster of real node processes (file log, fsync on by default), then runs
``--clients`` closed-loop clients in one uvloop process, each with one submit in flight
(like ``--clients`` blocking users), for ``--duration-s``. Every submit returns only once
committed. Prints the figures and, last, the INTERFACE.md line:
``udpraft submit nodes=3 payload=10 clients=64 ops_per_s=N p50_ms=X p99_ms=Y``.

Configurations (the ``#`` lines name the one measured):

- default (``--conns`` = ``--clients``): every client is its own ``AsyncClient`` session
  and socket, so every submit is its own request datagram and its own answer.
- ``--conns K`` (like etcd's benchmark ``--conns``): the clients share K sessions, client
  ``i`` using session ``i % K``; an ``AsyncClient`` packs the submits its clients issue
  in one event-loop turn into one request, so fewer, larger datagrams carry the load.
- ``--sockets S``: the sessions (still one per client, or ``--conns``) share S sockets
  (``udpraft.client.aio.ClientMux``, session ``j`` on socket ``j % S``): the requests of
  all sessions on a socket in one loop turn travel in one CLIENT_BATCH datagram and the
  leader answers them in one CLIENT_BATCH_RESP. Every session keeps its own client id,
  sequence numbers and retries (exactly-once per session); only datagrams are shared.
- ``--inflight N``: N submits in flight per client instead of one.
- ``--no-tune-gc``: by default this process first takes the node processes' GC settings
  (``udpraft.io.gctune.tune_gc``: gc.freeze, young threshold 50,000), as a program
  embedding a node may. With CPython's defaults the load generator's own full collections
  (6-19 ms each, ~1 a second, growing with the latency list) held up whole rounds of
  submits: 64 clients x 8 in flight, p99 ~25 ms instead of ~20 ms.

``--profile DIR`` records py-spy profiles of every node and of this process for the load
window (``python -m tools.bench.profiles DIR/*.txt`` summarises them). The ``# cpu`` line
gives CPU seconds per 1,000 operations of each node (the leader marked) and of this
process (the load generator), with the 1-minute load average at the start and the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from tools.bench.stats import percentile_ms
from tools.localcluster import LocalCluster
from udpraft.client.aio import AsyncClient
from udpraft.errors import UdpRaftError


async def drive(
    cluster_file: str,
    clients: int,
    payload: int,
    duration_s: float,
    inflight: int = 1,
    conns: int = 0,
    sockets: int = 0,
    tune_gc: bool = True,
) -> tuple[int, list[float], int]:
    """Run the closed loop; (ops/s, latencies in s, errors). ``conns`` 0 = a session per
    client; ``sockets`` 0 = a socket per session. ``tune_gc``: this process gets the node
    processes' GC settings first (``udpraft.io.gctune.tune_gc``)."""
    if tune_gc:
        from udpraft.io.gctune import tune_gc as tune

        tune()
    data = b"x" * payload
    lat: list[float] = []
    errors = 0
    n_sessions = clients if conns <= 0 else min(conns, clients)
    from udpraft.client import aio  # ClientMux: looked up only when asked for

    muxes = [aio.ClientMux.from_cluster_file(cluster_file) for _ in range(min(sockets, n_sessions))]
    if muxes:
        cls = [muxes[j % len(muxes)].client() for j in range(n_sessions)]
    else:
        cls = [AsyncClient.from_cluster_file(cluster_file) for _ in range(n_sessions)]
    for c in cls:  # open every session before the clock starts
        await c.submit(data, timeout=10)
    stop = time.perf_counter() + duration_s

    async def worker(c: AsyncClient) -> None:
        nonlocal errors
        append = lat.append
        perf = time.perf_counter
        while perf() < stop:
            t0 = perf()
            try:
                await c.submit(data, timeout=5)
            except UdpRaftError:
                errors += 1
                continue
            append(perf() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(
        *(worker(cls[i % n_sessions]) for i in range(clients) for _ in range(inflight))
    )
    elapsed = time.perf_counter() - t0
    for c in cls:
        await c.close()
    for mx in muxes:
        await mx.close()
    return int(len(lat) / elapsed), lat, errors


def _run(cluster_file: str, a: argparse.Namespace) -> tuple[int, list[float], int]:
    coro = drive(cluster_file, a.clients, a.payload, a.duration_s, a.inflight, a.conns, a.sockets,
                 a.tune_gc)
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)
    return uvloop.run(coro)


def main(argv: list[str] | None = None) -> int:
    from tools.bench.procs import Measured
    from tools.bench.profiles import start_spies, wait_spies

    ap = argparse.ArgumentParser(prog="python -m tools.bench submit", description=__doc__)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--payload", type=int, default=10)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--conns", type=int, default=0,
                    help="client sessions (sockets) the clients share; default: one per client")
    ap.add_argument("--sockets", type=int, default=0,
                    help="sockets the sessions share, requests coalesced (ClientMux); "
                         "default: one per session")
    ap.add_argument("--duration-s", type=float, default=10.0)
    ap.add_argument("--storage", default="file", choices=["file", "sqlite", "memory"])
    ap.add_argument("--inflight", type=int, default=1, help="submits in flight per client")
    ap.add_argument("--profile", type=Path, help="py-spy profiles of the nodes and this process")
    ap.add_argument("--no-tune-gc", dest="tune_gc", action="store_false",
                    help="leave this process's GC at CPython's defaults")
    a = ap.parse_args(argv)
    conns = a.clients if a.conns <= 0 else min(a.conns, a.clients)
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="udpraft-bench-") as tmp:
        c = LocalCluster(Path(tmp), a.nodes, a.storage)
        try:
            c.start_all()
            c.wait_up()
            leader = c.wait_leader()
            pids = {n: c.procs[n].pid for n in c.ids}
            m = Measured({**pids, "bench": os.getpid()})
            m.start()
            spies = start_spies(a.profile, {**pids, "bench": os.getpid()}, a.duration_s) if a.profile else []
            ops, lat, errors = _run(str(c.cluster_file), a)
            m.stop()
            wait_spies(spies)
        finally:
            c.stop_all()
    load1 = os.getloadavg()[0]
    per_k = m.summary(len(lat))["cpu_s_per_1k_ops"]
    cpu = " ".join(f"{n}{'*' if n == leader else ''}={v:.4f}" for n, v in per_k.items())
    fsync = "off" if a.storage == "memory" else "on"
    socks = min(a.sockets, conns) if a.sockets > 0 else conns
    print(f"# storage={a.storage} fsync={fsync} conns={conns} sockets={socks} inflight={a.inflight} "
          f"tune_gc={a.tune_gc} "
          f"errors={errors} samples={len(lat)}")
    print(f"# cpu_s_per_1k_ops {cpu} (* = leader) loadavg_1m={load0:.2f}->{load1:.2f}")
    print(
        f"udpraft submit nodes={a.nodes} payload={a.payload} clients={a.clients} "
        f"ops_per_s={ops} p50_ms={percentile_ms(lat, 0.5):.2f} p99_ms={percentile_ms(lat, 0.99):.2f}"
    )
    return 0
