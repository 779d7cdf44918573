"""``python -m launcher ctl --data-dir DIR COMMAND``: poke a running cluster from a shell.

    status                      one JSON line per node (its /status, or an error)
    leader                      the leader's id (exit 1 if none answers as leader)
    kill ID [--signal KILL]     signal the node's pid (the launcher restarts it)
    pause ID / resume ID        SIGSTOP / SIGCONT
    partition ID [ID ...]       cut the named nodes off from the rest (both sides)
    split n1,n2 n3[,...]        cut the cluster into these sides (unnamed nodes: one more)
    degrade ID [ID ...] [--to PEER ...] [--both-ways] [--drop-pct X] [--delay-ms Y]
            [--jitter-ms Z]     lossy/slow links: what ID sends (to PEERs, default all)
    heal                        SIGCONT every node and clear every node's network faults
    transfer ID                 ask the leader to hand leadership to ID
    restart ID / stop ID / start ID    through the launcher (its dashboard API)
    submit TEXT                 append TEXT; prints index and term once committed (ditto)
    add-node                    add a fresh node to the running cluster: a never-used id,
                                free ports, DIR/<id>; started and supervised by the
                                launcher, a learner, then a voter once caught up (ditto)
    retire-node ID              remove ID from the cluster (the leader too), then the
                                launcher stops its process for good (ditto)
    wipe ID                     a lost disk: SIGKILL ID and delete its data dir; the
                                launcher replaces it with a fresh node (ditto)
    members                     the membership as the leader sees it (GET /members)

How this works: most commands need no channel to the launcher. Everything the launcher
knows that a tool needs is in ``DIR/cluster.json`` (pids, HTTP addresses); signals go to
the pids, and network faults to each node's ``/fault``. Faults are appended to
``DIR/faults.jsonl`` like the nemesis's, with ``"by": "ctl"``. The running launcher notices
deaths and restarts nodes; a node paused from here shows as "stale" in its view. What only
the launcher can do (restart now, keep a node stopped, start it again) and submit go to the
control API of its dashboard, at cluster.json's ``dashboard`` URL (``POST /api/<action>``,
see udpraft/dashboard/api.py); each dashboard button is one of these commands.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from launcher import nodeapi
from launcher.events import EventLog
from launcher.faults import cut_sides, partition_specs
from launcher.layout import CLUSTER_FILE, FAULTS_FILE
from launcher.members import leader_view
from udpraft.config import ClusterConfig, load_cluster

MEMBER_TIMEOUT_S = 150.0  # add-node waits for the new node to catch up
MEMBERS_WAIT_S = 5.0  # `members` waits this long for a leader to answer


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
    sub.add_parser("split").add_argument("groups", nargs="+", help="comma-separated node ids")
    d = sub.add_parser("degrade")
    d.add_argument("nodes", nargs="+")
    d.add_argument("--to", nargs="+", default=None, metavar="PEER",
                   help="only the links to these peers (default: every peer)")
    d.add_argument("--both-ways", action="store_true",
                   help="also what the peers send back to the nodes")
    d.add_argument("--drop-pct", type=float, default=0.0)
    d.add_argument("--delay-ms", type=float, default=0.0)
    d.add_argument("--jitter-ms", type=float, default=0.0)
    sub.add_parser("heal")
    sub.add_parser("transfer").add_argument("target")
    for name in ("restart", "stop", "start"):
        sub.add_parser(name).add_argument("node")
    sub.add_parser("submit").add_argument("value")
    sub.add_parser("add-node")
    sub.add_parser("retire-node").add_argument("node")
    sub.add_parser("wipe").add_argument("node")
    sub.add_parser("members")
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
    if a.cmd in ("partition", "split"):
        ids = cfg.ids
        groups = [a.nodes] if a.cmd == "partition" else [
            [x for x in g.split(",") if x] for g in a.groups]
        sides = cut_sides(ids, groups)
        errors = [e for nid, others in partition_specs(ids, sides).items()
                  for e in _post(cfg, nid, {"partition": others})]
        targets = [n for g in groups for n in g]
        events.fault("partition", targets, sides=sides, by="ctl", **_errs(errors))
        return _report(errors)
    if a.cmd == "degrade":
        return _degrade(a, cfg, events)
    if a.cmd == "transfer":
        target = cfg.node(a.target).id
        leader = _leader(cfg)
        if leader is None:
            print("launcher ctl: no leader answers", file=sys.stderr)
            return 1
        try:
            nodeapi.transfer(cfg.node(leader).http, target)
        except nodeapi.NodeUnreachable as e:
            print(f"launcher ctl: {e}", file=sys.stderr)
            return 1
        print(f"asked {leader} to hand leadership to {target}")
        return 0
    if a.cmd in ("restart", "stop", "start"):
        return _dashboard(cfg, a.cmd, {"node": cfg.node(a.node).id})
    if a.cmd == "submit":
        return _dashboard(cfg, "submit", {"value": a.value}, timeout_s=15.0)
    if a.cmd == "add-node":
        return _dashboard(cfg, "add_node", {}, timeout_s=MEMBER_TIMEOUT_S)
    if a.cmd == "retire-node":
        return _dashboard(cfg, "retire_node", {"node": cfg.node(a.node).id},
                          timeout_s=MEMBER_TIMEOUT_S)
    if a.cmd == "wipe":
        return _dashboard(cfg, "wipe", {"node": cfg.node(a.node).id}, timeout_s=15.0)
    if a.cmd == "members":
        # An election (a leader just retired, a crash) takes about a second: ask again
        # for a few seconds before saying there is no leader.
        deadline = time.monotonic() + MEMBERS_WAIT_S
        mem = leader_view([n.http for n in cfg.nodes])
        while mem is None and time.monotonic() < deadline:
            time.sleep(0.2)
            mem = leader_view([n.http for n in cfg.nodes])
        if mem is None:
            print(f"launcher ctl: no leader answers GET /members (asked for {MEMBERS_WAIT_S:.0f} s)",
                  file=sys.stderr)
            return 1
        sys.stdout.write(orjson.dumps(mem).decode() + "\n")
        return 0
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


def _degrade(a: argparse.Namespace, cfg: ClusterConfig, events: EventLog) -> int:
    spec: dict[str, Any] = {"drop_pct": a.drop_pct, "delay_ms": a.delay_ms,
                            "jitter_ms": a.jitter_ms}
    nodes = [cfg.node(nid).id for nid in a.nodes]
    peers = [cfg.node(p).id for p in a.to] if a.to else None
    orders: list[tuple[list[str], list[str] | None]] = [(nodes, peers)]
    if a.both_ways:
        back = peers if peers is not None else [n for n in cfg.ids if n not in nodes]
        orders += [([p], nodes) for p in back]
    errors = []
    for who, to in orders:
        one = dict(spec, peers=to) if to is not None else spec
        errs = [e for nid in who for e in _post(cfg, nid, one)]
        events.fault("loss" if a.drop_pct else "delay", who, by="ctl",
                     **{k: v for k, v in one.items() if v}, **_errs(errs))
        errors += errs
    return _report(errors)


def _dashboard(cfg: ClusterConfig, action: str, body: dict[str, Any],
               timeout_s: float = 5.0) -> int:
    """POST /api/<action> to the running launcher's dashboard; prints its JSON answer."""
    url = urlsplit(cfg.dashboard)
    if not url.hostname or not url.port:
        print(f"launcher ctl: no dashboard URL in cluster.json ({cfg.dashboard!r})",
              file=sys.stderr)
        return 2
    try:
        status, out = nodeapi.request_status((url.hostname, url.port), "POST",
                                             f"/api/{action}", body, timeout_s=timeout_s)
    except nodeapi.NodeUnreachable as e:
        print(f"launcher ctl: {action} goes through the launcher's dashboard at "
              f"{cfg.dashboard}: {e}", file=sys.stderr)
        return 1
    if status >= 400:
        err = out.get("error") if isinstance(out, dict) else out
        print(f"launcher ctl: {action}: {err} (HTTP {status})", file=sys.stderr)
        return 1
    sys.stdout.write(orjson.dumps(out).decode() + "\n")
    return 0


def _leader(cfg: ClusterConfig) -> str | None:
    best: tuple[str | None, int] = (None, -1)
    for n in cfg.nodes:
        st = nodeapi.get_status(n.http)
        if st and st.get("role") == "leader" and int(st.get("term", 0)) > best[1]:
            best = (n.id, int(st.get("term", 0)))
    return best[0]


def _post(cfg: ClusterConfig, node_id: str, spec: dict[str, Any] | None) -> list[str]:
    return nodeapi.apply_fault(node_id, cfg.node(node_id).http, spec)


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
