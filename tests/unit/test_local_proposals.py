"""Local proposals (udpraft/io/local.py): batches resolved in index order, by term."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import pytest

from udpraft.core.errors import NotLeader, ProposalDropped
from udpraft.core.ready import Role
from udpraft.core.sessions import Verdict
from udpraft.core.types import Entry, EntryKind
from udpraft.io.hist import Histogram
from udpraft.io.local import CallbackWaiter, LocalProposals, ProposalLost, Waiter
from udpraft.service.logservice import Outcome


class FakeRaft:
    def __init__(self) -> None:
        self.role = Role.LEADER
        self.leader = "n1"
        self.term = 3
        self.last = 10
        self.refuse = False

    def propose_datas(self, datas: list[bytes]) -> int:
        if self.refuse:
            raise ProposalDropped("full")
        first = self.last + 1
        self.last += len(datas)
        return first


class Harness(LocalProposals):
    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.fake = FakeRaft()
        self.raft = self.fake  # type: ignore[assignment]
        self.batch_sizes = Histogram((1.0, 10.0))
        self._loop = loop
        self._local_datas = []
        self._local_waits = []
        self._local_tos = []
        self._local_batches = deque()
        self._local_waiters = {}
        self.kicks = 0

    def _kick(self) -> None:
        self.kicks += 1


def apply(h: Harness, index: int, term: int) -> None:
    e = Entry(index, term, b"x")
    h._resolve_local([e], [Outcome(Verdict.APPLY, index, term, b"")])


def recorder() -> tuple[list[Any], CallbackWaiter]:
    got: list[Any] = []
    return got, CallbackWaiter(lambda out, err: got.append(out.index if out else type(err)))


def test_batches_resolve_in_order_and_overwritten_entries_fail() -> None:
    h = Harness()
    recs = [recorder() for _ in range(5)]
    for i, (_got, w) in enumerate(recs):
        h.propose_waiter(b"p%d" % i, w)
        if i == 2:
            h._propose_local_batch()  # entries 11..13
    h._propose_local_batch()  # entries 14..15
    assert h.kicks == 5 and len(h._local_batches) == 2
    for idx in (11, 12, 13):
        apply(h, idx, 3)
    apply(h, 14, 4)  # a new leader's entry at 14: ours was overwritten
    apply(h, 15, 3)
    assert [g for g, _w in recs] == [[11], [12], [13], [ProposalLost], [15]]
    assert not h._local_batches


def test_a_batch_skipped_by_a_snapshot_ends_unknown_and_refusals_fail_at_once() -> None:
    h = Harness()
    a, wa = recorder()
    b, wb = recorder()
    h.propose_waiter(b"a", wa)
    h.propose_waiter(b"b", wb)
    h._propose_local_batch()  # 11, 12
    apply(h, 20, 5)  # a snapshot took the log past both
    assert a == [TimeoutError] and b == [TimeoutError] and not h._local_batches
    h.fake.refuse = True
    c, wc = recorder()
    h.propose_waiter(b"c", wc)
    h._propose_local_batch()
    assert c == [ProposalDropped]
    h.fake.role = Role.FOLLOWER
    with pytest.raises(NotLeader):
        h.propose_waiter(b"d", recorder()[1])


def test_deadlines_expire_and_a_waiter_answers_once() -> None:
    h = Harness()
    got, w = recorder()
    h.propose_waiter(b"a", w, timeout_s=0.0)
    h._propose_local_batch()
    h._expire_local()
    assert got == [TimeoutError]
    apply(h, 11, 3)  # applied later after all: the caller already has its answer
    assert got == [TimeoutError] and not h._local_batches


def test_a_run_of_entries_spanning_batches_and_foreign_entries() -> None:
    h = Harness()
    recs = [recorder() for _ in range(6)]
    for i, (_g, w) in enumerate(recs):
        h.propose_waiter(b"p", w, timeout_s=60.0 if i != 4 else 0.0)
        if i in (1, 3):
            h._propose_local_batch()  # batches 11-12, 13-14, then 15-16
    h._propose_local_batch()
    h._expire_local()  # only the waiter with a zero timeout expires
    assert [g for g, _w in recs][4] == [TimeoutError]
    ents = [Entry(i, 3, b"p") for i in range(9, 17)]  # 9, 10: a previous leader's entries
    h._resolve_local(ents, [Outcome(Verdict.APPLY, e.index, e.term, b"") for e in ents])
    assert [g for g, _w in recs] == [[11], [12], [13], [14], [TimeoutError], [16]]
    assert not h._local_batches


def test_futures_and_wait_local_for_a_config_entry() -> None:
    async def main() -> None:
        h = Harness(asyncio.get_running_loop())
        f1 = h.propose_local(b"a")
        f2 = h.propose_local(b"b")
        h._propose_local_batch()
        fc = h.wait_local(13, 3, 5.0)
        apply(h, 11, 3)
        apply(h, 12, 3)
        h._resolve_local([Entry(13, 3, b"v:n1;l:;r:", EntryKind.CONFIG)], [None])
        assert (await f1).index == 11 and (await f2).index == 12
        assert (await fc).index == 13 and not h._local_waiters
        f3 = h.propose_local(b"c")
        f3.cancel()  # a caller that gave up: its entry still applies, quietly
        h._propose_local_batch()
        apply(h, 14, 3)
        assert f3.cancelled()

    asyncio.run(main())


def test_waiter_protocol_is_met_by_futures() -> None:
    async def main() -> Waiter:
        return asyncio.get_running_loop().create_future()

    assert asyncio.run(main()).done() is False
