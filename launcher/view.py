"""What the launcher shows: a live table on a terminal, plain log lines otherwise.

How this works: on a TTY, ``LiveView`` redraws a rich table about four times a second from
``ClusterSupervisor.snapshot()`` (per node: id, pid, state, role, term, commit/applied
index, CPU %, RSS, restarts, last fault), under it the latest faults and events, and the
dashboard URL. Events are not printed one by one then: the table is the output. Without a
TTY (a pipe, a file, CI), ``PlainPrinter`` writes each event as one timestamped line —
node started/died/restarted/answers, leader changes, faults and heals — and flushes it.
"""

from __future__ import annotations

import threading
from typing import TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from launcher.cluster import ClusterSupervisor
from launcher.events import Event
from launcher.procs import NodeView

REFRESH_PER_S = 4.0
EVENT_LINES = 8

STATE_STYLE = {"up": "green", "starting": "yellow", "stale": "yellow", "paused": "magenta",
               "down": "red", "held": "dim"}
ROLE_STYLE = {"leader": "bold cyan", "candidate": "yellow", "pre_candidate": "yellow"}
EVENT_STYLE = {"fault": "red", "heal": "green", "died": "bold red", "leader": "cyan",
               "warn": "yellow", "restarted": "magenta"}


class PlainPrinter:
    """An ``EventLog`` echo: one line per event, flushed (safe from any thread)."""

    def __init__(self, out: TextIO, prefix: str = "launcher") -> None:
        self.out = out
        self.prefix = prefix
        self._lock = threading.Lock()

    def __call__(self, ev: Event) -> None:
        with self._lock:
            try:
                self.out.write(f"{self.prefix} {ev.line()}\n")
                self.out.flush()
            except (OSError, ValueError):
                pass  # a closed pipe must not stop the cluster; faults.jsonl keeps the faults


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.0f} MiB" if n else "-"


def node_table(views: list[NodeView], title: str) -> Table:
    t = Table(title=title, title_justify="left", expand=False)
    for col, just in (("node", "left"), ("pid", "right"), ("state", "left"), ("role", "left"),
                      ("term", "right"), ("commit", "right"), ("applied", "right"),
                      ("cpu", "right"), ("rss", "right"), ("restarts", "right"),
                      ("last fault", "left")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for v in views:
        t.add_row(
            v.id, str(v.pid or "-"),
            Text(v.state, style=STATE_STYLE.get(v.state, "")),
            Text(v.role or "-", style=ROLE_STYLE.get(v.role, "")),
            str(v.term) if v.role else "-",
            str(v.commit_index) if v.role else "-",
            str(v.applied_index) if v.role else "-",
            f"{v.cpu_pct:.0f}%" if v.pid else "-",
            _mib(v.rss_bytes), str(v.restarts), v.last_fault or "-",
        )
    return t


def render(sup: ClusterSupervisor, footer: str = "", height: int = 0) -> Group:
    """The whole screen; ``height`` (terminal lines, 0 = no limit) trims the event lists so
    the table and the dashboard line stay visible."""
    views = sup.snapshot()
    room = (height - len(views) - 10) // 2 if height else EVENT_LINES
    lines = max(1, min(EVENT_LINES, room))
    leader = sup.leader()
    title = (f"udpraft cluster {sup.config.cluster} — {len(views)} nodes — leader "
             f"{leader or '(none)'} — {sup.data_dir}")
    faults = sup.events.recent(lines, faults_only=True)
    events = [e for e in sup.events.recent(lines * 4) if not e.is_fault][-lines:]
    parts: list[Table | Text] = [node_table(views, title)]
    parts.append(Text("recent faults", style="bold"))
    parts += [Text(e.line(), style=EVENT_STYLE.get(e.kind, "")) for e in faults] or [
        Text("  (none)", style="dim")]
    parts.append(Text("recent events", style="bold"))
    parts += [Text(e.line(), style=EVENT_STYLE.get(e.kind, "")) for e in events]
    ready = "cluster.json written" if sup.published else "waiting for every node to answer"
    parts.append(Text(f"dashboard {sup.dashboard}   cluster file {sup.cluster_file} "
                      f"({ready})   {footer}".rstrip()))
    parts.append(Text("Ctrl-C stops all nodes", style="dim"))
    return Group(*parts)


class LiveView:
    """Redraws ``render(sup)`` until ``stop_event`` is set; run it on the main thread."""

    def __init__(self, sup: ClusterSupervisor, console: Console | None = None) -> None:
        self.sup = sup
        self.console = console or Console()
        self.footer = ""

    def run(self, stop_event: threading.Event) -> None:
        def screen() -> Group:
            return render(self.sup, self.footer, self.console.size.height)

        with Live(screen(), console=self.console, refresh_per_second=REFRESH_PER_S,
                  screen=False, transient=False) as live:
            while not stop_event.wait(1.0 / REFRESH_PER_S):
                live.update(screen())
            live.update(screen())
