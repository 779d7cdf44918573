"""The supervisor's memory of the network faults in force (launcher.faults.NetFaults and
FaultOps.learn_fault), which it posts again to a node that restarts inside them, and the
stamps of faults other tools record (events.follow)."""

from __future__ import annotations

import random
import threading
from pathlib import Path
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from launcher.events import EventLog
from launcher.faults import FaultOps, NetFaults
from udpraft.io.faults import FaultHook

PEERS = ["n2", "n3", "n4", "n5"]


def _state(h: FaultHook) -> dict[str, Any]:
    d = h.describe()
    return {k: d[k] for k in ("all", "peers", "partition")}


link = st.fixed_dictionaries({}, optional={
    "drop_pct": st.sampled_from([0.0, 5.0, 100.0]),
    "delay_ms": st.sampled_from([0.0, 20.0]),
    "jitter_ms": st.sampled_from([0.0, 3.0]),
})
specs = st.one_of(
    st.builds(lambda ps: {"partition": ps}, st.lists(st.sampled_from(PEERS), unique=True)),
    link.filter(bool),
    st.builds(lambda lk, ps: {**lk, "peers": ps}, link, st.lists(st.sampled_from(PEERS),
                                                                min_size=1, unique=True)),
    st.builds(lambda lk, ps: {**lk, "partition": ps}, link.filter(bool),
              st.lists(st.sampled_from(PEERS), unique=True)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(specs, max_size=12))
def test_replaying_the_remembered_specs_rebuilds_the_hook(seq: list[dict[str, Any]]) -> None:
    """What a node's hook holds after any sequence of orders equals what a fresh hook holds
    after the supervisor's replay, and the replay stays bounded by the peers."""
    live, nf = FaultHook(random.Random(0)), NetFaults()
    for spec in seq:
        live.apply(spec, set(PEERS))
        nf.add(spec)
    fresh = FaultHook(random.Random(0))
    replay = nf.specs()
    for spec in replay:
        fresh.apply(spec, set(PEERS))
    assert _state(fresh) == _state(live)
    assert len(replay) <= 2 + len(PEERS)


class _Sup(FaultOps):
    """Just what FaultOps.learn_fault needs."""

    def __init__(self, ids: list[str]) -> None:
        self._lock = threading.RLock()
        self._nodes = dict.fromkeys(ids)  # type: ignore[assignment]  # ids only are read
        self.events = EventLog(None)
        self._net = {}


def test_faults_ordered_by_ctl_are_learnt_and_healed() -> None:
    sup = _Sup(["n1", "n2", "n3"])
    # launcher ctl's records (ctl.py): a partition with its sides, a one-way loss to n1
    sup.learn_fault({"ts": 1.0, "kind": "partition", "targets": ["n3"],
                     "sides": [["n3"], ["n1", "n2"]], "by": "ctl"})
    sup.learn_fault({"ts": 2.0, "kind": "loss", "targets": ["n2"], "drop_pct": 20.0,
                     "peers": ["n1"], "by": "ctl"})
    assert sup.net_faults("n3") == [{"partition": ["n1", "n2"]}]
    assert sup.net_faults("n1") == [{"partition": ["n3"]}]
    assert sup.net_faults("n2") == [
        {"partition": ["n3"]},
        {"drop_pct": 20.0, "delay_ms": 0.0, "jitter_ms": 0.0, "peers": ["n1"]},
    ]
    # ``ctl resume`` records a heal of the pause only: the network stays as it is
    sup.learn_fault({"ts": 3.0, "kind": "heal", "targets": ["n2"], "heals": "pause", "by": "ctl"})
    assert sup.net_faults("n2") != []
    sup.learn_fault({"ts": 4.0, "kind": "heal", "targets": ["n1", "n2", "n3"], "by": "ctl"})
    assert [sup.net_faults(n) for n in ("n1", "n2", "n3")] == [[], [], []]


def test_an_unreadable_record_is_reported_not_fatal() -> None:
    sup = _Sup(["n1", "n2"])
    sup.learn_fault({"kind": "loss", "targets": ["n1"], "drop_pct": "lots", "by": "ctl"})
    assert sup.net_faults("n1") == []
    assert any("cannot follow" in e.text for e in sup.events.recent(5))


def test_followed_faults_keep_the_time_they_happened(tmp_path: Path) -> None:
    path = tmp_path / "faults.jsonl"
    log = EventLog(path)
    with open(path, "ab") as f:
        f.write(orjson.dumps({"ts": 1_700_000_000.25, "kind": "pause", "targets": ["n2"],
                              "by": "ctl"}) + b"\n")
        f.write(orjson.dumps({"ts": "soon", "kind": "heal", "targets": ["n2"], "by": "ctl"})
                + b"\n")
    got = log.follow()
    assert [r["kind"] for r in got] == ["pause", "heal"]
    evs = log.recent(2)
    assert evs[0].ts == 1_700_000_000.25
    assert evs[1].ts > 1_700_000_000.25  # no usable stamp: the time it was read
