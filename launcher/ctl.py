"""``python -m launcher ctl --data-dir DIR COMMAND``: poke a running cluster from a shell.

    status                      one JSON line per node (its /status, or an error)
    leader                      the leader's id (exit 1 if none answers as leader)
    kill ID [--signal KILL]     signal the node's pid (the launcher restarts it)
    pause ID / resume ID        SIGSTOP / SIGCONT
    partition ID [ID ...]       cut the named nodes off from the rest (both sides)
    degrade ID [ID ...] [--drop-pct X] [--delay-ms Y] [--jitter-ms Z]
    heal                        SIGCONT every node and clear every node's network faults

How this works: no channel to the launcher is needed. Everything the launcher knows that a
tool needs is in ``DIR/cluster.json`` (pids, HTTP addresses); signals go to the pids, and
network faults to each node's ``/fault``. Faults are appended to ``DIR/faults.jsonl`` like
the nemesis's, with ``"by": "ctl"``. The running launcher notices deaths and restarts nodes;
a node paused from here shows as "stale" in its view.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Any

import orjson

from launcher import nodeapi
from launcher.events import EventLog
from launcher.faults import cut_sides, partition_specs
from launcher.layout import CLUSTER_FILE, FAULTS_FILE
from udpraft.config import ClusterConfig, load_cluster


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m launcher ctl",
                                 description="Drive a running launcher's cluster.")
    ap.add_argument("--data-dir", default="data")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("status")
    sub.add_parser("leader")
    k = sub.add_parser("kill")
    k.add_argument("node")
    k.add_argument("--signal", default="KILL", help="KILL, TERM, ... (default KILL)")
    for name in ("pause", "resume"):
        sub.add_parser(name).add_argument("node")
    sub.add_parser("partition").add_argument("nodes", nargs="+")
    d = sub.add_parser("degrade")
    d.add_argument("nodes", nargs="+")
    d.add_argument("--drop-pct", type=float, default=0.0)
    d.add_argument("--delay-ms", type=float, default=0.0)
    d.add_argument("--jitter-ms", type=float, default=0.0)
    sub.add_parser("heal")
    return ap.parse_args(argv)


def main(argv: list[str]) -> int:
    a = parse_args(argv)
    data_dir = Path(a.data_dir)
    try:
        cfg = load_cluster(data_dir / CLUSTER_FILE)
    except (OSError, ValueError) as e:
        print(f"launcher ctl: {e}", file=sys.stderr)
        return 2
    events = EventLog(data_dir / FAULTS_FILE)
    try:
        return _run(a, cfg, events)
    except KeyError as e:
        print(f"launcher ctl: {e.args[0]}", file=sys.stderr)
        return 2
    finally:
        events.close()


def _run(a: argparse.Namespace, cfg: ClusterConfig, events: EventLog) -> int:
    if a.cmd == "status":
        for n in cfg.nodes:
            st: dict[str, Any] = nodeapi.get_status(n.http) or {"id": n.id, "error": "no answer"}
            sys.stdout.write(orjson.dumps(st).decode() + "\n")
        return 0
    if a.cmd == "leader":
        leader = _leader(cfg)
        print(leader or "")
        return 0 if leader else 1
    if a.cmd in ("kill", "pause", "resume"):
        node = cfg.node(a.node)
        sig = {"pause": signal.SIGSTOP, "resume": signal.SIGCONT}.get(
            a.cmd, _signal_named(a.signal if a.cmd == "kill" else "KILL"))
        if not node.pid:
            print(f"launcher ctl: {node.id} has no pid in cluster.json", file=sys.stderr)
            return 1
        try:
            os.kill(node.pid, sig)
        except ProcessLookupError:
            print(f"launcher ctl: {node.id} (pid {node.pid}) is not running", file=sys.stderr)
            return 1
        if a.cmd == "resume":
            events.fault("heal", [node.id], heals="pause", pid=node.pid, by="ctl")
        else:
            events.fault(a.cmd, [node.id], signal=signal.Signals(sig).name, pid=node.pid,
                         by="ctl")
        return 0
    if a.cmd == "partition":
        ids = cfg.ids
        sides = cut_sides(ids, [a.nodes])
        errors = [e for nid, others in partition_specs(ids, sides).items()
                  for e in _post(cfg, nid, {"partition": others})]
        events.fault("partition", a.nodes, sides=sides, by="ctl", **_errs(errors))
        return _report(errors)
    if a.cmd == "degrade":
        spec = {"drop_pct": a.drop_pct, "delay_ms": a.delay_ms, "jitter_ms": a.jitter_ms}
        errors = [e for nid in a.nodes for e in _post(cfg, cfg.node(nid).id, spec)]
        events.fault("loss" if a.drop_pct else "delay", a.nodes, by="ctl",
                     **{k: v for k, v in spec.items() if v}, **_errs(errors))
        return _report(errors)
    # heal
    for n in cfg.nodes:
        if n.pid:
            try:
                os.kill(n.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
    errors = [e for n in cfg.nodes for e in _post(cfg, n.id, None)]
    events.fault("heal", cfg.ids, by="ctl", **_errs(errors))
    return _report(errors)


def _leader(cfg: ClusterConfig) -> str | None:
    best: tuple[str | None, int] = (None, -1)
    for n in cfg.nodes:
        st = nodeapi.get_status(n.http)
        if st and st.get("role") == "leader" and int(st.get("term", 0)) > best[1]:
            best = (n.id, int(st.get("term", 0)))
    return best[0]


def _post(cfg: ClusterConfig, node_id: str, spec: dict[str, Any] | None) -> list[str]:
    addr = cfg.node(node_id).http
    try:
        if spec is None:
            nodeapi.heal_faults(addr)
        else:
            nodeapi.set_fault(addr, spec)
    except nodeapi.NodeUnreachable as e:
        return [f"{node_id}: {e}"]
    return []


def _errs(errors: list[str]) -> dict[str, Any]:
    return {"errors": errors} if errors else {}


def _report(errors: list[str]) -> int:
    for e in errors:
        print(f"launcher ctl: {e}", file=sys.stderr)
    return 1 if errors else 0


def _signal_named(name: str) -> int:
    key = name.upper()
    key = key if key.startswith("SIG") else f"SIG{key}"
    try:
        return int(signal.Signals[key])
    except KeyError:
        raise SystemExit(f"launcher ctl: no signal {name!r}") from None
