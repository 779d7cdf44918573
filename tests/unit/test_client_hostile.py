"""Hostile and unlucky client traffic against real NodeRuntimes in one process.

Three runtimes share an in-memory network (``Net``): every datagram a node sends is
delivered, on the next loop turn, to the runtime or client bound to its address. Clients
are ClientCores driven by hand, so a test decides which answers are lost.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from pathlib import Path

from udpraft.client.core import ClientCore
from udpraft.config import ClusterConfig, NodeAddr
from udpraft.core.ready import Config, Role
from udpraft.io.runtime import NodeRuntime
from udpraft.storage import MemoryLogStore
from udpraft.wire import ClientResponse

SECRET = b"s" * 16
CLIENT = ("10.0.0.9", 5000)
Addr = tuple[str, int]


class Net:
    """Datagrams between runtimes and one client address, delivered on the next turn."""

    def __init__(self) -> None:
        self.nodes: dict[Addr, NodeRuntime] = {}
        self.to_client: list[bytes] = []
        self.drop_to_client: Callable[[bytes], bool] = lambda data: False

    def transport(self, src: Addr) -> _Transport:
        return _Transport(self, src)

    def deliver(self, data: bytes, src: Addr, dst: Addr) -> None:
        if dst == CLIENT:
            if not self.drop_to_client(data):
                self.to_client.append(data)
            return
        rt = self.nodes.get(dst)
        if rt is not None:
            asyncio.get_running_loop().call_soon(rt.datagram_received, data, src)


class _Transport:
    def __init__(self, net: Net, src: Addr) -> None:
        self.net, self.src = net, src

    def sendto(self, data: bytes, addr: Addr) -> None:
        self.net.deliver(data, self.src, addr)

    def close(self) -> None:
        pass


async def cluster(n: int = 3) -> tuple[Net, list[NodeRuntime]]:
    addrs = [(f"10.0.0.{i}", 1000 + i) for i in range(1, n + 1)]
    cfg = ClusterConfig("t", tuple(
        NodeAddr(f"n{i}", a, (a[0], 2000 + i)) for i, a in enumerate(addrs, 1)))
    net = Net()
    rts = []
    for i, a in enumerate(addrs, 1):
        rt = NodeRuntime(f"n{i}", cfg, SECRET, MemoryLogStore(),
                         raft_config=Config(election_ticks=20, heartbeat_ticks=2))
        net.nodes[a] = rt
        rt.attach(net.transport(a))  # type: ignore[arg-type]
        rts.append(rt)
    await until(lambda: leader_of(rts) is not None, 5.0)
    return net, rts


def leader_of(rts: list[NodeRuntime]) -> NodeRuntime | None:
    ls = [rt for rt in rts if rt.raft.role == Role.LEADER]
    return ls[0] if len(ls) == 1 else None


async def until(cond: Callable[[], bool], timeout: float) -> bool:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            return False
        await asyncio.sleep(0.01)
    return True


async def stop(rts: list[NodeRuntime]) -> None:
    for rt in rts:
        await rt.stop()


def answers(cl: ClientCore, net: Net) -> list[ClientResponse]:
    out = []
    for data in net.to_client:
        out += cl.parse_all(data)
    return out


def submit(cl: ClientCore, rt: NodeRuntime, seqs: list[int], datas: list[bytes]) -> int:
    req_id = cl.new_req_id()
    rt.datagram_received(cl.encode(cl.submit_request(req_id, seqs, datas)), CLIENT)
    return req_id


def done_seqs(cl: ClientCore, net: Net, req_id: int) -> list[int]:
    return [s for r in answers(cl, net) if r.req_id == req_id and r.ok
            for s, _i, _t in r.body["done"]]


def test_a_seq_beyond_the_wire_range_cannot_stall_the_cluster() -> None:
    """Entries travel with seqs < 2**63 (followers drop an append holding a larger one).
    A client (authentic: it has the secret) that submits seq 2**63 must be refused, not
    proposed: an entry no follower accepts blocks every later commit of the term."""

    async def main() -> tuple[list[int], list[ClientResponse]]:
        net, rts = await cluster()
        try:
            leader = leader_of(rts)
            assert leader is not None
            evil = ClientCore({"n1": ("10.0.0.1", 1001)}, "t", SECRET)
            evil._req_ids = itertools.count(1000)  # both share CLIENT: tell answers apart
            submit(evil, leader, [1], [b"open"])
            bad = submit(evil, leader, [1 << 63], [b"boom"])
            good = ClientCore({"n1": ("10.0.0.1", 1001)}, "t", SECRET)
            ok = submit(good, leader, [1], [b"fine"])
            await until(lambda: bool(done_seqs(good, net, ok)), 2.0)
            return done_seqs(good, net, ok), [r for r in answers(evil, net) if r.req_id == bad]
        finally:
            await stop(rts)

    good_done, bad_answers = asyncio.run(main())
    assert good_done == [1], "a later submit of another client never committed"
    assert [r.body.get("error") for r in bad_answers] == ["bad_request"]


# ---------------------------------------------------------------- "expired" after a lost answer


class _Proto(asyncio.DatagramProtocol):
    """A node on a real UDP socket whose answers pass through ``drop`` first."""

    def __init__(self, rt: NodeRuntime, drop: Callable[[bytes], bool]) -> None:
        self.rt, self.drop = rt, drop

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        proto = self

        class Lossy:
            def sendto(self, data: bytes, addr: Addr) -> None:
                if not proto.drop(data):
                    transport.sendto(data, addr)  # type: ignore[attr-defined]

            def close(self) -> None:
                transport.close()

        self.rt.attach(Lossy())  # type: ignore[arg-type]

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        self.rt.datagram_received(data, addr)


async def lossy_node(
    drop: Callable[[bytes], bool], window: int = 4096, max_sessions: int = 100_000
) -> tuple[NodeRuntime, str]:
    import socket

    from udpraft.service.logservice import LogService

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    me = sock.getsockname()
    cfg = ClusterConfig("t", (NodeAddr("n1", me, ("127.0.0.1", 1)),))
    rt = NodeRuntime("n1", cfg, SECRET, MemoryLogStore(),
                     raft_config=Config(election_ticks=5, heartbeat_ticks=1))
    rt.service = LogService(session_window=window)
    rt.service.sessions.max_sessions = max_sessions
    await asyncio.get_running_loop().create_datagram_endpoint(lambda: _Proto(rt, drop), sock=sock)
    assert await until(lambda: rt.raft.role == Role.LEADER, 5.0)
    await asyncio.sleep(0.05)
    return rt, f"{me[0]}:{me[1]}"


class DropFirstAnswer:
    """Drops the first answer that reports ``seq`` of the session ``ctx`` of a client."""

    def __init__(self) -> None:
        self.core: ClientCore | None = None
        self.seq = 0
        self.dropped = 0

    def __call__(self, data: bytes) -> bool:
        if self.core is None or self.dropped:
            return False
        from udpraft.client.core import responses_in

        for r in responses_in(data, self.core.ctx):
            if r.ok and any(s == self.seq for s, _i, _t in r.body.get("done", [])):
                self.dropped += 1
                return True
        return False


def test_async_retry_after_a_lost_answer_gets_the_answer() -> None:
    """AsyncClient's submit applies and its answer is lost: a retry (same request, same
    seq) must reach the node and be answered from the session (the original index). The
    node dedupes datagrams by message id, so a retry that re-sends the first try's bytes
    is dropped as a duplicate datagram, whatever its request."""
    from udpraft.client.aio import AsyncClient

    async def main() -> tuple[int, int, int]:
        drop = DropFirstAnswer()
        rt, addr = await lossy_node(drop)
        c = AsyncClient({"n1": addr}, SECRET, "t")
        try:
            await c.submit(b"open")
            drop.core, drop.seq = c.core, 2
            res = await c.submit(b"lost answer", timeout=3)
            index = next(e.index for e in await c.retrieve(1) if e.data == b"lost answer")
            return drop.dropped, res.index, index
        finally:
            await c.close()
            await rt.stop()

    dropped, acked, index = asyncio.run(main())
    assert dropped == 1 and acked == index


def payload_count(entries: list[tuple[int, bytes]], data: bytes) -> int:
    return sum(1 for _i, d in entries if d == data)


def test_pipelined_retry_refused_as_expired_is_not_applied_again() -> None:
    """A pipelining client's submit applies, its answer is lost, and more than ``window``
    later seqs apply before the retry: the retry is refused ("expired": the session no
    longer remembers that seq). The first copy did apply, so the client must not send the
    payload again in a new session: the submit fails with SessionExpired (outcome
    unknown), and retrieve holds the payload once."""
    from udpraft.client.aio import AsyncClient
    from udpraft.errors import SessionExpired

    async def main() -> tuple[str, list[tuple[int, bytes]]]:
        drop = DropFirstAnswer()
        rt, addr = await lossy_node(drop, window=8)
        c = AsyncClient({"n1": addr}, SECRET, "t")
        try:
            await c.submit(b"open")
            drop.core, drop.seq = c.core, 2
            victim = asyncio.create_task(c.submit(b"victim", timeout=5))
            assert await until(lambda: drop.dropped == 1, 2.0)
            await asyncio.gather(*(c.submit(b"later-%d" % i) for i in range(12)))  # < 0.25 s
            try:
                outcome = f"ok {await victim}"
            except SessionExpired as e:
                outcome = f"expired {e}"
            ents = await c.retrieve(1)
            return outcome, [(e.index, e.data) for e in ents]
        finally:
            await c.close()
            await rt.stop()

    outcome, ents = asyncio.run(main())
    assert payload_count(ents, b"victim") == 1, (outcome, ents)
    assert outcome.startswith("expired"), outcome


def test_blocking_retry_of_an_evicted_session_is_not_applied_again() -> None:
    """The blocking client's submit applies, its answer is lost, and its session is
    evicted (other sessions filled the table) before the retry: the retry is refused as
    "expired". The client must not resubmit the payload in a new session."""
    from udpraft.client.aio import AsyncClient
    from udpraft.client.blocking import Client
    from udpraft.errors import SessionExpired

    async def main() -> tuple[str, list[tuple[int, bytes]]]:
        drop = DropFirstAnswer()
        rt, addr = await lossy_node(drop, max_sessions=2)
        loop = asyncio.get_running_loop()
        c = Client({"n1": addr}, SECRET, "t")
        others = [AsyncClient({"n1": addr}, SECRET, "t") for _ in range(3)]
        try:
            await loop.run_in_executor(None, c.submit, b"open")
            drop.core, drop.seq = c.core, 2

            def victim() -> str:
                try:
                    return f"ok {c.submit(b'victim', timeout=5)}"
                except SessionExpired as e:
                    return f"expired {e}"

            fut = loop.run_in_executor(None, victim)
            assert await until(lambda: drop.dropped == 1, 2.0)
            for o in others:  # two newer sessions evict the client's (max_sessions=2)
                await o.submit(b"other")
            outcome = await fut
            ents = await others[0].retrieve(1)
            return outcome, [(e.index, e.data) for e in ents]
        finally:
            c.close()
            for o in others:
                await o.close()
            await rt.stop()

    outcome, ents = asyncio.run(main())
    assert payload_count(ents, b"victim") == 1, (outcome, ents)
    assert outcome.startswith("expired"), outcome


# ---------------------------------------------------------------- a leader that lost its term


def test_a_deposed_leader_sends_its_waiters_away_and_a_retry_there_is_proposed() -> None:
    """A leader cut off from the others proposes a submit that cannot commit, then steps
    down (check-quorum). It must tell the waiting client to go to the leader and forget
    the waiter: were it to lead again, a retry there used to join the stale waiter instead
    of proposing, and waited forever (each retry keeping the waiter young)."""

    async def main() -> tuple[list[str], list[int], list[bytes]]:
        net, rts = await cluster()
        try:
            first = leader_of(rts)
            assert first is not None
            others = [rt for rt in rts if rt is not first]
            cl = ClientCore({"n1": ("10.0.0.1", 1001)}, "t", SECRET)
            r1 = submit(cl, first, [1], [b"a"])
            assert await until(lambda: bool(done_seqs(cl, net, r1)), 2.0)
            first.faults.partitioned = {rt.id for rt in others}  # cut both ways
            for rt in others:
                rt.faults.partitioned = {first.id}
            r2 = submit(cl, first, [2], [b"b"])  # proposed, cannot commit
            assert await until(lambda: first.raft.role != Role.LEADER, 5.0), "no step-down"
            told = [str(r.body.get("error")) for r in answers(cl, net) if r.req_id == r2]
            waiting = len(first._waiters)
            first.faults.heal()
            for rt in others:
                rt.faults.heal()
            assert await until(lambda: (ld := leader_of(rts)) is not None
                               and ld.raft.log.committed >= ld.raft.log.last_index(), 5.0)
            ld = leader_of(rts)
            assert ld is not None
            if ld is not first:  # lead again: the stale waiter, if any, would be found here
                assert await until(lambda: first.raft.log.last_index() == ld.raft.log.last_index(), 5.0)
                ld.transfer_leadership(first.id)
                assert await until(lambda: leader_of(rts) is first, 5.0), "no transfer"
            r3 = submit(cl, first, [2], [b"b"])  # the client's retry of seq 2
            await until(lambda: bool(done_seqs(cl, net, r3)), 2.0)
            await asyncio.sleep(0.1)
            entries, _nxt, _more = first.retrieve_entries(1, 1 << 20)
            return told, [waiting, *done_seqs(cl, net, r3)], [e.data for e in entries]
        finally:
            await stop(rts)

    told, (waiting, *done), datas = asyncio.run(main())
    assert told and set(told) <= {"not_leader", "no_leader"}, told  # sent away at once
    assert waiting == 0
    assert done == [2], "the retry at the re-elected leader was never proposed"
    assert datas == [b"a", b"b"]  # each payload once


def test_retries_of_one_stuck_request_are_bounded() -> None:
    """A request that cannot commit (no quorum) keeps its retries waiting, but no more
    than MAX_WAITERS_PER_KEY of them: the newest, which the client still listens for."""
    from udpraft.io.clients import MAX_WAITERS_PER_KEY

    async def main() -> tuple[int, list[int]]:
        _net, rts = await cluster()
        try:
            first = leader_of(rts)
            assert first is not None
            first.faults.partitioned = {rt.id for rt in rts if rt is not first}
            cl = ClientCore({"n1": ("10.0.0.1", 1001)}, "t", SECRET)
            ids = [submit(cl, first, [1], [b"a"]) for _ in range(50)]
            ws = first._waiters.get((cl.client_id, 1), [])
            return len(first._waiters), [req_id for req_id, _a, _t in ws] + [-1, *ids]
        finally:
            await stop(rts)

    keys, got = asyncio.run(main())
    kept, ids = got[: got.index(-1)], got[got.index(-1) + 1 :]
    assert keys == 1
    assert kept == ids[-MAX_WAITERS_PER_KEY:]


# ---------------------------------------------------------------- retrieve after compaction


def test_retrieve_from_before_a_compacted_prefix_says_so(tmp_path: Path) -> None:
    """With snapshots on, the log's first entries go; ``retrieve(1)`` used to return what
    was left as if it were everything. It raises Compacted naming the first index held,
    and retrieve from there returns the rest, in order."""
    import socket

    from udpraft.client.aio import AsyncClient
    from udpraft.client.blocking import Client
    from udpraft.errors import Compacted

    async def main() -> tuple[int, list[bytes], int]:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        me = sock.getsockname()
        cfg = ClusterConfig("t", (NodeAddr("n1", me, ("127.0.0.1", 1)),))
        rt = NodeRuntime("n1", cfg, SECRET, MemoryLogStore(),
                         raft_config=Config(election_ticks=5, heartbeat_ticks=1),
                         snapshot_dir=str(tmp_path / "snaps"), snapshot_entries=10)
        await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: _Proto(rt, lambda data: False), sock=sock)
        assert await until(lambda: rt.raft.role == Role.LEADER, 5.0)
        c = AsyncClient({"n1": f"{me[0]}:{me[1]}"}, SECRET, "t")
        try:
            for i in range(40):
                await c.submit(b"p%d" % i)
            assert await until(lambda: rt.raft.log.first_index() > 1, 5.0), "never compacted"
            try:
                await c.retrieve(1)
                first = -1
            except Compacted as e:
                first = e.first_index
            rest = [e.data for e in await c.retrieve(first)] if first > 0 else []
            blocking_first = -1
            with Client({"n1": f"{me[0]}:{me[1]}"}, SECRET, "t") as bc:
                try:
                    await asyncio.to_thread(bc.retrieve, 1)
                except Compacted as e:
                    blocking_first = e.first_index
            return first, rest, blocking_first
        finally:
            await c.close()
            await rt.stop()

    first, rest, blocking_first = asyncio.run(main())
    assert first > 1 and blocking_first >= first
    assert rest and rest == [b"p%d" % i for i in range(40 - len(rest), 40)]
