"""PySyncObj 0.3.x, the Python peer: one node process, and the driver that runs N of them.

How this works:

- ``python -m tools.bench.pysyncobj_node --self 127.0.0.1:P --partner ... --ctl DIR ...``
  runs one PySyncObj node (TCP on 127.0.0.1). Its replicated object is ``AppendCounter``:
  ``append(data)`` is a ``@replicated`` method that counts the entry and its bytes (the
  same "replicated append of a payload" udpraft's embedded mode does; the payload itself
  travels through PySyncObj's log, is pickled into every AppendEntries and applied on
  every node, but the state kept is a counter, so log compaction — every 5,000 entries,
  PySyncObj's default — stays cheap: PySyncObj's best case).
- Configuration: ``SyncObjConf()`` with every default (``DEFAULT_CONFIG`` below lists the
  ones that matter): autoTick thread, ``appendEntriesUseBatch=True``,
  ``appendEntriesBatchSizeBytes=65536``, ``journalFile=None`` (the log is in memory), no
  ``fullDumpFile``: **PySyncObj does not write or fsync anything** in this configuration.
- The node that becomes leader (and is connected to every partner, with one warm-up entry
  committed) writes ``ready`` in the control dir and waits for ``go``; then it keeps
  ``--window`` appends in flight with the callback API (``append(data, callback=cb)``; the
  callback, run on PySyncObj's tick thread, records the latency and issues the next one)
  for ``--duration-s``, lets the in-flight ones finish, and writes ``result.json``.
  Followers (and the leader, after its result) idle until SIGTERM, then ``destroy()``.
- ``run(nodes, payload, window, duration_s)`` starts the processes on free ports, does the
  ready/go/result handshake (``tools.bench.procs``), measures CPU and peak RSS per node,
  and stops every process by PID.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from tools.bench.procs import (
    free_tcp_ports,
    latency_summary,
    log_tail,
    run_handshake,
    stop_pids,
    wait_go,
    write_json_atomic,
)

ROOT = Path(__file__).resolve().parents[2]

try:
    from pysyncobj import (  # type: ignore[import-untyped, import-not-found, unused-ignore]
        SyncObj,
        SyncObjConf,
        replicated,
    )

    HAVE_PYSYNCOBJ = True
except ImportError:  # pragma: no cover - the bench extra is not installed
    HAVE_PYSYNCOBJ = False

# The defaults of SyncObjConf that shape performance, reported with every result.
DEFAULT_CONFIG_KEYS = (
    "autoTick", "autoTickPeriod", "appendEntriesUseBatch", "appendEntriesBatchSizeBytes",
    "appendEntriesPeriod", "commandsQueueSize", "journalFile", "fullDumpFile",
    "logCompactionMinEntries", "logCompactionMinTime", "raftMinTimeout", "raftMaxTimeout",
    "sendBufferSize", "recvBufferSize", "pollerType", "password",
)

if HAVE_PYSYNCOBJ:

    class AppendCounter(SyncObj):  # type: ignore[misc, unused-ignore]
        def __init__(self, self_addr: str, partners: list[str], conf: Any) -> None:
            super().__init__(self_addr, partners, conf)
            self.count = 0
            self.nbytes = 0

        @replicated  # type: ignore[untyped-decorator, misc, unused-ignore]
        def append(self, data: bytes) -> int:
            self.count += 1
            self.nbytes += len(data)
            return self.count


def config_dict() -> dict[str, Any]:
    """The configuration the harness uses: SyncObjConf() defaults, nothing changed."""
    conf = SyncObjConf()
    return {k: getattr(conf, k) for k in DEFAULT_CONFIG_KEYS}


def _leader_ready(obj: Any, n_partners: int) -> bool:
    if not obj._isLeader() or not obj.isReady():
        return False
    st = obj.getStatus()
    connected = sum(1 for k, v in st.items() if k.startswith("partner_node_status_server_") and v == 2)
    return connected == n_partners


def _drive(obj: Any, payload: int, window: int, duration_s: float) -> dict[str, Any]:
    data = b"x" * payload
    lat: list[float] = []
    errors: list[int] = []
    lock = threading.Lock()
    state = {"inflight": 0, "stop_at": 0.0, "last": 0.0}
    done = threading.Event()
    perf = time.perf_counter

    def issue() -> None:
        t0 = perf()

        def cb(_res: Any, err: int) -> None:
            now = perf()
            if err == 0:
                lat.append(now - t0)
            else:
                errors.append(err)
            state["last"] = now
            if now < state["stop_at"]:
                issue()  # keep the window full: one completes, the next goes in
                return
            with lock:
                state["inflight"] -= 1
                if state["inflight"] == 0:
                    done.set()

        obj.append(data, callback=cb)

    t0 = perf()
    state["stop_at"] = t0 + duration_s
    state["inflight"] = window
    for _ in range(window):
        issue()
    done.wait(duration_s + 60.0)
    elapsed = max(state["last"], t0 + 1e-9) - t0
    ops = len(lat)
    return {"ops": ops, "errors": len(errors), "elapsed_s": round(elapsed, 3),
            "ops_per_s": round(ops / elapsed, 1), "drained": done.is_set(),
            **latency_summary(lat)}


def node_main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.bench.pysyncobj_node")
    ap.add_argument("--self", dest="self_addr", required=True)
    ap.add_argument("--partner", action="append", default=[])
    ap.add_argument("--ctl", required=True, help="control dir for the ready/go/result files")
    ap.add_argument("--payload", type=int, default=10)
    ap.add_argument("--window", type=int, default=1000)
    ap.add_argument("--duration-s", type=float, default=5.0)
    a = ap.parse_args(argv)
    ctl = Path(a.ctl)
    stop = threading.Event()
    parent = os.getppid()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _s, _f: stop.set())

    def orphaned() -> bool:
        return stop.is_set() or os.getppid() != parent

    obj = AppendCounter(a.self_addr, a.partner, SyncObjConf())
    try:
        leader = False
        while not orphaned():
            if _leader_ready(obj, len(a.partner)):
                with contextlib.suppress(Exception):  # warm-up: one entry committed
                    obj.append(b"", sync=True, timeout=10)
                try:  # exactly one node claims the run
                    fd = os.open(ctl / "claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                    os.close(fd)
                    leader = True
                except FileExistsError:
                    pass
                break
            time.sleep(0.02)
        if leader:
            write_json_atomic(ctl / "ready", {"node": a.self_addr, "pid": os.getpid()})
            if wait_go(ctl, orphaned):
                res = _drive(obj, a.payload, a.window, a.duration_s)
                res.update(node=a.self_addr, version=version(), config=config_dict())
                write_json_atomic(ctl / "result.json", res)
        while not orphaned():
            time.sleep(0.05)
    finally:
        obj.destroy()
        time.sleep(0.1)
    os._exit(0)  # the tick thread is not a daemon; do not wait on its teardown


def run(nodes: int, payload: int, window: int, duration_s: float,
        startup_s: float = 40.0, profile_dir: Path | None = None) -> dict[str, Any]:
    """Start ``nodes`` PySyncObj processes, load the leader, return figures per node."""
    if not HAVE_PYSYNCOBJ:
        raise RuntimeError("pysyncobj is not installed: pip install -e '.[bench]'")
    with tempfile.TemporaryDirectory(prefix="pso-bench-") as tmp:
        ctl = Path(tmp)
        ports = free_tcp_ports(nodes)
        addrs = [f"127.0.0.1:{p}" for p in ports]
        procs: dict[str, subprocess.Popen[bytes]] = {}
        try:
            for i, addr in enumerate(addrs):
                cmd = [sys.executable, "-m", "tools.bench.pysyncobj_node", "--self", addr,
                       "--ctl", str(ctl), "--payload", str(payload), "--window", str(window),
                       "--duration-s", str(duration_s)]
                for other in addrs:
                    if other != addr:
                        cmd += ["--partner", other]
                log = open(ctl / f"p{i + 1}.log", "wb")
                procs[f"p{i + 1}"] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
                log.close()
            try:
                res, m = run_handshake(ctl, procs, duration_s, startup_s, profile_dir=profile_dir)
            except (RuntimeError, TimeoutError) as e:
                tails = {n: log_tail(ctl / f"{n}.log") for n in procs}
                raise RuntimeError(f"{e}; log tails: {json.dumps(tails)}") from e
        finally:
            stop_pids(procs.values())
    leader = next(n for n, a in zip(procs, addrs) if a == res["node"])
    out = {"system": "pysyncobj", "nodes": nodes, "payload": payload, "window": window,
           "duration_s": duration_s, "leader": leader, "fsync": "off (no journal file)", **res,
           **m.summary(int(res["ops"]))}
    return out


def version() -> str:
    if not HAVE_PYSYNCOBJ:
        return "not installed"
    try:
        from importlib.metadata import version as v

        return v("pysyncobj")
    except Exception:  # pragma: no cover
        return "?"


if __name__ == "__main__":
    sys.exit(node_main())
