"""``python -m launcher``: run a udpraft cluster of N node processes on this machine.

    python -m launcher --nodes N [--data-dir DIR] [--host 127.0.0.1] [--base-port P]
                       [--storage file|sqlite|memory] [--chaos] [--seed S]
                       [--duration-s SECONDS] [--plain] [--no-dashboard]
    python -m launcher ctl --data-dir DIR status|leader|kill|pause|resume|partition|...
    python -m launcher --data-dir DIR --add-node [--retire-node ID]   # grow / shrink

How this works: the supervisor (cluster.py) starts the nodes and keeps them running; this
module wires it to the terminal. SIGINT/SIGTERM or the end of ``--duration-s`` set one stop
event; the main thread then stops the nemesis, then every node (SIGTERM, SIGKILL after
~5 s), and prints a last summary line. With ``--chaos`` the nemesis (chaos.py) starts once
every node answers, with the seed printed so the run can be replayed. Exit status: 0 after
a normal stop, 2 when the cluster cannot be laid out (busy port, node count mismatch).

``--add-node`` (repeatable) and ``--retire-node ID``: when a launcher already runs on DIR,
they are handed to it (as ``launcher ctl add-node`` / ``retire-node`` are) and this command
exits with their outcome; otherwise the cluster starts as usual and, once it has a leader,
the nodes are added (fresh ids, ports and data dirs) and retired, one change at a time.

The web dashboard (udpraft/dashboard) is served at cluster.json's ``dashboard`` URL from the
moment the nodes are spawned, in a thread of its own, with the supervisor behind its
controls (``DashboardControl``); its URL is printed. A busy dashboard port is reported and
the cluster runs on without it.
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from launcher.chaos import NemesisRunner
from launcher.cluster import LOCK_FILE, ClusterSupervisor, SupervisorOptions
from launcher.control import DashboardControl
from launcher.events import EventLog
from launcher.layout import DEFAULT_BASE_PORT, FAULTS_FILE, LayoutError
from launcher.members import MemberError
from launcher.nemesis import DEFAULT_WEIGHTS, MEMBERSHIP_WEIGHTS
from launcher.procs import DirLocked, lock_dir, unlock_dir
from launcher.view import LiveView, PlainPrinter

if TYPE_CHECKING:
    from udpraft.dashboard.server import DashboardThread


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m launcher",
        description="Start, supervise and (with --chaos) torment a udpraft cluster. "
                    "`python -m launcher ctl --help` drives a running one.")
    ap.add_argument("--nodes", type=int, default=None,
                    help="number of nodes (default: as many as DIR's cluster has, else 3)")
    ap.add_argument("--data-dir", default="data", help="cluster files and node data (./data)")
    ap.add_argument("--host", default="127.0.0.1", help="address the nodes bind and advertise")
    ap.add_argument("--base-port", type=int, default=None,
                    help=f"node i: udp P+i-1, http P+100+i-1 (default {DEFAULT_BASE_PORT}; "
                         "a reused DIR keeps its ports)")
    ap.add_argument("--storage", choices=["file", "sqlite", "memory"], default="file")
    ap.add_argument("--snapshot-entries", type=int, default=0, metavar="N",
                    help="nodes snapshot and compact their log every N applied entries (0: never)")
    ap.add_argument("--chaos", action="store_true", help="run the seeded nemesis")
    ap.add_argument("--seed", type=int, default=None, help="nemesis seed (default: random)")
    ap.add_argument("--membership", action="store_true",
                    help="with --chaos: the nemesis also replaces nodes (adds a fresh one, "
                         "removes an old one, sometimes the leader, and retires it)")
    ap.add_argument("--duration-s", type=float, default=None, help="stop after this long")
    ap.add_argument("--plain", action="store_true",
                    help="log lines instead of the live table even on a terminal")
    ap.add_argument("--no-dashboard", action="store_true",
                    help="do not serve the web dashboard at cluster.json's dashboard URL")
    ap.add_argument("--add-node", action="count", default=0,
                    help="add a fresh node (repeat for more): to the launcher already running "
                         "on DIR, else to this one once its cluster is up")
    ap.add_argument("--retire-node", action="append", default=[], metavar="ID",
                    help="remove node ID from the cluster and stop it for good (ditto)")
    a = ap.parse_args(argv)
    if a.nodes is not None and a.nodes < 1:
        ap.error("--nodes must be at least 1")
    if a.duration_s is not None and a.duration_s <= 0:
        ap.error("--duration-s must be positive")
    return a


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["ctl"]:
        from launcher.ctl import main as ctl_main

        return ctl_main(argv[1:])
    a = parse_args(argv)
    if (a.add_node or a.retire_node) and _launcher_running(Path(a.data_dir)):
        return _forward_membership(a)
    started = time.monotonic()
    deadline = started + a.duration_s if a.duration_s is not None else None
    live = sys.stdout.isatty() and not a.plain
    data_dir = Path(a.data_dir)
    events = EventLog(data_dir / FAULTS_FILE, echo=None if live else PlainPrinter(sys.stdout))
    node_args = ("--snapshot-entries", str(a.snapshot_entries)) if a.snapshot_entries > 0 else ()
    opts = SupervisorOptions(data_dir=data_dir, nodes=a.nodes, host=a.host,
                             base_port=a.base_port, storage=a.storage, node_args=node_args)
    try:
        sup = ClusterSupervisor(opts, events)
    except (LayoutError, OSError) as e:
        print(f"launcher: {e}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)  # the terminal went away: stop cleanly too
    if a.storage == "memory":
        events.emit("warn", "--storage memory: a restarted node comes back with an empty log "
                    "and no memory of its votes (fine for demos, not for safety tests)")
    try:
        sup.start()
    except (LayoutError, OSError) as e:
        print(f"launcher: {e}", file=sys.stderr)
        sup.stop()
        return 2
    if deadline is not None:
        timer = threading.Timer(max(0.0, deadline - time.monotonic()), stop.set)
        timer.daemon = True
        timer.start()
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(1 << 31)
    weights = MEMBERSHIP_WEIGHTS if a.membership else DEFAULT_WEIGHTS
    nemesis = _NemesisStarter(sup, seed, deadline, stop, weights)
    dashboard = None if a.no_dashboard else _serve_dashboard(sup)
    threading.Thread(target=_membership_on_start, args=(sup, a.add_node, a.retire_node, stop),
                     daemon=True, name="launcher-membership").start()
    try:
        if a.chaos:
            events.emit("info", f"chaos seed {seed} (replay with --chaos --seed {seed})")
            threading.Thread(target=nemesis.run, daemon=True, name="launcher-nemesis-start").start()
        if live:
            view = LiveView(sup)
            view.footer = f"chaos seed {seed}" if a.chaos else ""
            view.run(stop)
        else:
            while not stop.wait(0.5):
                pass
    finally:
        nemesis.close()
        if dashboard is not None:
            dashboard.stop()
        sup.stop()
    print(_summary(sup, nemesis.runner, seed if a.chaos else None, time.monotonic() - started),
          flush=True)
    return 0


def _serve_dashboard(sup: ClusterSupervisor) -> DashboardThread | None:
    """Serve the dashboard at the cluster's dashboard URL; None (and a warning) if not."""
    url = urlsplit(sup.dashboard)
    if not url.hostname or not url.port:
        sup.events.emit("warn", f"no dashboard: cannot serve URL {sup.dashboard!r}")
        return None
    from udpraft.dashboard.server import DashboardThread

    dash = DashboardThread(DashboardControl(sup), url.hostname, url.port)
    try:
        dash.start()
    except (OSError, RuntimeError) as e:
        dash.stop()
        sup.events.emit("warn", f"no dashboard at {sup.dashboard}: {e}")
        return None
    sup.events.emit("info", f"dashboard: {sup.dashboard} (open it in a browser)")
    return dash


def _launcher_running(data_dir: Path) -> bool:
    """Does another launcher hold DIR right now?"""
    if not (data_dir / LOCK_FILE).exists():
        return False
    try:
        unlock_dir(lock_dir(data_dir / LOCK_FILE))
    except DirLocked:
        return True
    except OSError:
        return False
    return False


def _forward_membership(a: argparse.Namespace) -> int:
    """--add-node / --retire-node for the launcher already running on DIR."""
    from launcher.ctl import main as ctl_main

    rc = 0
    for _ in range(a.add_node):
        rc = rc or ctl_main(["--data-dir", a.data_dir, "add-node"])
    for nid in a.retire_node:
        rc = rc or ctl_main(["--data-dir", a.data_dir, "retire-node", nid])
    return rc


def _membership_on_start(sup: ClusterSupervisor, add: int, retire: list[str],
                         stop: threading.Event) -> None:
    """Once the cluster is up: drop listed nodes it has removed, then --add-node/--retire-node."""
    while not sup.wait_ready(1.0):
        if stop.is_set():
            return
    if sup.wait_leader(15.0) is None:
        if add or retire:
            sup.events.emit("warn", "no leader: --add-node / --retire-node not done")
        return
    try:
        sup.reconcile()
    except Exception as e:  # never take the launcher down over this
        sup.events.emit("warn", f"membership check failed: {e!r}")
    todo: list[str | None] = [None] * add + list(retire)
    for nid in todo:
        if stop.is_set():
            return
        try:
            if nid is None:
                out = sup.add_node()
                sup.events.emit("info", f"added {out['node']} (udp {out['udp']}, http "
                                f"{out['http']})", out["node"])
            else:
                sup.retire_node(nid)
        except (MemberError, KeyError) as e:
            what = "add a node" if nid is None else f"retire {nid}"
            sup.events.emit("warn", f"could not {what}: {e}")


class _NemesisStarter:
    """Waits for every node to answer, then plays the schedule over what is left of the run."""

    def __init__(self, sup: ClusterSupervisor, seed: int, deadline: float | None,
                 stop: threading.Event, weights: Mapping[str, float] = DEFAULT_WEIGHTS) -> None:
        self.sup, self.seed, self.deadline, self.stop = sup, seed, deadline, stop
        self.weights = weights
        self.runner: NemesisRunner | None = None
        self._lock = threading.Lock()
        self._closed = False

    def run(self) -> None:
        while not self.sup.wait_ready(1.0):
            if self.stop.is_set():
                return
        left = self.deadline - time.monotonic() if self.deadline is not None else None
        with self._lock:
            if self._closed or (left is not None and left <= 0):
                return
            self.runner = NemesisRunner(self.sup, self.seed, left, weights=self.weights)
            self.runner.start()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self.runner is not None:
                self.runner.stop()


def _summary(
    sup: ClusterSupervisor, runner: NemesisRunner | None, seed: int | None, ran_s: float
) -> str:
    restarts = sum(sup.restarts(n) for n in sup.ids)
    parts = [f"launcher cluster={sup.config.cluster} nodes={len(sup.ids)}",
             f"ran_s={ran_s:.1f} restarts={restarts} faults={sup.events.faults_written}"]
    if seed is not None:
        healthy = runner.healthy_at_end if runner is not None else None
        parts.append(f"chaos_seed={seed} healthy_at_end="
                     + ("unknown" if healthy is None else str(healthy).lower()))
    return " ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
