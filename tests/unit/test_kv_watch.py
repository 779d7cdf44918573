"""Watch hub and streams, driven through the state machine with no network."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from udpraft.kv import watch as watch_mod
from udpraft.kv.jsonfmt import b64
from udpraft.kv.machine import KVMachine
from udpraft.kv.types import CompactReq, DeleteReq, PutReq, TxnReq, encode_command
from udpraft.kv.watch import WatchCreate, WatchHub, WatchStream


class Rig:
    def __init__(self) -> None:
        self.m = KVMachine()
        self.hub = WatchHub(self.m)
        self.i = 0
        self.wakes = 0

    def run(self, cmd: Any) -> dict[str, Any]:
        self.i += 1
        out: dict[str, Any] = orjson.loads(self.m.apply(self.i, encode_command(cmd)))
        return out

    def stream(self) -> WatchStream:
        def wake() -> None:
            self.wakes += 1

        return WatchStream(self.hub, wake)


def events(resps: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(e.get("type", "PUT"), e["kv"]["key"], e["kv"]["mod_revision"])
            for r in resps for e in r.get("events", [])]


def test_synced_watcher_gets_one_response_per_revision() -> None:
    rig = Rig()
    s = rig.stream()
    s.create(WatchCreate("p/", "p0", prev_kv=True))
    assert s.pop() == [{"header": {"revision": "1"}, "created": True}]
    rig.run(PutReq("p/1", "a"))
    rig.run(PutReq("other", "x"))
    rig.run(TxnReq([], [PutReq("p/2", "b"), PutReq("p/1", "c")], []))
    rig.run(DeleteReq("p/", "p0"))
    out = s.pop()
    assert [r["header"]["revision"] for r in out] == ["2", "4", "5"]
    assert events(out) == [("PUT", b64("p/1"), "2"), ("PUT", b64("p/2"), "4"),
                           ("PUT", b64("p/1"), "4"), ("DELETE", b64("p/1"), "5"),
                           ("DELETE", b64("p/2"), "5")]
    first, update = out[0]["events"][0], out[1]["events"][1]
    assert "prev_kv" not in first  # a creation has no previous value
    assert update["prev_kv"]["value"] == b64("a")
    assert rig.wakes > 0


def test_watch_from_the_past_catches_up_then_follows() -> None:
    rig = Rig()
    for i in range(5):
        rig.run(PutReq(f"k{i % 2}", str(i)))
    s = rig.stream()
    s.create(WatchCreate("k0", None, start_revision=3))
    s.create(WatchCreate("k", "l", start_revision=2, filters=(1,)))  # NODELETE
    out = s.pop()
    assert out[0]["created"] and out[1]["created"] and out[1]["watch_id"] == "1"
    assert events(out[2:]) == [("PUT", b64("k0"), "4"), ("PUT", b64("k0"), "6"),
                               ("PUT", b64("k0"), "2"), ("PUT", b64("k1"), "3"),
                               ("PUT", b64("k0"), "4"), ("PUT", b64("k1"), "5"),
                               ("PUT", b64("k0"), "6")]
    assert all(r["header"]["revision"] == "6" for r in out[2:])  # catch-up: the head then
    rig.run(DeleteReq("k0", None))
    out = s.pop()
    assert events(out) == [("DELETE", b64("k0"), "7")]  # only the unfiltered watcher


def test_compaction_cancels_a_watch_that_needs_lost_history() -> None:
    rig = Rig()
    for i in range(6):
        rig.run(PutReq("k", str(i)))
    rig.run(CompactReq(5))
    s = rig.stream()
    s.create(WatchCreate("k", None, start_revision=3))
    s.create(WatchCreate("k", None, start_revision=5))
    out = s.pop()
    assert out[2] == {"header": {}, "canceled": True, "compact_revision": "5"}
    assert events(out[3:]) == [("PUT", b64("k"), "5"), ("PUT", b64("k"), "6"),
                               ("PUT", b64("k"), "7")]


def test_control_answers() -> None:
    rig = Rig()
    s = rig.stream()
    s.create(WatchCreate("a", None, watch_id=4))
    s.create(WatchCreate("a", None, watch_id=4))
    s.create(WatchCreate("b", "a"))
    s.progress()
    s.cancel(4)
    s.cancel(99)
    out = s.pop()
    assert out[1]["cancel_reason"] == watch_mod.ERR_DUPLICATE_ID and out[1]["watch_id"] == "-1"
    assert out[2]["cancel_reason"] == watch_mod.ERR_EMPTY_RANGE
    assert out[3] == {"header": {"revision": "1"}, "watch_id": "-1"}
    assert out[4] == {"header": {"revision": "1"}, "watch_id": "4", "canceled": True}
    assert len(out) == 5
    s.close()
    assert rig.hub.synced == {} and rig.hub.streams == 0


def test_a_slow_watcher_is_demoted_not_buffered_without_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watch_mod, "MAX_PENDING", 8)
    rig = Rig()
    s = rig.stream()
    s.create(WatchCreate("k", None))
    s.pop()
    for i in range(50):
        rig.run(PutReq("k", str(i)))
        w = s.watchers[0]
        assert len(w.queue) <= 9  # the bound holds while nobody reads
    assert rig.hub.demotions >= 1 and not s.watchers[0].synced
    got: list[tuple[str, str, str]] = []
    while s.pending():
        got += events(s.pop(max_responses=3))
    assert [int(r) for _t, _k, r in got] == list(range(2, 52))  # nothing lost, in order
    assert s.watchers[0].synced
    rig.run(PutReq("k", "live"))
    assert events(s.pop()) == [("PUT", b64("k"), "52")]


def test_after_a_snapshot_restore_watchers_catch_up_from_the_restored_feed() -> None:
    src = Rig()
    for i in range(5):
        src.run(PutReq("k", str(i)))  # revisions 2..6
    rig = Rig()
    rig.run(PutReq("k", "0"))  # this replica has only seen revision 2
    s = rig.stream()
    s.create(WatchCreate("k", None))
    s.pop()
    rig.m.restore(src.m.snapshot())  # a lagging replica installs a snapshot
    assert rig.m.store.rev == 6 and rig.hub.synced == {}
    assert events(s.pop()) == [("PUT", b64("k"), str(r)) for r in range(3, 7)]
    assert s.watchers[0].synced
    rig.run(PutReq("k", "next"))
    assert events(s.pop()) == [("PUT", b64("k"), "7")]
