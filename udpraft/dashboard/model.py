"""The dashboard's picture of the cluster: from node answers to one JSON snapshot.

How this works: the poller (server.py) stores each node's latest ``/status`` and
``/log?tail=N`` answer in a ``NodeTrack`` with the monotonic time it arrived, and keeps a
short history of counter samples there. ``build_snapshot`` turns tracks, the launcher's view
and the ``Timeline`` into the dict that every browser gets (about four times a second):

- per node: the role to show (a node the launcher reports down, paused or stopped shows
  that; one whose answer is older than ``STATUS_FRESH_S`` shows "no answer", with its last
  known numbers), term, vote, leader, commit/applied/last index, drops and retransmits, and
  message rates computed over the last ``RATE_WINDOW_S`` from counter deltas (a restarted
  node's counters start again at zero: only samples of its current pid count);
- per directed link: messages per second sent and received, and the fault on it (cut,
  delay, loss) as the sending node's fault hook reports it;
- the log tails side by side, one column per index; an entry whose term differs from the
  one that index holds where it is committed (or, failing that, on the leader) is marked
  ``conflict``: Raft will overwrite it (§5.3);
- the timeline: elections and leadership from the nodes' own role events, starts, deaths,
  restarts, faults and heals from the launcher, and the dashboard's own actions.

Everything here is pure (time comes in as arguments), so the unit tests drive it directly.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

STATUS_FRESH_S = 1.2  # an older /status answer no longer counts as the node's state
RATE_WINDOW_S = 1.0
SAMPLES_KEEP = 16  # counter samples per node: > RATE_WINDOW_S at 4 polls a second
LOG_COLUMNS = 12  # indexes shown side by side
TIMELINE_KEEP = 200  # items remembered; older ones are dropped
TIMELINE_SENT = 60  # items sent in each snapshot
ROLE_TEXT = {"candidate": "starts an election for term {term}",
             "leader": "wins the election: leader of term {term}"}


@dataclass(frozen=True, slots=True)
class Sample:
    mono: float
    pid: int
    link_out: dict[str, int]
    link_in: dict[str, int]
    drops: int
    retransmits: int


@dataclass(slots=True)
class NodeTrack:
    """What the poller last heard from one node (only the poller writes it)."""

    id: str
    status: dict[str, Any] | None = None
    status_mono: float = 0.0
    log: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""
    samples: deque[Sample] = field(default_factory=lambda: deque(maxlen=SAMPLES_KEEP))

    def record(self, status: dict[str, Any], now: float) -> None:
        self.status, self.status_mono, self.error = status, now, ""
        self.samples.append(sample_of(status, now))

    def fresh(self, now: float) -> bool:
        return self.status is not None and now - self.status_mono <= STATUS_FRESH_S


def _int(v: Any) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return 0


def drop_counts(status: dict[str, Any]) -> tuple[int, int]:
    """(dropped by the injected fault hook, dropped by the transport or runtime)."""
    faults = status.get("faults") or {}
    injected = _int(faults.get("dropped_out")) + _int(faults.get("dropped_in"))
    counters = status.get("counters") or {}
    other = sum(_int(v) for k, v in counters.items()
                if k.startswith(("transport_drop_", "drop_", "transport_gave_up")))
    return injected, other


def sample_of(status: dict[str, Any], now: float) -> Sample:
    links = status.get("links") or {}
    injected, other = drop_counts(status)
    return Sample(
        now, _int(status.get("pid")),
        {p: _int(v.get("out")) for p, v in links.items() if isinstance(v, dict)},
        {p: _int(v.get("in")) for p, v in links.items() if isinstance(v, dict)},
        injected + other, _int((status.get("counters") or {}).get("transport_retransmits")),
    )


def rates(samples: deque[Sample]) -> dict[str, Any]:
    """Per-second rates over about RATE_WINDOW_S, from samples of the latest pid only."""
    if not samples:
        return {"out": {}, "in": {}, "drops": 0.0, "retransmits": 0.0}
    last = samples[-1]
    base = last
    for s in reversed(samples):
        if s.pid != last.pid:
            break
        base = s
        if last.mono - s.mono >= RATE_WINDOW_S:
            break
    dt = last.mono - base.mono
    if dt <= 0:
        return {"out": dict.fromkeys(last.link_out, 0.0), "in": dict.fromkeys(last.link_in, 0.0),
                "drops": 0.0, "retransmits": 0.0}

    def per_s(a: int, b: int) -> float:
        return round(max(0, a - b) / dt, 1)

    return {
        "out": {p: per_s(v, base.link_out.get(p, 0)) for p, v in last.link_out.items()},
        "in": {p: per_s(v, base.link_in.get(p, 0)) for p, v in last.link_in.items()},
        "drops": per_s(last.drops, base.drops),
        "retransmits": per_s(last.retransmits, base.retransmits),
    }


# ---------------------------------------------------------------------------- timeline


class Timeline:
    """The latest TIMELINE_KEEP events, ordered by time, each kept once."""

    def __init__(self) -> None:
        self._items: list[dict[str, Any]] = []
        self._keys: set[tuple[float, str, str, str]] = set()

    @staticmethod
    def _key(item: dict[str, Any]) -> tuple[float, str, str, str]:
        return (round(float(item["ts"]), 3), str(item["kind"]), str(item.get("node", "")),
                str(item["text"]))

    def add(self, items: list[dict[str, Any]]) -> int:
        """Add the items not seen before; returns how many were new."""
        new = []
        for it in items:
            try:
                key = self._key(it)
            except (KeyError, TypeError, ValueError):
                continue
            if key not in self._keys:
                self._keys.add(key)
                new.append({"ts": key[0], "kind": key[1], "node": key[2], "text": key[3]})
        if new:
            self._items.extend(new)
            self._items.sort(key=lambda i: i["ts"])
            if len(self._items) > TIMELINE_KEEP:
                del self._items[: len(self._items) - TIMELINE_KEEP]
                self._keys = {self._key(i) for i in self._items}
        return len(new)

    def latest(self, n: int = TIMELINE_SENT) -> list[dict[str, Any]]:
        return self._items[-n:]


def node_events(node_id: str, status: dict[str, Any]) -> list[dict[str, Any]]:
    """Timeline items from a node's own role events (elections won and started)."""
    out = []
    for ev in status.get("events") or []:
        if not isinstance(ev, dict) or ev.get("role") not in ROLE_TEXT:
            continue
        kind = "elected" if ev["role"] == "leader" else "election"
        text = f"{node_id} " + ROLE_TEXT[str(ev["role"])].format(term=_int(ev.get("term")))
        out.append({"ts": ev.get("ts", 0.0), "kind": kind, "node": node_id, "text": text})
    return out


def launcher_events(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The launcher's events, less its own "leader is" lines (the nodes report those)."""
    return [i for i in items
            if not (i.get("kind") == "leader" and str(i.get("text", "")).startswith("leader is"))]


# ---------------------------------------------------------------------------- snapshot


def shown_role(state: str, track: NodeTrack, now: float) -> str:
    if state in ("down", "held", "paused", "starting"):
        return {"held": "stopped"}.get(state, state)
    if not track.fresh(now):
        return "no answer"
    return str((track.status or {}).get("role", "unknown"))


def _node_view(track: NodeTrack, lnode: dict[str, Any], now: float) -> dict[str, Any]:
    st = track.status or {}
    state = str(lnode.get("state", "up"))
    role = shown_role(state, track, now)
    live = role not in ("down", "stopped", "paused", "starting", "no answer")
    injected, other = drop_counts(st)
    progress = []
    if live and role == "leader":
        last = _int(st.get("last_log_index"))
        for peer, p in sorted((st.get("progress") or {}).items()):
            if isinstance(p, dict):
                match = _int(p.get("match"))
                progress.append({"peer": peer, "match": match, "next": _int(p.get("next")),
                                 "state": str(p.get("state", "")), "lag": max(0, last - match)})
    r = rates(track.samples) if live else {"out": {}, "in": {}, "drops": 0.0, "retransmits": 0.0}
    return {
        "id": track.id, "state": state, "role": role, "live": live,
        "pid": _int(lnode.get("pid")), "restarts": _int(lnode.get("restarts")),
        "cpu_pct": round(float(lnode.get("cpu_pct") or 0.0), 1),
        "rss_bytes": _int(lnode.get("rss_bytes")), "last_fault": str(lnode.get("last_fault", "")),
        "age_s": round(now - track.status_mono, 1) if track.status is not None else None,
        "term": _int(st.get("term")), "vote": str(st.get("vote") or ""),
        "leader": str(st.get("leader") or ""),
        "commit_index": _int(st.get("commit_index")),
        "applied_index": _int(st.get("applied_index")),
        "last_log_index": _int(st.get("last_log_index")),
        "last_log_term": _int(st.get("last_log_term")),
        "progress": progress,
        "drops": {"injected": injected, "transport": other, "per_s": r["drops"]},
        "retransmits": {"total": _int((st.get("counters") or {}).get("transport_retransmits")),
                        "per_s": r["retransmits"]},
        "rates": {"out": r["out"], "in": r["in"]},
        "faults": _fault_summary(st.get("faults") or {}) if live else {},
        "error": track.error,
    }


def _fault_summary(f: dict[str, Any]) -> dict[str, Any]:
    return {"all": f.get("all") or {}, "peers": f.get("peers") or {},
            "partition": list(f.get("partition") or [])}


def link_fault(faults: dict[str, Any], peer: str) -> dict[str, Any]:
    """The fault on the link to ``peer`` as the sender's hook applies it."""
    if peer in (faults.get("partition") or []):
        return {"cut": True, "delay_ms": 0.0, "drop_pct": 0.0, "jitter_ms": 0.0}
    link = (faults.get("peers") or {}).get(peer) or faults.get("all") or {}
    return {"cut": False, "delay_ms": float(link.get("delay_ms") or 0.0),
            "drop_pct": float(link.get("drop_pct") or 0.0),
            "jitter_ms": float(link.get("jitter_ms") or 0.0)}


def _links(ids: list[str], views: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for a in ids:
        for b in ids:
            if a == b:
                continue
            va, vb = views[a], views[b]
            out.append({
                "from": a, "to": b, "up": bool(va["live"] and vb["live"]),
                "out_per_s": va["rates"]["out"].get(b, 0.0) if va["live"] else 0.0,
                "in_per_s": vb["rates"]["in"].get(a, 0.0) if vb["live"] else 0.0,
                **(link_fault(va["faults"], b) if va["live"] else
                   {"cut": False, "delay_ms": 0.0, "drop_pct": 0.0, "jitter_ms": 0.0}),
            })
    return out


def log_matrix(
    ids: list[str], tracks: dict[str, NodeTrack], leader: str | None, live: set[str],
    columns: int = LOG_COLUMNS,
) -> dict[str, Any]:
    """The last ``columns`` indexes of every live node's log tail, aligned by index."""
    logs = {nid: {_int(e.get("index")): e for e in tracks[nid].log if isinstance(e, dict)}
            for nid in ids if nid in live}
    top = max((max(lg) for lg in logs.values() if lg), default=0)
    first = max(1, top - columns + 1)
    indexes = list(range(first, top + 1)) if top else []
    reference: dict[int, int] = {}
    for i in indexes:
        committed = [_int(lg[i].get("term")) for lg in logs.values()
                     if i in lg and lg[i].get("committed")]
        if committed:
            reference[i] = committed[0]
        elif leader in logs and i in logs[leader]:
            reference[i] = _int(logs[leader][i].get("term"))
    rows: dict[str, list[dict[str, Any] | None]] = {}
    for nid in ids:
        lg = logs.get(nid)
        if lg is None:
            continue
        row: list[dict[str, Any] | None] = []
        for i in indexes:
            e = lg.get(i)
            if e is None:
                row.append(None)
                continue
            term = _int(e.get("term"))
            row.append({"index": i, "term": term, "kind": str(e.get("kind", "")),
                        "data": str(e.get("data", ""))[:32], "size": _int(e.get("size")),
                        "committed": bool(e.get("committed")),
                        "conflict": i in reference and reference[i] != term})
        rows[nid] = row
    return {"indexes": indexes, "rows": rows}


def build_snapshot(
    cluster: str, ids: list[str], tracks: dict[str, NodeTrack],
    launcher_nodes: list[dict[str, Any]], timeline: Timeline, now: float, wall: float,
    seq: int, viewers: int = 0,
) -> dict[str, Any]:
    by_id = {str(n.get("id")): n for n in launcher_nodes}
    views = {nid: _node_view(tracks[nid], by_id.get(nid, {}), now) for nid in ids}
    live = {nid for nid, v in views.items() if v["live"]}
    leaders = [v for v in views.values() if v["live"] and v["role"] == "leader"]
    leader = max(leaders, key=lambda v: v["term"]) if leaders else None
    term = max((v["term"] for v in views.values() if v["live"]), default=0)
    commit = leader["commit_index"] if leader else max(
        (v["commit_index"] for v in views.values() if v["live"]), default=0)
    who = f"Leader {leader['id']} (term {leader['term']})" if leader else "No leader"
    summary = (f"{who} · {len(live)} of {len(ids)} nodes answering · "
               f"{commit} {'entry' if commit == 1 else 'entries'} committed")
    return {
        "seq": seq, "ts": round(wall, 3), "cluster": cluster, "summary": summary,
        "leader": leader["id"] if leader else None, "leader_term": leader["term"] if leader else 0,
        "term": term, "commit_index": commit,
        "nodes": [views[nid] for nid in ids],
        "links": _links(ids, views),
        "log": log_matrix(ids, tracks, leader["id"] if leader else None, live),
        "timeline": timeline.latest(),
        "viewers": viewers,
    }
