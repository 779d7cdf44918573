"""``python -m tools.bench compare [--quick] [--json out.json]``: udpraft against its peers.

How this works — one command runs, each run with fresh processes on free 127.0.0.1 ports,
every process stopped by PID at the end (even on error or Ctrl-C/SIGTERM):

1. ``embedded``: the same replicated append of the same payloads, load generated inside the
   leader process with W proposals in flight, for every (nodes, payload, window):
   PySyncObj 0.3.x (``pysyncobj_node``: ``SyncObjConf()`` defaults, in-memory journal,
   **no fsync**), then udpraft embedded with its file log (fsync on), then with its memory
   log (``embedded_node``). Interleaved per cell so machine noise hits both sides alike.
2. ``submit``: udpraft network submit (``tools.bench.submit.drive``: closed-loop
   ``AsyncClient`` sessions in this process, file log) with 1 and 64 clients; 64 clients
   three times: one submit in flight each with a socket per client, then with all 64
   sessions sharing one socket (``ClientMux``: still 64 sessions with their own ids, seqs
   and retries, their requests coalesced per loop turn, as etcd's benchmark shares
   ``--conns`` among ``--clients``), then sharing one socket with 8 submits in flight per
   client (``PIPELINE``: an asyncio program issuing concurrent submits on one
   ``AsyncClient``). The target counts as met if a configuration meets it; the table says
   which. No peer: PySyncObj has no client protocol.
3. ``kv``: fake-etcd (udpraft's etcd v3 JSON API) against etcd 3.4 with the same aiohttp
   load (``tools.bench.kv``): 50 keep-alive clients, 10 B values, puts then linearizable
   gets. Skipped with a message when the KV layer or ``/usr/bin/etcd`` is missing.

For every run: ops/s, p50/p99 latency, CPU seconds per 1,000 ops per node (psutil, sampled
right before and after the load window) and peak RSS per node (VmHWM). It prints a table,
the ratios udpraft/peer and the targets of issue 7 (met or not), writes ``--json``, and
ends with one key=value line (INTERFACE.md), the headline cell (3 nodes, 10 B, window 1000):
``compare nodes=3 payload=10 window=1000 storage=file udpraft_ops_per_s=N
pysyncobj_ops_per_s=N ratio=R ... targets_met=K/N``.

``--quick``: 3 nodes, 10 B, windows 100 and 1000, 3 s per run (about two minutes in all).
The full matrix: 3 and 5 nodes, 10 B and 1 KB, windows 1, 100, 1,000 and 10,000.
``--profile DIR`` records a py-spy profile of every node of every run (``profiles.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from tools.bench import embedded_node, kv, pysyncobj_node
from tools.bench.procs import Measured, latency_summary, sigterm_as_interrupt
from tools.localcluster import LocalCluster


@dataclass
class Matrix:
    nodes: list[int]
    payloads: list[int]
    windows: list[int]
    duration_s: float
    submit_clients: list[int]
    kv_duration_s: float


QUICK = Matrix(nodes=[3], payloads=[10], windows=[100, 1000], duration_s=3.0,
               submit_clients=[1, 64], kv_duration_s=3.0)
FULL = Matrix(nodes=[3, 5], payloads=[10, 1024], windows=[1, 100, 1000, 10000], duration_s=5.0,
              submit_clients=[1, 64], kv_duration_s=5.0)
SYSTEMS = ("pysyncobj", "udpraft-file", "udpraft-memory")
PIPELINE = 8  # submits in flight per client in the pipelining 64-client row


def machine() -> dict[str, Any]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu_model": model, "python": platform.python_version(),
            "platform": platform.platform(), "loadavg_start": list(os.getloadavg()),
            "pysyncobj": pysyncobj_node.version()}


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    good = [r for r in runs if "error" not in r]
    if not good:
        return runs[-1]
    good.sort(key=lambda r: float(r["ops_per_s"]))
    best = dict(good[len(good) // 2])
    if len(runs) > 1:
        best["repeats_ops_per_s"] = [r.get("ops_per_s") for r in runs]
    return best


def _attempt(label: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return fn()
    except (RuntimeError, TimeoutError, AssertionError, OSError, StopIteration) as e:
        print(f"# {label}: failed: {e}", flush=True)
        return {"error": str(e), "ops_per_s": 0.0, "p50_ms": 0.0, "p99_ms": 0.0}


def run_embedded_cell(cell: dict[str, Any], storages: list[str], repeat: int,
                      profile: Path | None) -> None:
    """Fill ``cell`` (nodes, payload, window, duration_s) with each system's median run and
    the ratios, updating it after every run (so an interrupted matrix keeps what it had)."""
    nodes, payload, window, duration_s = cell["nodes"], cell["payload"], cell["window"], cell["duration_s"]
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in SYSTEMS}
    for rep in range(repeat):
        for sysname in ("pysyncobj", *(f"udpraft-{s}" for s in storages)):
            label = f"n{nodes}-p{payload}-w{window}-{sysname}-r{rep}"
            pdir = profile / label if profile else None
            if sysname == "pysyncobj":
                r = _attempt(label, partial(pysyncobj_node.run, nodes, payload, window, duration_s,
                                            profile_dir=pdir))
            else:
                r = _attempt(label, partial(embedded_node.run, nodes, payload, window, duration_s,
                                            sysname.split("-", 1)[1], profile_dir=pdir))
            runs[sysname].append(r)
            print(f"# {sysname} embedded nodes={nodes} payload={payload} window={window} "
                  f"ops_per_s={r['ops_per_s']:.0f} p50_ms={r['p50_ms']:.2f} p99_ms={r['p99_ms']:.2f}"
                  + (" error=1" if "error" in r else ""), flush=True)
            _summarize_cell(cell, runs, storages)


def _summarize_cell(cell: dict[str, Any], runs: dict[str, list[dict[str, Any]]],
                    storages: list[str]) -> None:
    for sysname, rs in runs.items():
        if rs:
            cell[sysname] = _median_run(rs)
    peer = cell.get("pysyncobj", {})
    for s in storages:
        u = cell.get(f"udpraft-{s}")
        if u and "error" not in u and "error" not in peer and peer.get("ops_per_s"):
            cell[f"ratio_{s}"] = round(float(u["ops_per_s"]) / float(peer["ops_per_s"]), 2)
            cell[f"p99_ratio_{s}"] = (round(float(u["p99_ms"]) / float(peer["p99_ms"]), 3)
                                      if peer.get("p99_ms") else None)


def run_submit(nodes: int, clients: int, payload: int, duration_s: float,
               storage: str = "file", profile_dir: Path | None = None,
               sockets: int = 0, inflight: int = 1) -> dict[str, Any]:
    """``sockets`` 0: a socket per client session; S: the sessions share S sockets
    (``ClientMux``, like etcd's benchmark with ``--conns`` below ``--clients``).
    ``inflight``: submits each client keeps in flight."""
    from tools.bench.profiles import start_spies, wait_spies
    from tools.bench.submit import drive

    with tempfile.TemporaryDirectory(prefix="udpraft-cmp-submit-") as tmp:
        c = LocalCluster(Path(tmp), nodes, storage)
        try:
            c.start_all()
            c.wait_up(20)
            leader = c.wait_leader(20)
            m = Measured({n: c.procs[n].pid for n in c.ids})
            m.start()
            spies = start_spies(profile_dir, m.pids, duration_s) if profile_dir else []
            cpu0 = time.process_time()
            try:
                import uvloop

                ops, lat, errors = uvloop.run(drive(str(c.cluster_file), clients, payload, duration_s,
                                                    inflight, sockets=sockets))
            except ImportError:  # pragma: no cover
                ops, lat, errors = asyncio.run(drive(str(c.cluster_file), clients, payload, duration_s,
                                                     inflight, sockets=sockets))
            client_cpu = time.process_time() - cpu0
            m.stop()
            wait_spies(spies)
        finally:
            c.stop_all()
    return {"system": "udpraft", "mode": "submit", "nodes": nodes, "clients": clients,
            "sockets": sockets or clients, "inflight": inflight, "payload": payload, "storage": storage, "duration_s": duration_s, "leader": leader,
            "ops": len(lat), "ops_per_s": float(ops), "errors": errors, **latency_summary(lat),
            "client_cpu_s": round(client_cpu, 3), **m.summary(len(lat))}


def _cpu_cols(r: dict[str, Any], leader: str) -> str:
    per = r.get("cpu_s_per_1k_ops", {})
    rss = r.get("peak_rss_mb", {})
    if not per:
        return f"{'':>19} {'':>13}"
    lead = per.get(leader, 0.0)
    fol = max((v for k, v in per.items() if k != leader), default=0.0)
    return (f"{lead:>8.4f}/{fol:<10.4f} {rss.get(leader, 0.0):>5.0f}/"
            f"{max((v for k, v in rss.items() if k != leader), default=0.0):<7.0f}")


def embedded_table(cells: list[dict[str, Any]]) -> str:
    out = ["== embedded: replicated append inside the leader, W in flight "
           "(cpu = CPU s per 1,000 ops, leader/busiest follower; rss = peak MB leader/follower)",
           f"{'nodes':>5} {'bytes':>5} {'window':>6} {'system':<15} {'ops/s':>8} {'p50 ms':>8} "
           f"{'p99 ms':>8} {'err':>4} {'cpu leader/foll':>19} {'rss MB':>13} {'x ops':>6} {'p99 x':>6}"]
    for c in cells:
        for s in SYSTEMS:
            r = c.get(s)
            if r is None:
                continue
            head = f"{c['nodes']:>5} {c['payload']:>5} {c['window']:>6} {s:<15}"
            if "error" in r:
                out.append(f"{head} failed: {r['error'][:80]}")
                continue
            st = s.split("-", 1)[1] if s.startswith("udpraft") else ""
            rat = c.get(f"ratio_{st}")
            p99r = c.get(f"p99_ratio_{st}")
            out.append(
                f"{head} {r['ops_per_s']:>8.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
                f"{r.get('errors', 0):>4} {_cpu_cols(r, str(r.get('leader', '')))} "
                f"{(f'{rat:.2f}' if rat is not None else ''):>6} {(f'{p99r:.2f}' if p99r is not None else ''):>6}")
    return "\n".join(out)


def submit_table(rows: list[dict[str, Any]]) -> str:
    out = ["== udpraft network submit (closed-loop clients in the bench process, file log, fsync on)",
           f"{'nodes':>5} {'clients':>7} {'sockets':>7} {'inflt':>5} {'ops/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'err':>4} "
           f"{'cpu leader/foll':>19} {'rss MB':>13} {'client cpu s':>12}"]
    for r in rows:
        if "error" in r:
            out.append(f"{r['nodes']:>5} {r['clients']:>7} failed: {r['error'][:80]}")
            continue
        out.append(f"{r['nodes']:>5} {r['clients']:>7} {r.get('sockets', r['clients']):>7} {r.get('inflight', 1):>5} "
                   f"{r['ops_per_s']:>8.0f} {r['p50_ms']:>8.2f} "
                   f"{r['p99_ms']:>8.2f} {r['errors']:>4} {_cpu_cols(r, r['leader'])} "
                   f"{r['client_cpu_s']:>12.2f}")
    return "\n".join(out)


def _submit_tag(r: dict[str, Any]) -> str:
    tag = f"sockets={r.get('sockets', r.get('clients', 0))}"
    return tag + (f" inflight={r['inflight']}" if r.get("inflight", 1) > 1 else "")


def targets(cells: list[dict[str, Any]], submits: list[dict[str, Any]],
            kvs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 7's targets, each met / not met / not measured, from this run's figures."""
    out: list[dict[str, Any]] = []

    # A figure counts only from a clean run: operations that failed (a node that died, a
    # refused request) make a run's ops/s meaningless, so a cell with errors fails its target.
    def cells_for(payload: int) -> list[dict[str, Any]]:
        return [c for c in cells if c["nodes"] == 3 and c["payload"] == payload and c["window"] >= 100
                and "ratio_file" in c]

    def clean(c: dict[str, Any]) -> bool:
        return not c.get("udpraft-file", {}).get("errors", 0)

    c10 = cells_for(10)
    out.append({"target": "embedded 10 B, 3 nodes, every window >= 100, fsync on: ops >= 3x PySyncObj",
                "met": all(c["ratio_file"] >= 3 and clean(c) for c in c10) if c10 else None,
                "detail": {c["window"]: c["ratio_file"] for c in c10}})
    out.append({"target": "embedded 10 B, 3 nodes, every window >= 100, fsync on: p99 <= 1/3 of PySyncObj's",
                "met": all((c["p99_ratio_file"] or 99) <= 1 / 3 and clean(c) for c in c10) if c10 else None,
                "detail": {c["window"]: c["p99_ratio_file"] for c in c10}})
    c1k = cells_for(1024)
    out.append({"target": "embedded 1 KB, 3 nodes, every window >= 100, fsync on: ops >= 2x PySyncObj",
                "met": all(c["ratio_file"] >= 2 and clean(c) for c in c1k) if c1k else None,
                "detail": {c["window"]: c["ratio_file"] for c in c1k}})
    s64 = [r for r in submits if r.get("clients") == 64 and r.get("nodes") == 3 and "error" not in r]
    out.append({"target": "network submit, 64 clients, 3 nodes: >= 50,000 ops/s and p99 <= 20 ms",
                "met": any(r["ops_per_s"] >= 50_000 and r["p99_ms"] <= 20 and not r.get("errors")
                           for r in s64) if s64 else None,
                "detail": {_submit_tag(r): {"ops_per_s": r["ops_per_s"], "p99_ms": r["p99_ms"],
                                            "errors": r.get("errors", 0)} for r in s64}})
    ok = {r["target"]: r for r in kvs if "skipped" not in r}
    both = "fake-etcd" in ok and "etcd" in ok
    put_ratio = kv.ratio(ok["fake-etcd"]["put"]["ops_per_s"], ok["etcd"]["put"]["ops_per_s"]) if both else None
    put_errors = {t: ok[t]["put"].get("errors", 0) for t in ok}
    out.append({"target": "fake-etcd puts/s >= 1.0x etcd 3.4",
                "met": (put_ratio >= 1.0 and not any(put_errors.values())) if put_ratio else None,
                "detail": {"put_ratio": put_ratio, "put_errors": put_errors}})
    return out


def targets_text(ts: list[dict[str, Any]]) -> str:
    out = ["== targets (issue 7), ratios measured in this run"]
    for t in ts:
        state = {True: "MET", False: "NOT MET", None: "not measured"}[t["met"]]
        out.append(f"  [{state:^12}] {t['target']}  {json.dumps(t['detail'])}")
    return "\n".join(out)


def headline(cells: list[dict[str, Any]], ts: list[dict[str, Any]], quick: bool) -> str:
    met = sum(1 for t in ts if t["met"])
    measured = sum(1 for t in ts if t["met"] is not None)
    tail = f"matrix={'quick' if quick else 'full'} targets_met={met}/{measured}"
    pick = [c for c in cells if (c["nodes"], c["payload"], c["window"]) == (3, 10, 1000)] or cells
    if not pick:
        return f"compare {tail}"
    c = pick[0]
    u = c.get("udpraft-file") or c.get("udpraft-memory") or {}
    st = "file" if "udpraft-file" in c else "memory"
    p = c.get("pysyncobj", {})
    ratio = c.get(f"ratio_{st}", 0.0)
    return (f"compare nodes={c['nodes']} payload={c['payload']} window={c['window']} storage={st} "
            f"udpraft_ops_per_s={u.get('ops_per_s', 0):.0f} pysyncobj_ops_per_s={p.get('ops_per_s', 0):.0f} "
            f"ratio={ratio} udpraft_p50_ms={u.get('p50_ms', 0):.2f} udpraft_p99_ms={u.get('p99_ms', 0):.2f} "
            f"pysyncobj_p50_ms={p.get('p50_ms', 0):.2f} pysyncobj_p99_ms={p.get('p99_ms', 0):.2f} {tail}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.bench compare", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 nodes, 10 B, windows 100 and 1000, 3 s")
    ap.add_argument("--nodes", type=int, nargs="+")
    ap.add_argument("--payloads", type=int, nargs="+")
    ap.add_argument("--windows", type=int, nargs="+")
    ap.add_argument("--storages", nargs="+", choices=["file", "memory"], default=["file", "memory"])
    ap.add_argument("--duration-s", type=float, help="per embedded/submit run")
    ap.add_argument("--kv-duration-s", type=float, help="per kv phase")
    ap.add_argument("--submit-clients", type=int, nargs="+")
    ap.add_argument("--parts", default="embedded,submit,kv", help="comma list of embedded,submit,kv")
    ap.add_argument("--repeat", type=int, default=1, help="runs per cell; the median run is reported")
    ap.add_argument("--json", help="write every figure here")
    ap.add_argument("--profile", help="record py-spy profiles of every node into this dir")
    a = ap.parse_args(argv)
    m = replace(QUICK if a.quick else FULL)
    for key in ("nodes", "payloads", "windows", "duration_s", "kv_duration_s", "submit_clients"):
        if getattr(a, key) is not None:
            setattr(m, key, getattr(a, key))
    parts = set(a.parts.split(","))
    profile = Path(a.profile) if a.profile else None
    info = machine()
    print(f"# machine: {info['cpus']} cpus ({info['cpu_model']}), python {info['python']}, "
          f"loadavg {info['loadavg_start']}; pysyncobj {info['pysyncobj']}", flush=True)
    if "embedded" in parts and pysyncobj_node.HAVE_PYSYNCOBJ:
        print(f"# pysyncobj config: SyncObjConf() defaults: {json.dumps(pysyncobj_node.config_dict())}")
    elif "embedded" in parts:
        print("# pysyncobj is not installed (pip install -e '.[bench]'): its runs will fail")
    cells: list[dict[str, Any]] = []
    submits: list[dict[str, Any]] = []
    kvs: list[dict[str, Any]] = []
    t_start = time.time()
    interrupted = False
    try:
        with sigterm_as_interrupt():
            if "embedded" in parts:
                for n in m.nodes:
                    for p in m.payloads:
                        for w in m.windows:
                            cell = {"nodes": n, "payload": p, "window": w, "duration_s": m.duration_s}
                            cells.append(cell)
                            run_embedded_cell(cell, a.storages, a.repeat, profile)
            if "submit" in parts:
                for n in m.nodes:
                    # Every client count once with a socket per client and, above one
                    # client, with all sessions sharing one socket (ClientMux), one submit
                    # in flight per client and then PIPELINE.
                    for cl, socks, infl in [
                        (c, s, i) for c in m.submit_clients
                        for s, i in (((0, 1), (1, 1), (1, PIPELINE)) if c > 1 else ((0, 1),))
                    ]:
                        tag = f"n{n}-c{cl}" + (f"-s{socks}" if socks else "") + (f"-i{infl}" if infl > 1 else "")
                        r = _attempt(f"submit {tag}", partial(
                            run_submit, n, cl, 10, m.duration_s, sockets=socks, inflight=infl,
                            profile_dir=profile / f"submit-{tag}" if profile else None))
                        r.setdefault("nodes", n)
                        r.setdefault("clients", cl)
                        r.setdefault("sockets", socks or cl)
                        r.setdefault("inflight", infl)
                        submits.append(r)
                        print(f"# udpraft submit nodes={n} payload=10 clients={cl} sockets={r['sockets']} "
                              f"inflight={infl} ops_per_s={r['ops_per_s']:.0f} p50_ms={r['p50_ms']:.2f} "
                              f"p99_ms={r['p99_ms']:.2f}", flush=True)
            if "kv" in parts:
                for t in ("fake-etcd", "etcd"):
                    kvs.append(kv.run_target(t, 3, 50, 10, m.kv_duration_s,
                                             profile_dir=profile / f"kv-{t}" if profile else None))
    except KeyboardInterrupt:
        interrupted = True
        print("# interrupted: every process was stopped; partial results follow", flush=True)
    info["loadavg_end"] = list(os.getloadavg())
    ts = targets(cells, submits, kvs)
    if cells:
        print(embedded_table(cells))
    if submits:
        print(submit_table(submits))
    if kvs:
        print("== kv: fake-etcd vs etcd 3.4 (50 keep-alive clients, 10 B values; puts, then linearizable gets)")
        print(kv.table(kvs))
        ok = {r["target"]: r for r in kvs if "skipped" not in r}
        if "fake-etcd" in ok and "etcd" in ok:
            for op in ("put", "get"):
                print(f"# ratio fake-etcd/etcd {op}s/s: "
                      f"{kv.ratio(ok['fake-etcd'][op]['ops_per_s'], ok['etcd'][op]['ops_per_s'])}")
    print(targets_text(ts))
    if a.json:
        doc = {"machine": info, "matrix": asdict(m), "args": vars(a), "elapsed_s": round(time.time() - t_start, 1),
               "interrupted": interrupted,
               "pysyncobj_config": pysyncobj_node.config_dict() if pysyncobj_node.HAVE_PYSYNCOBJ else None,
               "embedded": cells, "submit": submits, "kv": kvs, "targets": ts}
        Path(a.json).write_text(json.dumps(doc, indent=1))
        print(f"# wrote {a.json}")
    print(headline(cells, ts, a.quick))
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
