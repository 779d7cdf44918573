"""``ClusterSupervisor``: start, watch, restart, fault and stop a cluster of node processes.

How this works: ``start()`` takes ``DIR/.launcher.lock`` (flock: one launcher per data dir),
writes ``DIR/secret`` and the boot file, stops nodes that a launcher killed with -9 left
behind, checks every port, and spawns one ``python -m udpraft.node`` per node (own session,
so a terminal's Ctrl-C reaches only the launcher; output appended to ``DIR/<id>.log``).
Then threads take over:

- one poller per node GETs ``/status`` every ``poll_interval_s`` (a paused node costs its own
  poller a timeout, nobody else's); an answer counts only if its ``pid`` is the current one;
- the monitor (every 50 ms) reaps dead processes and schedules restarts with backoff
  (``backoff_s`` doubling to ``backoff_s_max``; reset after ``stable_s`` of uptime), starts
  them when due, publishes ``DIR/cluster.json`` once every node has answered and rewrites it
  whenever a pid changes, follows the leader, and samples CPU and RSS with psutil.

Membership (``add_node``, ``retire_node``: membership.py; one at a time, see members.py):
a fresh node gets a never-used id, free ports and ``DIR/<id>``; it is listed in the boot
file and cluster.json (whose ``initial_voters`` stay as they were, so it starts as an
empty joiner), spawned and supervised like the others, added as a learner, and promoted
once it has caught up. A retired node is removed through the cluster first; once that is committed its process
is stopped for good and it leaves both files (its data dir stays, never started again).

A node that lost its data (a wiped data dir; with ``--storage memory``, any node that had
answered and died) is never restarted under its id: it could vote without what it
acknowledged. The check (wiped.py: the launcher's marker in its data dir) runs when it dies,
when it is due to start, at start-up and under a running node; a wiped node is held for good
and replaced from a thread of its own (``add_node``, then ``retire_node`` of the old id,
each retried with backoff until ``replace_timeout_s``). ``wipe`` does it on purpose.

Faults go through the same object (``kill``, ``pause``/``resume``, ``partition``,
``degrade``, ``heal``) and are recorded in ``DIR/faults.jsonl``. ``stop()`` ends it all:
SIGCONT (a stopped process would sit on SIGTERM), SIGTERM, wait up to ``stop_grace_s``,
SIGKILL the stragglers, reap them, and leave pids 0 in cluster.json.

The supervisor reaches nodes only through processes, signals, ports and files.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from launcher import layout, nodeapi, wiped
from launcher.events import EventLog
from launcher.faults import FaultOps, NetFaults
from launcher.membership import MembershipOps
from launcher.procs import (
    DirLocked,
    NodeProc,
    NodeView,
    SupervisorOptions,
    Tracking,
    is_node_process,
    leftover_nodes,
    lock_dir,
    log_tail,
    sample_process,
    send_signal,
    signame,
    stop_pids,
    unlock_dir,
)
from udpraft.config import ClusterConfig, ensure_secret

__all__ = ["ClusterSupervisor", "NodeView", "SupervisorOptions"]

PROJECT_ROOT = Path(__file__).resolve().parents[1]
MONITOR_INTERVAL_S = 0.05
RESOURCE_INTERVAL_S = 1.0
STATUS_FRESH_S = 1.5  # an older /status answer no longer counts
NO_LEADER_REPORT_S = 1.0  # "no leader" is reported once it lasts this long
SLOW_START_WARN_S = 20.0  # say which nodes keep cluster.json from being written
LOCK_FILE = ".launcher.lock"
BUSY_RETRIES = 3  # a busy port is checked again this many times, BUSY_RETRY_S apart
BUSY_RETRY_S = 0.3


class ClusterSupervisor(FaultOps, MembershipOps):
    def __init__(self, opts: SupervisorOptions, events: EventLog | None = None) -> None:
        self.opts = opts
        self.data_dir = Path(opts.data_dir)
        plan = layout.plan_cluster(self.data_dir, opts.nodes, opts.host, opts.base_port)
        self.plan = plan
        self.config: ClusterConfig = plan.config
        self.cluster_file = self.data_dir / layout.CLUSTER_FILE
        self.boot_file = self.data_dir / layout.BOOT_FILE
        self.events = events or EventLog(self.data_dir / layout.FAULTS_FILE)
        self._nodes = {a.id: NodeProc(a, opts.backoff_s) for a in self.config.nodes}
        self._lock = threading.RLock()
        self._file_lock = threading.Lock()
        self._stop = threading.Event()
        self._t = Tracking()
        self._lock_fd: int | None = None
        self._started_mono = time.monotonic()
        self._member_lock = threading.Lock()  # one add_node / retire_node at a time
        self._replacements: dict[str, str] = {}  # wiped node -> the fresh node replacing it
        self._net: dict[str, NetFaults] = {}  # network faults in force per node (faults.py)
        if plan.reused:  # a node an earlier launcher started here had state to lose
            for n in self._nodes.values():
                n.ran = (self.data_dir / f"{n.addr.id}.log").exists()

    # ================================================================ lifecycle

    @property
    def ids(self) -> list[str]:
        with self._lock:  # add_node / retire_node change the set from another thread
            return list(self._nodes)

    @property
    def dashboard(self) -> str:
        return self.config.dashboard

    def start(self) -> None:
        """Spawn every node and the watching threads. Raises LayoutError on a busy port or
        when another launcher holds the data dir (nothing is started then)."""
        self._started_mono = time.monotonic()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._lock_fd = lock_dir(self.data_dir / LOCK_FILE)
        except DirLocked as e:
            raise layout.LayoutError(str(e)) from None
        try:
            # the boot file first: it keeps the cluster's identity while cluster.json is gone
            ensure_secret(self.data_dir)
            layout.write_cluster(self.boot_file, self.config)
            layout.remove_quietly(self.cluster_file)  # it reappears once this run's nodes answer
            self._stop_leftovers()
            busy = layout.busy_ports(self.config)
            for _ in range(BUSY_RETRIES):  # a port lent to a passing connection comes back
                if not busy:
                    break
                time.sleep(BUSY_RETRY_S)
                busy = layout.busy_ports(self.config)
            if busy:
                raise layout.LayoutError("; ".join(busy) + self._leftover_hint()
                                         + layout.ephemeral_note(self.config))
        except BaseException:
            if not self.plan.reused:  # a fresh layout that never ran: let --base-port choose again
                layout.remove_quietly(self.boot_file)
            self._unlock()
            raise
        for note in self.plan.notes:
            self.events.emit("info", note)
        with self._lock:
            for n in self._nodes.values():
                self._start_or_replace(n)
        threads = [threading.Thread(target=self._monitor, name="launcher-monitor", daemon=True)]
        threads += [
            threading.Thread(target=self._poll, args=(n,), name=f"launcher-poll-{n.addr.id}",
                             daemon=True)
            for n in self._nodes.values()
        ]
        self._t.threads = threads
        for t in threads:
            t.start()

    def _stop_leftovers(self) -> None:
        found = leftover_nodes(self.boot_file.resolve())
        for pid, cmd in found:
            self.events.emit("warn", f"stopping pid {pid}, a node left running by an earlier "
                             f"launcher: {cmd}")
        if found:
            stop_pids([pid for pid, _ in found], self.opts.stop_grace_s)

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            unlock_dir(self._lock_fd)
            self._lock_fd = None

    def _leftover_hint(self) -> str:
        alive = [f"{nid} pid {pid}" for nid, pid in self.plan.previous_pids
                 if is_node_process(pid)]
        if alive:
            return (" — nodes of an earlier run still hold them (" + ", ".join(alive)
                    + "); stop those processes first")
        return " — pick another --base-port, or stop what holds it"

    def stop(self) -> None:
        """Stop every node (SIGTERM, then SIGKILL after stop_grace_s) and the threads."""
        with self._lock:
            if self._t.stopping:
                return
            self._t.stopping = True
        self._stop.set()
        for t in self._t.threads:
            t.join(timeout=5.0)
        with self._lock:
            procs = [(n.addr.id, n.proc) for n in self._nodes.values() if n.proc is not None]
        for _, p in procs:
            send_signal(p.pid, signal.SIGCONT)
            send_signal(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.opts.stop_grace_s
        for nid, p in procs:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.events.emit("warn", f"{nid} (pid {p.pid}) ignored SIGTERM; SIGKILL", nid)
                p.kill()
                p.wait()
        with self._lock:
            for n in self._nodes.values():
                n.proc, n.pid, n.status, n.answered = None, 0, None, False
            published = self._t.published
        if published:
            self._write_cluster_file()
        if self._t.threads:
            self.events.emit("info", f"stopped {len(procs)} node process(es)")
        self.events.close()
        self._unlock()

    def __enter__(self) -> ClusterSupervisor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ================================================================ processes

    def _start_or_replace(self, n: NodeProc) -> None:
        """Start the node, unless it lost the data it acknowledged: then replace it."""
        reason = self._wiped_reason(n)
        if reason:
            self._begin_replace(n, reason)
        else:
            self._spawn(n)

    def _wiped_reason(self, n: NodeProc) -> str:
        return wiped.wiped_reason(n.addr.data_dir, self.opts.storage, ran_before=n.ran,
                                  marked=n.marked, answered_before=n.ever_answered)

    def _spawn(self, n: NodeProc) -> None:
        nid = n.addr.id
        data_dir = Path(n.addr.data_dir).resolve()
        if self.opts.storage != "memory" and not n.marked:
            try:  # the dir is fine (checked by the caller): from now on its marker vouches
                wiped.write_marker(data_dir, nid, self.config.cluster)
                n.marked = True
            except OSError as e:
                self.events.emit("warn", f"cannot mark {data_dir} ({e}); a wipe of it is "
                                 "noticed only by its missing log files", nid)
        n.ran = True
        cmd = [
            self.opts.python, "-m", "udpraft.node", "--id", nid,
            "--cluster-config", str(self.boot_file.resolve()),
            "--data-dir", str(data_dir), "--storage", self.opts.storage,
            "--exit-with-parent",  # a launcher killed with -9 leaves no orphans behind
            # The node itself re-checks the marker right before it opens its store: a wipe
            # between the supervisor's check and the start cannot slip through.
            *(["--require-file", wiped.MARKER] if n.marked else []),
            *self.opts.node_args,
        ]
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        env["UDPRAFT_SECRET_FILE"] = str((self.data_dir / "secret").resolve())
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p
        )
        with open(self.data_dir / f"{nid}.log", "ab") as out:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            out.write(f"=== launcher {stamp}: starting {nid} (start #{n.restarts + 1})\n".encode())
            out.flush()
            n.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, env=env,
            )
        n.pid = n.proc.pid
        n.started_mono = time.monotonic()
        n.restart_at, n.answered, n.status, n.paused, n.ps = None, False, None, False, None
        first = n.restarts == 0
        text = f"{nid} started as pid {n.pid}" if first else (
            f"{nid} restarted as pid {n.pid} (restart #{n.restarts})")
        self.events.emit("started" if first else "restarted", text, nid)
        if self._t.published:
            self._write_cluster_file()

    def _reap(self, n: NodeProc, now: float) -> None:
        assert n.proc is not None
        rc = n.proc.poll()
        if rc is None:
            return
        nid, pid = n.addr.id, n.pid
        uptime = now - n.started_mono
        n.proc, n.status, n.answered, n.paused, n.ps = None, None, False, False, None
        how = f"exit code {rc}" if rc >= 0 else f"{signame(-rc)}"
        if n.held:
            self.events.emit("died", f"{nid} (pid {pid}) stopped: {how}", nid)
            return
        reason = self._wiped_reason(n)
        if reason:
            self.events.emit("died", f"{nid} (pid {pid}) died: {how} after {uptime:.1f}s; "
                             "not restarted", nid)
            self._begin_replace(n, reason)
            return
        if n.restart_now:
            delay, n.restart_now = 0.0, False
        else:
            if uptime >= self.opts.stable_s:
                n.backoff_s = self.opts.backoff_s
            delay = n.backoff_s
            n.backoff_s = min(n.backoff_s * 2, self.opts.backoff_s_max)
        n.restarts += 1
        n.restart_at = now + delay
        tail = log_tail(self.data_dir / f"{nid}.log") if rc > 0 else ""
        self.events.emit(
            "died", f"{nid} (pid {pid}) died: {how} after {uptime:.1f}s; restart in {delay:.1f}s"
            + (f" — {tail}" if tail else ""), nid)

    def _monitor(self) -> None:
        next_sample = 0.0
        while not self._stop.wait(MONITOR_INTERVAL_S):
            now = time.monotonic()
            try:
                with self._lock:
                    if self._t.stopping:
                        return
                    self._supervise(now)
                if now >= next_sample:
                    next_sample = now + RESOURCE_INTERVAL_S
                    self._sample_resources()
                    self._follow_others()
            except Exception as e:  # supervision must outlive a bad moment (full disk, ...)
                self.events.emit("warn", f"monitor: {e!r}")
                self._stop.wait(1.0)

    def _supervise(self, now: float) -> None:
        for n in list(self._nodes.values()):
            if n.proc is not None:
                self._reap(n, now)
                if n.proc is not None and n.marked and not wiped.has_marker(n.addr.data_dir):
                    self._wiped_while_running(n)
            elif n.restart_at is not None and now >= n.restart_at and not n.held:
                try:
                    self._start_or_replace(n)
                except OSError as e:
                    n.restart_at = now + self.opts.backoff_s_max
                    self.events.emit("warn", f"cannot start {n.addr.id}: {e}", n.addr.id)
        live = [n for n in self._nodes.values() if not n.wiped]
        if not self._t.published and live and all(n.answered for n in live):
            self._write_cluster_file()
            self._t.published = True  # only now: wait_ready() promises the file exists
            self.events.emit("info", f"all {len(live)} nodes answer; wrote "
                             f"{self.cluster_file}")
        self._warn_slow_start(now)
        self._track_leader(now)

    def _warn_slow_start(self, now: float) -> None:
        if self._t.published or self._t.warned_slow or now - self._started_mono < SLOW_START_WARN_S:
            return
        self._t.warned_slow = True
        quiet = [n.addr.id for n in self._nodes.values() if not n.answered and not n.wiped]
        logs = ", ".join(str(self.data_dir / f"{nid}.log") for nid in quiet)
        self.events.emit("warn", f"still waiting for {', '.join(quiet)} to answer before "
                         f"writing cluster.json; see {logs}")

    def _poll(self, n: NodeProc) -> None:
        addr = n.addr.http
        while not self._stop.is_set() and not n.retired:
            st = nodeapi.get_status(addr, self.opts.status_timeout_s)
            came_back = False
            with self._lock:
                if st is not None and st.get("pid") == n.pid and n.proc is not None:
                    n.status, n.status_mono = st, time.monotonic()
                    if not n.answered:
                        came_back = n.ever_answered
                        n.answered = n.ever_answered = True
                        self.events.emit("up", f"{n.addr.id} answers (pid {n.pid}, "
                                         f"{st.get('role')}, term {st.get('term')})", n.addr.id)
            if came_back:  # a restart: its fault hook is empty, the network is not
                self.restore_net_faults(n.addr.id)
            self._stop.wait(self.opts.poll_interval_s)

    def _track_leader(self, now: float) -> None:
        leader, term = self._leader_locked(now)
        if leader is not None:
            self._t.no_leader_since = None
            if (leader, term) != (self._t.leader, self._t.term):
                self._t.leader, self._t.term = leader, term
                self.events.emit("leader", f"leader is {leader} (term {term})", leader)
        elif self._t.leader is not None:
            if self._t.no_leader_since is None:
                self._t.no_leader_since = now
            elif now - self._t.no_leader_since >= NO_LEADER_REPORT_S:
                self.events.emit("leader", f"no leader (was {self._t.leader})")
                self._t.leader = None

    def _sample_resources(self) -> None:
        with self._lock:
            todo = [(n, n.pid, n.ps) for n in self._nodes.values() if n.proc is not None]
        for n, pid, ps in todo:
            got = sample_process(ps, pid)
            if got is None:
                continue
            with self._lock:
                if n.pid == pid:
                    n.ps, n.cpu_pct, n.rss_bytes = got

    def _follow_others(self) -> None:
        """Faults injected by other tools (launcher ctl): show them, track pauses, keep
        their network faults for nodes that restart inside them."""
        for rec in self.events.follow():
            self.learn_fault(rec)
            with self._lock:
                for nid in rec["targets"]:
                    n = self._nodes.get(str(nid))
                    if n is None:
                        continue
                    if rec.get("kind") == "heal":
                        n.paused = False
                    else:
                        n.paused = n.paused or rec.get("kind") == "pause"
                        n.last_fault = str(rec.get("kind"))

    def _write_cluster_file(self) -> None:
        with self._lock:
            cfg = layout.with_pids(self.config, {nid: n.pid for nid, n in self._nodes.items()})
        with self._file_lock:
            layout.write_cluster(self.cluster_file, cfg)

    # ================================================================ looking

    def _node(self, node_id: str) -> NodeProc:
        try:
            return self._nodes[node_id]
        except KeyError:
            raise KeyError(f"no node {node_id!r} (have {', '.join(self._nodes)})") from None

    def _fresh(self, n: NodeProc, now: float) -> dict[str, Any] | None:
        if n.status is None or now - n.status_mono > STATUS_FRESH_S:
            return None
        return n.status

    def _leader_locked(self, now: float) -> tuple[str | None, int]:
        best: tuple[str | None, int] = (None, -1)
        for n in self._nodes.values():
            st = self._fresh(n, now)
            if st and st.get("role") == "leader" and int(st.get("term", 0)) > best[1]:
                best = (n.addr.id, int(st.get("term", 0)))
        return best

    def leader(self) -> str | None:
        """The node that says it leads, in the highest term, by fresh /status answers."""
        with self._lock:
            return self._leader_locked(time.monotonic())[0]

    def status(self, node_id: str) -> dict[str, Any] | None:
        """The node's latest /status answer if it is fresh, else None."""
        with self._lock:
            return self._fresh(self._node(node_id), time.monotonic())

    def pids(self) -> dict[str, int]:
        with self._lock:
            return {nid: n.pid for nid, n in self._nodes.items()}

    def restarts(self, node_id: str) -> int:
        with self._lock:
            return self._node(node_id).restarts

    def answering(self, node_id: str) -> bool:
        """Up, not paused, and answered /status recently (since its latest start)."""
        with self._lock:
            n = self._node(node_id)
            return n.answered and not n.paused and self._fresh(n, time.monotonic()) is not None

    def faulty(self) -> set[str]:
        return {nid for nid in self.ids if not self.answering(nid)}

    @property
    def published(self) -> bool:
        return self._t.published

    def wait_until(self, cond: Any, timeout_s: float, step_s: float = 0.05) -> bool:
        deadline = time.monotonic() + timeout_s
        while True:
            if cond():
                return True
            if time.monotonic() >= deadline or self._stop.is_set():
                return bool(cond())
            time.sleep(step_s)

    def wait_ready(self, timeout_s: float = 30.0) -> bool:
        """Until every node has answered and cluster.json is written."""
        return self.wait_until(lambda: self._t.published, timeout_s)

    def wait_leader(self, timeout_s: float = 30.0) -> str | None:
        self.wait_until(lambda: self.leader() is not None, timeout_s)
        return self.leader()

    def wait_healthy(self, timeout_s: float = 30.0) -> bool:
        """Until every node answers and one leader is known."""
        return self.wait_until(lambda: not self.faulty() and self.leader() is not None,
                               timeout_s)

    def snapshot(self) -> list[NodeView]:
        now = time.monotonic()
        with self._lock:
            return [self._view(n, now) for n in self._nodes.values()]

    def _view(self, n: NodeProc, now: float) -> NodeView:
        st = self._fresh(n, now) or {}
        if n.proc is None:
            state = "held" if n.held else "down"
        elif n.paused:
            state = "paused"
        elif not n.answered:
            state = "starting"
        else:
            state = "up" if st else "stale"
        return NodeView(
            n.addr.id, n.pid, state, str(st.get("role", "")), int(st.get("term", 0)),
            str(st.get("leader", "")), int(st.get("commit_index", 0)),
            int(st.get("applied_index", 0)), n.cpu_pct, n.rss_bytes, n.restarts, n.last_fault,
            f"{n.addr.udp[0]}:{n.addr.udp[1]}", f"{n.addr.http[0]}:{n.addr.http[1]}",
        )
