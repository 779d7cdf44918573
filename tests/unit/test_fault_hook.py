"""The transport's fault hook (udpraft.io.faults): what each spec sets, and that the two
kinds of fault — lossy/slow links and partitions — compose instead of undoing each other."""

from __future__ import annotations

import random

import pytest

from udpraft.io.faults import FaultHook

PEERS = {"n2", "n3", "n4"}


def hook(seed: int = 1) -> FaultHook:
    return FaultHook(random.Random(seed))


def test_a_partition_drops_both_ways_only_for_the_cut_peers() -> None:
    h = hook()
    h.apply({"partition": ["n2"]}, PEERS)
    assert h.outbound("n2") is None and not h.inbound("n2")
    assert h.outbound("n3") == 0.0 and h.inbound("n3")
    assert h.outbound("") == 0.0 and h.inbound("")  # clients are never cut
    assert (h.dropped_out, h.dropped_in) == (1, 1)


def test_a_partition_keeps_lossy_links_set_before_it() -> None:
    h = hook()
    h.apply({"drop_pct": 100.0, "delay_ms": 0.0, "jitter_ms": 0.0}, PEERS)
    h.apply({"partition": ["n2"]}, PEERS)
    d = h.describe()
    assert d["all"]["drop_pct"] == 100.0
    assert d["partition"] == ["n2"]
    assert h.outbound("n3") is None  # still lossy (100%) towards the peers not cut


def test_a_lossy_link_keeps_the_partition_set_before_it() -> None:
    h = hook()
    h.apply({"partition": ["n2", "n3"]}, PEERS)
    h.apply({"delay_ms": 40.0}, PEERS)
    assert h.describe()["partition"] == ["n2", "n3"]
    assert h.outbound("n2") is None
    assert h.outbound("n4") == pytest.approx(0.040)


def test_per_peer_links_leave_the_others_alone() -> None:
    h = hook()
    h.apply({"peers": ["n3"], "drop_pct": 100.0}, PEERS)
    assert h.outbound("n3") is None
    assert h.outbound("n2") == 0.0
    h.apply({"peers": ["n3"], "delay_ms": 5.0}, PEERS)  # replaces n3's link as a whole
    assert h.outbound("n3") == pytest.approx(0.005)


def test_a_new_partition_replaces_the_old_one_and_heal_clears_everything() -> None:
    h = hook()
    h.apply({"partition": ["n2"], "drop_pct": 10.0}, PEERS)
    h.apply({"partition": ["n4"]}, PEERS)
    assert h.describe()["partition"] == ["n4"]
    assert h.describe()["all"]["drop_pct"] == 10.0
    h.heal()
    d = h.describe()
    assert d["partition"] == [] and d["all"]["drop_pct"] == 0.0 and d["peers"] == {}
    assert not h.active()


def test_drop_percentage_is_honoured_statistically() -> None:
    h = hook(seed=7)
    h.apply({"drop_pct": 30.0}, PEERS)
    dropped = sum(h.outbound("n2") is None for _ in range(10_000))
    assert 2_700 < dropped < 3_300


@pytest.mark.parametrize("spec, words", [
    ({"drop": 5}, "unknown fault fields"),
    ({"drop_pct": 101}, "drop_pct must be within"),
    ({"drop_pct": True}, "drop_pct must be a number"),
    ({"delay_ms": "5"}, "delay_ms must be a number"),
    ({"peers": ["n9"], "drop_pct": 5}, "unknown peers"),
    ({"partition": "n2"}, "must be a list"),
    ({"partition": ["n2"], "jitter_ms": -1}, "jitter_ms must be within"),
])
def test_a_bad_spec_is_refused_and_changes_nothing(spec: dict[str, object], words: str) -> None:
    h = hook()
    h.apply({"partition": ["n3"], "delay_ms": 2.0}, PEERS)
    before = h.describe()
    with pytest.raises(ValueError, match=words):
        h.apply(spec, PEERS)
    assert h.describe() == before
