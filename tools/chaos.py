"""``python -m tools.chaos --nodes 5 --duration-s 60 --seed 7``: a checked chaos run.

How this works: a cluster of real node processes runs under the launcher's supervisor with
its seeded nemesis (SIGKILL of random nodes and of the leader, SIGSTOP pauses, partitions,
loss and delay through the transport fault hook; at most a minority faulty at once). Worker
threads meanwhile submit unique payloads through the blocking client — and, when the nodes
serve the key-value API, put/get/compare-and-set a few keys over HTTP — recording every call
with its call and return time and outcome (ok, failed, or unknown for a timeout).

With ``--membership`` the nemesis also changes the membership ("replace": add a fresh node
as a learner, promote it once caught up, then remove an old node — sometimes the leader —
and retire its process; see launcher/chaos.py). Clients follow: a submit worker opens a new
client session on the current cluster file between calls when the membership changed (its
old nodes may all be gone by the end), and KV workers pick among the current nodes. The last
line then ends with ``membership_changes=K`` (committed changes: each replace is three).

At the end: stop the nemesis, heal everything, wait until every node has applied the same
commit index, read each node's copy of the log, and check

1. every acknowledged submit appears exactly once, at the index it was acknowledged with
   (``lost`` counts the ones missing);
2. the history is linearizable (submits as an absolute-index log, KV keys as registers;
   unknown outcomes may or may not have happened; a time bound gives ``unknown``);
3. every node's log agrees on the committed prefix.

It writes ``history.jsonl`` and, on a violation, ``report.txt`` into the data dir, and prints
as its last line ``chaos nodes=5 seed=7 ops=N ok=N failed=N unknown=N lost=0
linearizable=true``; the exit status is non-zero when any check fails.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from launcher.chaos import NemesisRunner
from launcher.cluster import ClusterSupervisor, SupervisorOptions
from launcher.nemesis import DEFAULT_WEIGHTS, MEMBERSHIP_WEIGHTS
from tools.checker import (
    AbsoluteLogModel,
    Model,
    Recorder,
    RegisterModel,
    check_log,
    check_partitioned,
    save_history,
    write_report,
)
from tools.localcluster import free_base_port
from udpraft.client.blocking import Client
from udpraft.config import load_secret
from udpraft.errors import SessionExpired, Timeout, UdpRaftError

KV_KEYS = 4


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def _post(url: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=timeout) as r:
        out: dict[str, Any] = json.loads(r.read() or b"{}")
        return out


def http_urls(sup: ClusterSupervisor) -> list[str]:
    return [f"http://{n.http[0]}:{n.http[1]}" for n in sup.config.nodes]


class Workers:
    def __init__(self, sup: ClusterSupervisor, rec: Recorder, kv: bool, seed: int):
        self.sup = sup
        self.cluster_file = sup.cluster_file
        self.rec = rec
        self.kv = kv
        self.seed = seed
        self.stop = threading.Event()
        self.acked: list[tuple[str, int]] = []
        self._lock = threading.Lock()
        self.secret = load_secret(sup.cluster_file)

    def client(self) -> tuple[Client, object]:
        """A client session on the nodes listed now, and what it was made from."""
        cfg = self.sup.config
        nodes = {n.id: f"{n.udp[0]}:{n.udp[1]}" for n in cfg.nodes}
        return Client(nodes, secret=self.secret, cluster_id=cfg.cluster), cfg

    def submit_worker(self, wid: int) -> None:
        name = f"w{wid}"
        c, made_from = self.client()
        try:
            n = 0
            while not self.stop.is_set():
                if self.sup.config is not made_from:  # nodes were added or retired
                    c.close()
                    c, made_from = self.client()
                n += 1
                payload = f"{name}-{n}"
                op = self.rec.invoke(name, "submit", "log", payload)
                try:
                    r = c.submit(payload.encode(), timeout=3.0)
                except (Timeout, SessionExpired):  # either may have applied: unknown
                    self.rec.timeout(op)
                    continue
                except UdpRaftError:
                    self.rec.fail(op)
                    time.sleep(0.05)
                    continue
                self.rec.ok(op, r.index)
                with self._lock:
                    self.acked.append((payload, r.index))
        finally:
            c.close()

    def kv_worker(self, wid: int) -> None:
        rng = random.Random(f"{self.seed}/kv/{wid}")
        name = f"kv{wid}"
        n = 0
        while not self.stop.is_set():
            n += 1
            key = f"chaos/{rng.randrange(KV_KEYS)}"
            url = rng.choice(http_urls(self.sup))
            x = rng.random()
            if x < 0.4:
                value = f"{name}-{n}"
                op = self.rec.invoke(name, "put", key, value)
                self._kv(op, url + "/v3/kv/put", {"key": _b64(key), "value": _b64(value)}, "put")
            elif x < 0.8:
                op = self.rec.invoke(name, "get", key, None)
                self._kv(op, url + "/v3/kv/range", {"key": _b64(key)}, "get")
            else:
                expected, new = f"kv{rng.randrange(8)}-{rng.randrange(1, n + 1)}", f"{name}-{n}"
                op = self.rec.invoke(name, "cas", key, (expected, new))
                body = {
                    "compare": [{"key": _b64(key), "target": "VALUE", "result": "EQUAL",
                                 "value": _b64(expected)}],
                    "success": [{"request_put": {"key": _b64(key), "value": _b64(new)}}],
                }
                self._kv(op, url + "/v3/kv/txn", body, "cas")

    def _kv(self, op: int, url: str, body: dict[str, Any], kind: str) -> None:
        try:
            out = _post(url, body, 3.0)
        except urllib.error.HTTPError as e:
            # etcd-style errors: a write may or may not have happened; a read did nothing
            self.rec.timeout(op) if kind != "get" and e.code >= 500 else self.rec.fail(op)
            time.sleep(0.05)
            return
        except (OSError, ValueError):
            self.rec.timeout(op) if kind != "get" else self.rec.fail(op)
            time.sleep(0.05)
            return
        if kind == "put":
            self.rec.ok(op, "ok")
        elif kind == "get":
            kvs = out.get("kvs") or []
            self.rec.ok(op, base64.b64decode(kvs[0]["value"]).decode() if kvs else None)
        else:
            self.rec.ok(op, bool(out.get("succeeded", False)))


def kv_available(http: str) -> bool:
    try:
        _post(http + "/v3/kv/range", {"key": _b64("probe")}, 2.0)
        return True
    except (OSError, ValueError):
        return False


def wait_converged(sup: ClusterSupervisor, timeout_s: float) -> bool:
    """Every node answers and all report the same commit and applied index."""

    def ok() -> bool:
        sts = [sup.status(n) for n in sup.ids]
        if any(s is None for s in sts):
            return False
        commits = {(s["commit_index"], s["applied_index"]) for s in sts if s}
        return len(commits) == 1 and next(iter(commits))[0] > 0

    return sup.wait_until(ok, timeout_s, 0.2)


def node_logs(cfg_file: Path, ids_addrs: dict[str, str]) -> dict[str, dict[int, bytes]]:
    from udpraft.config import load_cluster, load_secret

    cfg = load_cluster(cfg_file)
    secret = load_secret(cfg_file)
    out = {}
    for nid, addr in ids_addrs.items():
        with Client({nid: addr}, secret=secret, cluster_id=cfg.cluster) as c:
            out[nid] = {e.index: e.data for e in c.retrieve(1, timeout=20)}
    return out


def run(a: argparse.Namespace) -> int:
    rng = random.Random(a.seed)
    tmp = None
    if a.data_dir:
        data_dir = Path(a.data_dir)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="udpraft-chaos-")
        data_dir = Path(tmp.name)
    opts = SupervisorOptions(data_dir=data_dir, nodes=a.nodes, base_port=free_base_port(rng),
                             storage=a.storage)
    sup = ClusterSupervisor(opts)
    rec = Recorder(clock=time.time)
    problems: list[str] = []
    try:
        sup.start()
        if not sup.wait_ready(60) or sup.wait_leader(30) is None:
            print("chaos: the cluster did not come up", file=sys.stderr)
            return 2
        kv = a.kv and kv_available(http_urls(sup)[0])
        wk = Workers(sup, rec, kv, a.seed)
        threads = [threading.Thread(target=wk.submit_worker, args=(i,), daemon=True)
                   for i in range(a.workers)]
        if kv:
            threads += [threading.Thread(target=wk.kv_worker, args=(i,), daemon=True)
                        for i in range(a.kv_workers)]
        weights = MEMBERSHIP_WEIGHTS if a.membership else DEFAULT_WEIGHTS
        nem = NemesisRunner(sup, a.seed, duration_s=a.duration_s, weights=weights)
        for t in threads:
            t.start()
        nem.start()
        time.sleep(a.duration_s)
        wk.stop.set()
        nem.stop()
        nem.join(60)
        for t in threads:
            t.join(10)
        sup.heal()
        if not wait_converged(sup, 60):
            problems.append("the cluster did not converge after healing")
        addrs = {n.id: f"{n.udp[0]}:{n.udp[1]}" for n in sup.config.nodes}
        logs = node_logs(sup.cluster_file, addrs)
        # (3) every node's copy of the committed log agrees
        ref_id = max(logs, key=lambda k: len(logs[k]))
        ref = logs[ref_id]
        for nid, lg in logs.items():
            for idx, data in lg.items():
                if ref.get(idx) != data:
                    problems.append(f"{nid} disagrees with {ref_id} at index {idx}")
                    break
        # (1) acknowledged submits: exactly once, at the acknowledged index
        final = [(i, d.decode(errors="replace")) for i, d in sorted(ref.items())]
        log_problems = check_log(wk.acked, final)
        acked_payloads = {p for p, _ in wk.acked}
        present = {d for _, d in final}
        lost = len(acked_payloads - present)
        problems += log_problems
        # (2) linearizability, per key
        hist = rec.history()
        save_history(hist, data_dir / "history.jsonl")

        def model_for(key: str) -> Model[Any]:
            return AbsoluteLogModel() if key == "log" else RegisterModel()

        lin = check_partitioned(hist, model_for, timeout_s=a.check_timeout_s)
        if lin.verdict == "illegal":
            write_report(lin, data_dir / "report.txt")
            problems.append(f"history not linearizable: see {data_dir / 'report.txt'}")
        ok = sum(1 for o in hist if o.status == "ok")
        failed = sum(1 for o in hist if o.status == "failed")
        unknown = sum(1 for o in hist if o.status == "unknown")
        for p in problems[:20]:
            print(f"chaos: PROBLEM: {p}")
        if tmp is not None and problems:
            keep = Path(tempfile.mkdtemp(prefix="udpraft-chaos-failed-"))
            for f in ("history.jsonl", "report.txt", "faults.jsonl"):
                if (data_dir / f).exists():
                    (keep / f).write_bytes((data_dir / f).read_bytes())
            print(f"chaos: evidence kept in {keep}")
        lin_word = {"ok": "true", "illegal": "false"}.get(lin.verdict, "unknown")
        print(f"chaos: faults={nem_count(data_dir)} kv={'on' if kv else 'off'} "
              f"entries={len(ref)} checked_in={lin.elapsed_s:.2f}s data={data_dir}")
        extra = (f" membership_changes={nem.membership_changes} nodes_now={len(sup.ids)}"
                 if a.membership else "")
        if a.membership:
            print(f"chaos: added {','.join(nem.added) or '-'} retired "
                  f"{','.join(nem.retired) or '-'}; members now {','.join(sup.ids)}")
        print(f"chaos nodes={a.nodes} seed={a.seed} ops={len(hist)} ok={ok} failed={failed} "
              f"unknown={unknown} lost={lost} linearizable={lin_word}{extra}")
        return 1 if problems or lost or lin.verdict == "illegal" else 0
    finally:
        sup.stop()
        if tmp is not None:
            tmp.cleanup()


def nem_count(data_dir: Path) -> int:
    p = data_dir / "faults.jsonl"
    if not p.exists():
        return 0
    return sum(1 for line in p.read_text().splitlines() if '"fault"' in line or "kind" in line)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.chaos", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=5)
    ap.add_argument("--duration-s", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workers", type=int, default=4, help="submit workers")
    ap.add_argument("--kv-workers", type=int, default=3)
    ap.add_argument("--no-kv", dest="kv", action="store_false", help="submits only")
    ap.add_argument("--storage", default="file", choices=["file", "sqlite"])
    ap.add_argument("--data-dir", help="keep the run here (default: a temp dir)")
    ap.add_argument("--check-timeout-s", type=float, default=120.0)
    ap.add_argument("--membership", action="store_true",
                    help="the nemesis also replaces nodes: adds a fresh one (learner, then "
                         "voter), removes an old one (sometimes the leader) and retires it")
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
