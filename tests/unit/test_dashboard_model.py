"""The dashboard's picture of the cluster (udpraft/dashboard/model.py), clock-free, and the
dashboard's import boundary."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

from udpraft.dashboard.hub import Hub
from udpraft.dashboard.model import (
    TIMELINE_KEEP,
    NodeTrack,
    Timeline,
    build_snapshot,
    launcher_events,
    link_fault,
    log_matrix,
    node_events,
    rates,
    sample_of,
)

ROOT = Path(__file__).resolve().parents[2]


def status(nid: str, role: str = "follower", term: int = 2, *, pid: int = 100, out: int = 0,
           retrans: int = 0, dropped: int = 0, **extra: Any) -> dict[str, Any]:
    peers = [p for p in ("n1", "n2", "n3") if p != nid]
    st: dict[str, Any] = {
        "id": nid, "role": role, "term": term, "vote": "n1", "leader": "n1" if role != "candidate" else "",
        "commit_index": 5, "applied_index": 5, "last_log_index": 6, "last_log_term": term,
        "pid": pid, "counters": {"transport_retransmits": retrans, "transport_drop_bad_mac": 1},
        "links": {p: {"out": out, "in": out} for p in peers},
        "faults": {"all": {"drop_pct": 0.0, "delay_ms": 0.0, "jitter_ms": 0.0}, "peers": {},
                   "partition": [], "dropped_out": dropped, "dropped_in": 0, "delayed": 0},
        "events": [],
    }
    st.update(extra)
    return st


def entry(i: int, term: int, committed: bool, data: str = "") -> dict[str, Any]:
    return {"index": i, "term": term, "kind": "normal", "data": data, "size": len(data),
            "committed": committed}


# ---------------------------------------------------------------------------- rates


def test_rates_are_deltas_over_about_a_second() -> None:
    t = NodeTrack("n2")
    for k in range(9):  # 4 samples a second, 20 messages per sample to each peer
        t.record(status("n2", out=20 * k, retrans=k, dropped=2 * k), 10.0 + 0.25 * k)
    r = rates(t.samples)
    assert r["out"] == {"n1": 80.0, "n3": 80.0}
    assert r["retransmits"] == 4.0
    assert r["drops"] == 8.0


def test_rates_restart_from_zero_after_a_restart() -> None:
    t = NodeTrack("n2")
    t.record(status("n2", out=5000, pid=100), 10.0)
    t.record(status("n2", out=5040, pid=100), 10.5)
    t.record(status("n2", out=3, pid=200), 11.0)  # a new process: counters began again
    assert rates(t.samples)["out"]["n1"] == 0.0
    t.record(status("n2", out=13, pid=200), 11.5)
    assert rates(t.samples)["out"]["n1"] == 20.0
    assert rates(NodeTrack("n1").samples)["drops"] == 0.0


def test_sample_counts_injected_and_transport_drops() -> None:
    s = sample_of(status("n1", dropped=7), 1.0)
    assert s.drops == 8  # 7 by the fault hook + 1 transport_drop_*


# ---------------------------------------------------------------------------- links, log


def test_link_fault_prefers_cut_then_per_peer_then_all() -> None:
    f = {"all": {"delay_ms": 10.0}, "peers": {"n2": {"delay_ms": 300.0, "drop_pct": 5.0}},
         "partition": ["n3"]}
    assert link_fault(f, "n3")["cut"] is True
    assert link_fault(f, "n2") == {"cut": False, "delay_ms": 300.0, "drop_pct": 5.0,
                                   "jitter_ms": 0.0}
    assert link_fault(f, "n4")["delay_ms"] == 10.0


def test_log_matrix_aligns_indexes_and_marks_conflicts() -> None:
    tracks = {n: NodeTrack(n) for n in ("n1", "n2", "n3")}
    tracks["n1"].log = [entry(4, 2, True, "a"), entry(5, 3, False, "b"), entry(6, 3, False)]
    tracks["n2"].log = [entry(4, 2, True, "a"), entry(5, 3, False, "b")]
    # n3 was an old leader of term 2 that appended entries nobody else has
    tracks["n3"].log = [entry(4, 2, True, "a"), entry(5, 2, False, "x"), entry(6, 2, False)]
    m = log_matrix(["n1", "n2", "n3"], tracks, "n1", {"n1", "n2", "n3"})
    assert m["indexes"] == [1, 2, 3, 4, 5, 6]
    row3 = m["rows"]["n3"]
    assert row3[0] is None and row3[3]["committed"] and not row3[3]["conflict"]
    assert row3[4]["conflict"] and row3[5]["conflict"]
    assert not m["rows"]["n1"][4]["conflict"] and m["rows"]["n2"][5] is None
    # no leader: only a committed entry is a reference
    m2 = log_matrix(["n1", "n3"], tracks, None, {"n1", "n3"}, columns=3)
    assert m2["indexes"] == [4, 5, 6]
    assert not any(c and c["conflict"] for c in m2["rows"]["n3"])
    # a node that does not answer has no row
    assert "n2" not in log_matrix(["n1", "n2"], tracks, "n1", {"n1"})["rows"]


# ---------------------------------------------------------------------------- timeline


def test_timeline_orders_dedupes_and_is_bounded() -> None:
    tl = Timeline()
    assert tl.add([{"ts": 2.0, "kind": "fault", "text": "kill n1", "node": ""}]) == 1
    assert tl.add([{"ts": 1.0, "kind": "election", "text": "x", "node": "n2"},
                   {"ts": 2.0, "kind": "fault", "text": "kill n1", "node": ""}]) == 1
    assert [i["ts"] for i in tl.latest()] == [1.0, 2.0]
    assert tl.add([{"bad": 1}]) == 0
    tl.add([{"ts": 10.0 + i, "kind": "info", "text": str(i)} for i in range(TIMELINE_KEEP + 50)])
    assert len(tl.latest(10_000)) == TIMELINE_KEEP
    assert tl.latest(1)[0]["text"] == str(TIMELINE_KEEP + 49)
    # what fell off may come back only if it is new again
    assert tl.add([{"ts": 10.0 + TIMELINE_KEEP + 49, "kind": "info",
                    "text": str(TIMELINE_KEEP + 49)}]) == 0


def test_node_and_launcher_events_become_timeline_items() -> None:
    st = status("n2", events=[{"ts": 5.0, "role": "pre_candidate", "term": 2},
                              {"ts": 5.1, "role": "candidate", "term": 3},
                              {"ts": 5.2, "role": "leader", "term": 3}])
    items = node_events("n2", st)
    assert [i["kind"] for i in items] == ["election", "elected"]
    assert "term 3" in items[1]["text"]
    got = launcher_events([{"ts": 1, "kind": "leader", "text": "leader is n1 (term 1)"},
                           {"ts": 2, "kind": "leader", "text": "no leader (was n1)"},
                           {"ts": 3, "kind": "died", "text": "n1 died"}])
    assert [g["ts"] for g in got] == [2, 3]


# ---------------------------------------------------------------------------- snapshot


def test_snapshot_shows_launcher_state_and_stale_nodes() -> None:
    ids = ["n1", "n2", "n3"]
    tracks = {n: NodeTrack(n) for n in ids}
    tracks["n1"].record(status("n1", "leader", 3, progress={
        "n2": {"match": 6, "next": 7, "state": "replicate"},
        "n3": {"match": 2, "next": 3, "state": "probe"}}), 100.0)
    tracks["n2"].record(status("n2", "follower", 3), 100.0)
    tracks["n3"].record(status("n3", "leader", 2), 97.0)  # old news: it stopped answering
    lnodes: list[dict[str, Any]] = [{"id": "n1", "state": "up", "pid": 1}, {"id": "n2", "state": "paused"},
              {"id": "n3", "state": "up"}]
    s = build_snapshot("c", ids, tracks, lnodes, Timeline(), 100.1, 5000.0, 7)
    roles = {n["id"]: n["role"] for n in s["nodes"]}
    assert roles == {"n1": "leader", "n2": "paused", "n3": "no answer"}
    assert s["leader"] == "n1" and s["leader_term"] == 3 and s["seq"] == 7
    assert "Leader n1 (term 3)" in s["summary"] and "1 of 3 nodes answering" in s["summary"]
    n1 = s["nodes"][0]
    assert [p["peer"] for p in n1["progress"]] == ["n2", "n3"]
    assert n1["progress"][1]["lag"] == 4
    assert s["nodes"][2]["term"] == 2  # last known numbers stay visible
    link = next(lk for lk in s["links"] if lk["from"] == "n1" and lk["to"] == "n2")
    assert link["up"] is False  # n2 is paused
    assert len(s["links"]) == 6
    none = build_snapshot("c", ids, {n: NodeTrack(n) for n in ids}, [], Timeline(), 1.0, 1.0, 1)
    assert none["leader"] is None and none["summary"].startswith("No leader")
    assert none["log"] == {"indexes": [], "rows": {}}


# ---------------------------------------------------------------------------- hub


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_hub_keeps_the_newest_and_drops_a_stuck_subscriber() -> None:
    import asyncio

    async def go() -> None:
        clock = Clock()
        hub = Hub(max_clients=2, queue_max=2, stuck_s=5.0, clock=clock)
        closed: list[str] = []
        slow = hub.subscribe(lambda: closed.append("slow"))
        fast = hub.subscribe(lambda: closed.append("fast"))
        assert slow is not None and fast is not None
        assert hub.subscribe(lambda: None) is None and hub.refused_total == 1
        for k in range(40):  # ten seconds of snapshots; fast reads them all, slow none
            clock.now = k * 0.25
            hub.publish(b"%d" % k)
            assert await hub.next(fast) == b"%d" % k
            assert slow.queue.qsize() <= 2  # never more than queue_max held for anybody
        assert closed == ["slow"] and slow.dropped and len(hub) == 1
        assert await hub.next(slow) is None  # its writer is told to stop
        hub.publish(b"last")
        hub.close_all()
        assert await hub.next(fast) is None
        hub.unsubscribe(fast)

    asyncio.run(go())


def test_hub_slow_but_alive_subscriber_gets_the_latest() -> None:
    import asyncio

    async def go() -> None:
        clock = Clock()
        hub = Hub(queue_max=2, stuck_s=5.0, clock=clock)
        sub = hub.subscribe(lambda: None)
        assert sub is not None
        for k in range(10):
            clock.now = k * 0.25
            hub.publish(b"%d" % k)
        assert [await hub.next(sub), await hub.next(sub)] == [b"8", b"9"]
        assert sub.skipped == 8 and not sub.dropped

    asyncio.run(go())


# ---------------------------------------------------------------------------- boundary

ALLOWED_UDPRAFT = ("udpraft.config", "udpraft.client", "udpraft.errors", "udpraft.dashboard")


@pytest.mark.parametrize("path", sorted((ROOT / "udpraft" / "dashboard").rglob("*.py")),
                         ids=lambda p: p.name)
def test_dashboard_imports_only_aiohttp_config_and_the_client(path: Path) -> None:
    tree = ast.parse(path.read_text(), str(path))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    bad = [n for n in names if n.startswith("udpraft") and not n.startswith(ALLOWED_UDPRAFT)]
    third = {n.split(".")[0] for n in names} - {"udpraft", "aiohttp", "__future__"}
    import sys

    bad += [n for n in third if n not in sys.stdlib_module_names]
    assert not bad, f"{path} imports {bad}"


def test_static_files_ship_inside_the_package() -> None:
    static = ROOT / "udpraft" / "dashboard" / "static"
    assert {p.name for p in static.iterdir()} >= {"index.html", "app.js", "style.css"}
    assert '"udpraft.dashboard" = ["static/*"]' in (ROOT / "pyproject.toml").read_text()
