"""Membership and wiped nodes: the ``MembershipOps`` half of ``ClusterSupervisor``.

How this works: ``add_node`` gives a fresh node a never-used id, free ports and
``DIR/<id>``, lists it in the boot file and cluster.json (``initial_voters`` unchanged, so
it starts as an empty joiner), spawns it, adds it as a learner and promotes it once it has
caught up; ``retire_node`` removes a node through the cluster first and, once that is
committed, stops its process for good (its data dir stays). One change at a time
(members.py does the talking to the cluster). A node that lost its data is never restarted
under its id (wiped.py): ``_begin_replace`` holds it and a thread of its own replaces it
(``add_node``, then ``retire_node`` of the old id, each retried with backoff until
``replace_timeout_s``); ``wipe`` does that on purpose. cluster.py owns the state declared
here and the processes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from launcher import layout, members
from launcher.events import EventLog
from launcher.procs import NodeProc, SupervisorOptions, Tracking, send_signal
from udpraft.config import ClusterConfig, NodeAddr, format_addr

REPLACE_RETRY_S = 0.5  # a wiped node's replacement is retried after this, doubling ...
REPLACE_RETRY_MAX_S = 5.0  # ... up to this, until SupervisorOptions.replace_timeout_s
WIPE_WAIT_S = 2.0  # how long wipe() waits for the killed process before deleting its dir


class MembershipOps:
    """Mixin: the supervisor's state and process handling it relies on are declared here."""

    opts: SupervisorOptions
    config: ClusterConfig
    data_dir: Path
    boot_file: Path
    events: EventLog
    _nodes: dict[str, NodeProc]
    _lock: threading.RLock
    _stop: threading.Event
    _t: Tracking
    _member_lock: threading.Lock
    _replacements: dict[str, str]

    @property
    def ids(self) -> list[str]:
        raise NotImplementedError

    def _node(self, node_id: str) -> NodeProc:
        raise NotImplementedError

    def _spawn(self, n: NodeProc) -> None:
        raise NotImplementedError

    def _reap(self, n: NodeProc, now: float) -> None:
        raise NotImplementedError

    def _poll(self, n: NodeProc) -> None:
        raise NotImplementedError

    def _leader_locked(self, now: float) -> tuple[str | None, int]:
        raise NotImplementedError

    def _wiped_reason(self, n: NodeProc) -> str:
        raise NotImplementedError

    def _write_cluster_file(self) -> None:
        raise NotImplementedError

    def answering(self, node_id: str) -> bool:
        raise NotImplementedError

    # ================================================================ membership

    def http_addrs(self) -> list[tuple[str, int]]:
        """Every node's HTTP address, the leader's first."""
        with self._lock:
            leader = self._leader_locked(time.monotonic())[0]
            addrs = [n.addr.http for n in self._nodes.values()]
            if leader is not None:
                addrs.insert(0, self._nodes[leader].addr.http)
        return addrs

    def add_node(self, catch_up_s: float = 60.0, timeout_s: float = 30.0, replacing: str = "",
                 laid_out: list[str] | None = None) -> dict[str, Any]:
        """Add a fresh node to the running cluster: lay it out (new id, free ports, data
        dir), list it in the cluster files, start and supervise it, add it as a learner,
        wait until it has caught up, promote it. Returns {"node", "udp", "http", "voters",
        "learners"}. Raises members.Busy (another change under way), members.Refused, or
        members.MemberError (the node then stays listed if the cluster may have taken it).
        ``replacing``: the wiped node it stands in for (named in the events); ``laid_out``
        gets the new id as soon as it is picked."""
        with self._member_change():
            return self._add_node(catch_up_s, timeout_s, replacing, laid_out)

    def retire_node(self, node_id: str, timeout_s: float = 30.0) -> dict[str, Any]:
        """Remove ``node_id`` from the cluster (it may be the leader); once that is committed,
        stop its process for good and drop it from the cluster files (its data dir stays).
        Returns {"node", "voters", "learners", "removed"}. KeyError for an unknown node."""
        with self._member_change():
            self._node(node_id)
            if len(self._nodes) == 1:
                raise members.Refused(f"{node_id} is the only node")
            self.events.emit("member", f"removing {node_id} from the cluster", node_id)
            mem = members.ensure(self.http_addrs, "remove", node_id, timeout_s=timeout_s,
                                 stop=self._stop.is_set)
            self._forget(node_id)
            self.events.emit("member", f"{node_id} retired (removed, process stopped); voters "
                             f"now {', '.join(mem.get('voters') or [])}", node_id)
            out = {"node": node_id, "voters": mem.get("voters", []),
                   "learners": mem.get("learners", []), "removed": mem.get("removed", [])}
            if len(out["voters"]) < 3:
                out["warning"] = (f"{len(out['voters'])} voter(s) left: the cluster no longer "
                                  "survives the loss of a node; add one with add-node")
                self.events.emit("warn", out["warning"])
            return out

    def reconcile(self) -> list[str]:
        """Stop and drop listed nodes the cluster has removed (a launcher that died between a
        removal and rewriting cluster.json left them listed). Returns the ids dropped."""
        if not self._member_lock.acquire(blocking=False):
            return []
        try:
            mem = members.leader_view(self.http_addrs())
            gone = [nid for nid in self.ids if nid in ((mem or {}).get("removed") or [])]
            for nid in gone:
                if len(self._nodes) > 1:
                    self.events.emit("warn", f"{nid} is listed but the cluster removed it: "
                                     "stopping it for good", nid)
                    self._forget(nid)
            return gone
        finally:
            self._member_lock.release()

    @contextlib.contextmanager
    def _member_change(self) -> Iterator[None]:
        if not self._member_lock.acquire(blocking=False):
            raise members.Busy("another add-node / retire-node is under way; try again")
        try:
            yield
        finally:
            self._member_lock.release()

    def _add_node(self, catch_up_s: float, timeout_s: float, replacing: str = "",
                  laid_out: list[str] | None = None) -> dict[str, Any]:
        if not self._t.published or self._t.stopping:
            raise members.MemberError("the cluster is not up yet (cluster.json not written)")
        view = members.leader_view(self.http_addrs())
        if view is None:
            raise members.MemberError("no leader answers GET /members; try again once the "
                                      "cluster has a leader")
        if not view.get("config_committed", True):
            raise members.Busy("a membership change is still being committed; try again")
        with self._lock:
            if self._t.stopping:  # stop() collects the processes under this lock
                raise members.MemberError("the launcher is stopping")
            nid = members.next_id(members.used_ids(self.config, view, self.data_dir))
            if replacing:
                self._replacements[replacing] = nid
                what = (" lost its in-memory log" if self.opts.storage == "memory"
                        else "'s data dir is gone")
                self.events.emit("warn", f"{replacing}{what}: replacing it with {nid}",
                                 replacing)
            if laid_out is not None:
                laid_out.append(nid)
            udp, http = members.pick_ports(self.config, nid)
            addr = NodeAddr(nid, udp, http, 0, os.path.join(os.fspath(self.data_dir), nid))
            # initial_voters stay as they are: the new node is not one, so it starts empty
            self.config = replace(self.config, nodes=(*self.config.nodes, addr),
                                  initial=self.config.initial_voters)
            n = NodeProc(addr, self.opts.backoff_s)
            self._nodes[nid] = n
            layout.write_cluster(self.boot_file, self.config)  # what its process reads
            try:
                self._spawn(n)  # rewrites cluster.json too
            except OSError:
                self._nodes.pop(nid)
                self.config = replace(self.config, nodes=self.config.nodes[:-1])
                layout.write_cluster(self.boot_file, self.config)
                raise
            t = threading.Thread(target=self._poll, args=(n,), name=f"launcher-poll-{nid}",
                                 daemon=True)
            self._t.threads.append(t)
            t.start()
        udp_s, http_s = format_addr(udp), format_addr(http)
        self.events.emit("member", f"{nid} laid out (udp {udp_s}, http {http_s}, "
                         f"{addr.data_dir}); adding it as a learner", nid)
        try:
            added = members.ensure(self.http_addrs, "add_learner", nid, udp_s, http_s,
                                   timeout_s=timeout_s, stop=self._stop.is_set)
        except members.MemberError as e:
            mem = members.leader_view(self.http_addrs())
            if mem is not None and nid not in (mem.get("members") or {}):
                self._forget(nid)  # the cluster never took it: as if nothing happened
                raise type(e)(f"{nid} not added: {e}") from None
            raise members.MemberError(f"{nid}: {e}; it may still join as a learner "
                                      f"(`retire-node {nid}` drops it)") from None
        deadline = time.monotonic() + catch_up_s
        while True:
            mem = members.leader_view(self.http_addrs())
            if (mem is not None and self.answering(nid)
                    and members.caught_up(mem, nid, int(added.get("config_index", 0)))):
                break
            if time.monotonic() > deadline or self._stop.is_set():
                raise members.MemberError(
                    f"{nid} did not catch up within {catch_up_s:.0f}s; it stays a learner "
                    f"(`retire-node {nid}` drops it)")
            time.sleep(0.1)
        mem = members.ensure(self.http_addrs, "promote", nid, timeout_s=timeout_s,
                             stop=self._stop.is_set)
        self.events.emit("member", f"{nid} is a voter (voters: "
                         f"{', '.join(mem.get('voters') or [])})", nid)
        return {"node": nid, "udp": udp_s, "http": http_s, "data_dir": addr.data_dir,
                "voters": mem.get("voters", []), "learners": mem.get("learners", [])}

    # ================================================================ wiped nodes

    def wipe(self, node_id: str, **details: Any) -> int:
        """A lost disk: SIGKILL the node, wait for it, delete its data dir. The supervisor
        then replaces it (fresh id: learner, voter; the old id removed) instead of
        restarting it. Returns the pid killed (0 if it was not running). Recorded in
        faults.jsonl as ``wipe``. KeyError for an unknown node."""
        with self._lock:  # the monitor cannot restart it between the kill and the delete
            n = self._node(node_id)
            if n.wiped:
                raise members.Refused(f"{node_id} is already being replaced")
            proc, pid = n.proc, (n.pid if n.proc is not None else 0)
            if proc is not None:
                send_signal(pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=WIPE_WAIT_S)
            shutil.rmtree(n.addr.data_dir, ignore_errors=True)
            n.last_fault = "wipe"
            n.ran = True  # it ran here, whatever this run saw of it
            if n.proc is not None:
                self._reap(n, time.monotonic())  # dead: replaced rather than restarted
            if n.proc is None and not n.wiped:
                self._begin_replace(n, self._wiped_reason(n) or f"{n.addr.data_dir} wiped")
        self.events.fault("wipe", [node_id], pid=pid, data_dir=n.addr.data_dir, **details)
        return pid

    def replacement_of(self, node_id: str) -> str | None:
        """The fresh node that stands (or is about to stand) in for a wiped one."""
        with self._lock:
            return self._replacements.get(node_id)

    def is_wiped(self, node_id: str) -> bool:
        """Listed, and lost its data: it is being replaced and never starts again."""
        with self._lock:
            n = self._nodes.get(node_id)
            return n is not None and bool(n.wiped)

    def _wiped_while_running(self, n: NodeProc) -> None:
        """Its marker vanished under a running node: its files are gone (or re-created
        empty), so what it acknowledged no longer survives its next crash. End it now."""
        nid = n.addr.id
        self.events.emit("warn", f"{nid}'s data dir {n.addr.data_dir} was deleted while it "
                         f"ran: killing it (pid {n.pid})", nid)
        send_signal(n.pid, signal.SIGKILL)
        self._begin_replace(n, f"its data dir {n.addr.data_dir} was deleted while it ran")

    def _begin_replace(self, n: NodeProc, reason: str) -> None:
        """Hold the node for good and replace it from a thread of its own (lock held)."""
        nid = n.addr.id
        first = not n.wiped
        n.wiped, n.held, n.restart_at, n.last_fault = reason, True, None, "wiped"
        if not first or self._t.stopping:
            return
        self.events.emit("warn", f"{nid} lost what it acknowledged ({reason}): it is never "
                         "restarted under its id (it could vote without it); replacing it "
                         "with a fresh node", nid)
        threading.Thread(target=self._replace_wiped, args=(nid,), daemon=True,
                         name=f"launcher-replace-{nid}").start()

    def _replace_wiped(self, old: str) -> None:
        """Add a fresh node (learner, caught up, voter), then remove ``old``: the voter
        count never drops. Each step is retried with backoff (another change under way, no
        leader yet, a removal refused) until ``replace_timeout_s``; then ``old`` stays down,
        never restarted, and the event says how to finish by hand."""
        deadline = time.monotonic() + self.opts.replace_timeout_s
        delay, new, last = REPLACE_RETRY_S, "", ""
        while not self._stop.is_set():
            if old not in self.ids:
                return  # retired by someone else meanwhile
            step = "retire" if new else "add"
            try:
                if not new:
                    laid: list[str] = []
                    try:
                        out = self.add_node(catch_up_s=self.opts.replace_catch_up_s,
                                            timeout_s=30.0, replacing=old, laid_out=laid)
                    except members.MemberError:
                        self._drop_stray(laid)
                        raise
                    new = str(out["node"])
                self.retire_node(old, timeout_s=30.0)
                self.events.emit("member", f"{old} replaced by {new}", new)
                return
            except KeyError:
                return
            except members.MemberError as e:
                last = f"{step}: {e}"
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._stop.wait(min(delay, left))
            delay = min(delay * 2, REPLACE_RETRY_MAX_S)
        if not self._stop.is_set():
            self.events.emit(
                "warn", f"gave up replacing {old} after {self.opts.replace_timeout_s:.0f}s "
                f"({last}); it stays down and is never restarted under its id: finish by hand "
                f"with `launcher ctl add-node` (if no fresh node joined) and `retire-node {old}`",
                old)

    def _drop_stray(self, laid: list[str]) -> None:
        """A node laid out by a failed add may linger as a learner: retire it, so the next
        attempt starts clean (best effort; a later attempt retries)."""
        for nid in laid:
            if nid in self.ids:
                with contextlib.suppress(members.MemberError, KeyError):
                    self.retire_node(nid, timeout_s=20.0)

    def _forget(self, node_id: str) -> None:
        """Stop the node's process for good and drop it from the supervisor and the files."""
        with self._lock:
            n = self._node(node_id)
            n.held, n.retired, n.restart_at = True, True, None
            proc = n.proc
        if proc is not None:
            send_signal(proc.pid, signal.SIGCONT)
            send_signal(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=self.opts.stop_grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        with self._lock:
            self._nodes.pop(node_id, None)
            self.config = replace(
                self.config, nodes=tuple(a for a in self.config.nodes if a.id != node_id),
                initial=self.config.initial_voters)
            layout.write_cluster(self.boot_file, self.config)
            if self._t.published:
                self._write_cluster_file()
