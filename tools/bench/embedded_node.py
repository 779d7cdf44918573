"""udpraft embedded, as a measured worker process: the udpraft side of ``compare``.

How this works:

- ``run(nodes, payload, window, duration_s, storage)`` starts nodes n2..nN as ordinary
  ``udpraft.node`` processes (``tools.localcluster``; ``--storage file`` is the segmented
  WAL with group-commit fdatasync, ``memory`` keeps the log in RAM and never syncs) and n1
  as ``python -m tools.bench.embedded_node``: a fresh process hosting n1 through
  ``udpraft.embed.EmbeddedNode`` (same storage), exactly like ``tools.bench embedded``.
- The worker waits for a leader, asks for leadership (``transfer_leadership_here``),
  commits one warm-up entry, writes ``ready`` and waits for ``go`` (the controller samples
  every node's CPU in between). Then ``--window`` proposals are kept in flight for
  ``--duration-s`` (one completes once the entry is committed *and applied* on n1), with
  ``--api callback`` (default: ``node.submit_cb``, each callback issues the next proposal,
  as PySyncObj's ``callback=`` does) or ``--api coroutine`` (``--window`` coroutines
  awaiting ``node.submit``); the in-flight ones finish, and it writes ``result.json`` and
  idles until SIGTERM. Errors (timeouts, lost leadership) are counted, not fatal. The
  worker tunes its GC (``EmbeddedNode.start(tune_gc=True)``) unless ``--no-tune-gc``.
- All node processes are stopped by PID at the end, even on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tools.bench.procs import latency_summary, log_tail, run_handshake, write_json_atomic
from tools.localcluster import ROOT, LocalCluster


def _diag(rt: Any) -> dict[str, Any]:
    """What the leader's runtime saw: fsyncs and their recent latency, proposal batch sizes."""
    st = rt.status()
    c = st.get("counters", {})
    return {
        "term": st.get("term"), "commit_index": st.get("commit_index"),
        "ticks": c.get("ticks"), "fsyncs": rt.fsync_s.count,
        "fsync_p50_ms": round(1000 * rt.fsync_s.quantile(0.5), 3),
        "fsync_p99_ms": round(1000 * rt.fsync_s.quantile(0.99), 3),
        "batches": rt.batch_sizes.count, "batch_p50": rt.batch_sizes.quantile(0.5),
        "datagrams_out": c.get("datagrams_out"), "datagrams_in": c.get("datagrams_in"),
    }


async def _worker(a: argparse.Namespace) -> int:
    from udpraft.core.errors import RaftError
    from udpraft.embed import EmbeddedNode
    from udpraft.errors import UdpRaftError

    ctl = Path(a.ctl)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    parent = os.getppid()
    node = await EmbeddedNode.start("n1", a.cluster, a.data_dir, a.storage, tune_gc=a.tune_gc)
    try:
        await node.wait_leader(30)
        await node.transfer_leadership_here(30)
        await node.submit(b"warm-up", timeout=10)
        write_json_atomic(ctl / "ready", {"node": "n1", "pid": os.getpid()})
        while not (ctl / "go").exists():
            if stop.is_set() or os.getppid() != parent:
                return 1
            await asyncio.sleep(0.002)
        data = b"x" * a.payload
        lat: list[float] = []
        errors: Counter[str] = Counter()
        perf = time.perf_counter
        t_stop = perf() + a.duration_s

        async def one() -> None:
            while perf() < t_stop:
                t0 = perf()
                try:
                    await node.submit(data, timeout=10)
                except (UdpRaftError, RaftError, TimeoutError) as e:
                    # RaftError (NotLeader, ProposalDropped, ProposalLost) is not a
                    # UdpRaftError: EmbeddedNode.submit lets the core's errors through.
                    errors[type(e).__name__] += 1
                    await asyncio.sleep(0.01)
                    continue
                lat.append(perf() - t0)

        async def with_callbacks() -> None:
            # node.submit_cb: no coroutine or future per proposal, as PySyncObj's callback=.
            finished = loop.create_future()
            running = a.window

            def launch() -> None:
                nonlocal running
                if perf() >= t_stop:
                    running -= 1
                    if running == 0 and not finished.done():
                        finished.set_result(None)
                    return
                t0 = perf()

                def done(res: object, err: BaseException | None) -> None:
                    if err is None:
                        lat.append(perf() - t0)
                        launch()
                    else:
                        errors[type(err).__name__] += 1
                        loop.call_later(0.01, launch)

                try:
                    node.submit_cb(data, done, timeout=10)
                except UdpRaftError as e:
                    errors[type(e).__name__] += 1
                    loop.call_later(0.01, launch)

            for _ in range(a.window):
                launch()
            await finished

        t0 = perf()
        if a.api == "callback":
            await with_callbacks()
        else:
            await asyncio.gather(*(one() for _ in range(a.window)))
        elapsed = perf() - t0
        res: dict[str, Any] = {
            "node": "n1", "ops": len(lat), "errors": sum(errors.values()),
            "error_kinds": dict(errors), "elapsed_s": round(elapsed, 3),
            "ops_per_s": round(len(lat) / elapsed, 1), **latency_summary(lat),
            "leader_diag": _diag(node.rt),
        }
        write_json_atomic(ctl / "result.json", res)
        while not stop.is_set() and os.getppid() == parent:
            try:
                await asyncio.wait_for(stop.wait(), 0.2)
            except TimeoutError:
                pass
        return 0
    finally:
        await node.stop()


def worker_main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.bench.embedded_node")
    ap.add_argument("--cluster", required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--storage", default="file")
    ap.add_argument("--ctl", required=True)
    ap.add_argument("--payload", type=int, default=10)
    ap.add_argument("--window", type=int, default=1000)
    ap.add_argument("--duration-s", type=float, default=5.0)
    ap.add_argument("--api", choices=["coroutine", "callback"], default="coroutine")
    ap.add_argument("--no-tune-gc", dest="tune_gc", action="store_false",
                    help="leave the embedding process's GC thresholds alone")
    a = ap.parse_args(argv)
    import uvloop

    return int(uvloop.run(_worker(a)))


def run(nodes: int, payload: int, window: int, duration_s: float, storage: str = "file",
        startup_s: float = 40.0, profile_dir: Path | None = None,
        api: str = "callback", tune_gc: bool = True) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="udpraft-cmp-") as tmp:
        base = Path(tmp)
        ctl = base / "ctl"
        ctl.mkdir()
        c = LocalCluster(base, nodes, storage)
        try:
            for nid in c.ids[1:]:
                c.start(nid)
            log = open(base / "n1.log", "ab")
            c.procs["n1"] = subprocess.Popen(
                [sys.executable, "-m", "tools.bench.embedded_node", "--cluster", str(c.cluster_file),
                 "--data-dir", str(base / "n1"), "--storage", storage, "--ctl", str(ctl),
                 "--payload", str(payload), "--window", str(window), "--duration-s", str(duration_s),
                 "--api", api, *([] if tune_gc else ["--no-tune-gc"])],
                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
            )
            log.close()
            procs = {nid: c.procs[nid] for nid in c.ids}
            try:
                res, m = run_handshake(ctl, procs, duration_s, startup_s, profile_dir=profile_dir)
            except (RuntimeError, TimeoutError) as e:
                tails = {nid: log_tail(base / f"{nid}.log") for nid in c.ids}
                raise RuntimeError(f"{e}; log tails: {json.dumps(tails)}") from e
        finally:
            c.stop_all()
    fsync = "off (memory log)" if storage == "memory" else "on (file WAL, group-commit fdatasync)"
    return {"system": "udpraft", "nodes": nodes, "payload": payload, "window": window,
            "duration_s": duration_s, "storage": storage, "fsync": fsync, "leader": "n1",
            "api": api, "tune_gc": tune_gc,
            **res, **m.summary(int(res["ops"]))}


if __name__ == "__main__":
    sys.exit(worker_main())
