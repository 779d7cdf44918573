"""The KV HTTP face in-process, over a fake runtime whose "log" applies at once: streaming
calls, disconnects, deadlines without a leader, and the leader-side lease clock."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from udpraft.config import ClusterConfig, NodeAddr
from udpraft.core.ready import Role
from udpraft.core.sessions import Verdict
from udpraft.kv.http import KV_NODE
from udpraft.kv.machine import KVMachine
from udpraft.kv.server import KVNode, kv_app_factory
from udpraft.service.logservice import Outcome
from udpraft.wire import AppForward, AppForwardResp


def b(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


class FakeRaft:
    def __init__(self) -> None:
        self.role = Role.LEADER
        self.leader = "n1"
        self.term = 3
        self.committed = 0


class FakeRuntime:
    """Just enough NodeRuntime: proposals apply immediately, reads are always confirmed."""

    def __init__(self) -> None:
        self.id = "n1"
        addr = ("127.0.0.1", 1)
        self.cluster = ClusterConfig("unit", (NodeAddr("n1", addr, addr), NodeAddr("n2", addr, addr)))
        self.raft = FakeRaft()
        self.service = type("S", (), {"applied_index": 0})()
        self.app: KVMachine | None = None
        self.index = 0
        self.proposals: list[bytes] = []
        self.sent: list[tuple[str, AppForward | AppForwardResp]] = []  # send_to_node
        self.send_ok = True

    def send_to_node(self, node_id: str, msg: AppForward | AppForwardResp) -> bool:
        if self.send_ok:
            self.sent.append((node_id, msg))
        return self.send_ok

    def propose_app(self, cmd: bytes, timeout_s: float = 30.0) -> asyncio.Future[Outcome]:
        assert self.app is not None
        self.proposals.append(cmd)
        self.index += 1
        fut: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        fut.set_result(Outcome(Verdict.APPLY, self.index, 3, self.app.apply(self.index, cmd)))
        return fut

    def linearizable_read(self) -> asyncio.Future[int]:
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        fut.set_result(self.index)
        return fut


Body = Callable[[aiohttp.ClientSession, str, KVNode, FakeRuntime], Awaitable[None]]


def serve(test: Body) -> None:
    async def main() -> None:
        rt = FakeRuntime()
        app = web.Application()
        rt.app = kv_app_factory(rt, app)  # type: ignore[arg-type,assignment]
        server = TestServer(app)
        await server.start_server()
        try:
            async with aiohttp.ClientSession() as s:
                await test(s, str(server.make_url("")), app[KV_NODE], rt)
        finally:
            await server.close()

    asyncio.run(main())


async def post(s: aiohttp.ClientSession, url: str, path: str, body: Any) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with s.post(url + path, data=data) as r:
        raw = await r.read()
        lines = [json.loads(x) for x in raw.split(b"\n") if x.strip()]
        return r.status, (lines if len(lines) != 1 else lines[0])


def test_header_and_basic_calls() -> None:
    async def body(s: aiohttp.ClientSession, url: str, node: KVNode, rt: FakeRuntime) -> None:
        st, r = await post(s, url, "/v3/kv/put", {"key": b("k"), "value": b("v")})
        assert st == 200 and list(r["header"]) == ["cluster_id", "member_id", "revision", "raft_term"]
        assert r["header"]["raft_term"] == "3" and r["header"]["member_id"] == node.member_ids["n1"]
        st, r = await post(s, url, "/v3/kv/range", {"key": b("k")})
        assert r["kvs"][0]["value"] == b("v")
        st, r = await post(s, url, "/v3/kv/put", {"key": b("big"), "value": b("x" * 70_000)})
        assert st == 400 and r["error"] == "etcdserver: request is too large"
        st, r = await post(s, url, "/v3/maintenance/status", b"")
        assert st == 200 and r["leader"] == node.member_ids["n1"] and r["version"] == "3.4.23"
        st, r = await post(s, url, "/v3/lease/grant", {"TTL": 5})
        assert st == 200 and int(r["ID"]) > 0  # an id chosen by the leader
        st, r = await post(s, url, "/v3/kv/txn", {"success": [{"request_range": {"key": b("k")}}]})
        assert st == 200 and r["succeeded"] and len(rt.proposals) == 2  # a read-only txn is local

    serve(body)


def test_keepalive_streams_one_line_per_request() -> None:
    async def body(s: aiohttp.ClientSession, url: str, node: KVNode, rt: FakeRuntime) -> None:
        await post(s, url, "/v3/lease/grant", {"TTL": 7, "ID": 9})
        st, lines = await post(s, url, "/v3/lease/keepalive", b'{"ID": 9}{"ID": 10} {"ID": "9"}')
        assert st == 200 and [x["result"].get("TTL") for x in lines] == ["7", None, "7"]
        st, line = await post(s, url, "/v3/lease/keepalive", b'{"ID": 9}{"ID": ')
        assert st == 200 and line["result"]["TTL"] == "7"  # a broken later request ends the stream
        st, r = await post(s, url, "/v3/lease/keepalive", b'{"ID": "x"}')
        assert st == 500 and r["code"] == 2

    serve(body)


def test_watch_is_full_duplex_and_cleans_up_on_disconnect() -> None:
    async def body(s: aiohttp.ClientSession, url: str, node: KVNode, rt: FakeRuntime) -> None:
        q: asyncio.Queue[bytes] = asyncio.Queue()

        async def requests() -> Any:
            yield json.dumps({"create_request": {"key": b("w")}}).encode()
            await q.get()
            yield json.dumps({"create_request": {"key": b("x"), "prev_kv": True}}).encode()
            await asyncio.sleep(30)

        async with s.post(url + "/v3/watch", data=requests()) as r:
            first = json.loads(await r.content.readline())
            assert first["result"]["created"] is True
            await post(s, url, "/v3/kv/put", {"key": b("w"), "value": b("1")})
            ev = json.loads(await r.content.readline())
            assert ev["result"]["events"][0]["kv"]["value"] == b("1")
            q.put_nowait(b"")  # a second request on the same open stream
            second = json.loads(await r.content.readline())
            assert second["result"]["watch_id"] == "1"
            assert node.hub.streams == 1 and len(node.hub.synced) == 2
        for _ in range(40):  # the client went away: the stream and its watchers are dropped
            if node.hub.streams == 0:
                break
            await asyncio.sleep(0.1)
        assert node.hub.streams == 0 and node.hub.synced == {}

    serve(body)


def test_without_a_leader_requests_fail_retryably_by_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UDPRAFT_KV_TIMEOUT_S", "0.5")

    async def body(s: aiohttp.ClientSession, url: str, node: KVNode, rt: FakeRuntime) -> None:
        rt.raft.role, rt.raft.leader = Role.FOLLOWER, ""

        def no_read() -> asyncio.Future[int]:
            fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            return fut  # never confirmed

        rt.linearizable_read = no_read  # type: ignore[method-assign]
        loop = asyncio.get_running_loop()
        for path, req in (("/v3/kv/put", {"key": b("k")}), ("/v3/kv/range", {"key": b("k")}),
                          ("/v3/lease/timetolive", {"ID": 1})):
            t0 = loop.time()
            st, r = await post(s, url, path, req)
            assert st == 503 and r == {"error": "etcdserver: no leader",
                                       "message": "etcdserver: no leader", "code": 14}
            assert loop.time() - t0 < 1.5
        st, r = await post(s, url, "/v3/kv/range", {"key": b("k"), "serializable": True})
        assert st == 200

    serve(body)


def test_lease_clock_runs_on_the_leader_only_and_expires_through_the_log() -> None:
    async def body(s: aiohttp.ClientSession, url: str, node: KVNode, rt: FakeRuntime) -> None:
        await post(s, url, "/v3/lease/grant", {"TTL": 10, "ID": 1})
        await post(s, url, "/v3/kv/put", {"key": b("k"), "value": b("v"), "lease": 1})
        now = time.monotonic()
        node.lease_tick(now + 5)
        assert 1 in node.machine.leases  # not yet
        rt.raft.role = Role.FOLLOWER
        node.lease_tick(now + 50)  # a follower never expires anything
        assert 1 in node.machine.leases and node.deadlines == {}
        rt.raft.role, rt.raft.term = Role.LEADER, 4
        node.lease_tick(now + 50)  # a new leader: full TTL from its takeover
        assert 1 in node.machine.leases
        node.lease_tick(now + 50 + 11)
        assert 1 not in node.machine.leases
        assert rt.proposals[-1] == b'["X",1]'
        _st, r = await post(s, url, "/v3/kv/range", {"key": b("k")})
        assert "kvs" not in r

    serve(body)


def test_linearizable_reads_share_read_index_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    from udpraft.kv import server as kv_server

    monkeypatch.setattr(kv_server, "READ_ATTEMPT_S", 0.2)

    async def body(s: aiohttp.ClientSession, url: str, node: KVNode, rt: FakeRuntime) -> None:
        issued: list[asyncio.Future[int]] = []

        def read() -> asyncio.Future[int]:
            fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            issued.append(fut)
            return fut

        rt.linearizable_read = read  # type: ignore[method-assign]
        first = [asyncio.ensure_future(node.read_barrier(False)) for _ in range(3)]
        await asyncio.sleep(0.01)
        assert len(issued) == 1  # three reads in one loop turn, one ReadIndex
        later = [asyncio.ensure_future(node.read_barrier(False)) for _ in range(3)]
        await asyncio.sleep(0.01)
        assert len(issued) == 1  # they need a ReadIndex issued after they came: the next one
        issued[0].set_result(1)
        assert await asyncio.gather(*first) == [None, None, None]
        await asyncio.sleep(0.01)
        assert len(issued) == 2 and not any(f.done() for f in later)
        # the second request is lost: after READ_ATTEMPT_S the reads try again, and succeed
        await asyncio.sleep(0.35)
        assert len(issued) == 3
        issued[2].set_result(2)
        assert await asyncio.gather(*later) == [None, None, None]

    serve(body)


def test_the_leader_answers_each_forwarded_write(monkeypatch: pytest.MonkeyPatch) -> None:
    from udpraft.kv import forwarding

    async def body(s: aiohttp.ClientSession, url: str, node: KVNode, rt: FakeRuntime) -> None:
        cmds = (b'["P","a","1",0,0]', b'["P","a","2",0,1]', b'["G",5,10]', b'["V",77]',
                b"x" * 70_000, b"not json")
        node._on_forward("n2", AppForward(9, cmds))
        await asyncio.sleep(0.01)
        ((to, m),) = rt.sent
        assert to == "n2" and isinstance(m, AppForwardResp) and (m.req_id, m.first) == (9, 0)
        r: list[Any] = [json.loads(x) if x is not None else None for x in m.results]
        assert r[0] == {"header": {"revision": "2"}}
        assert r[1]["prev_kv"]["value"] == b("1") and r[2]["ID"] == "5"
        assert r[3]["code"] == 5  # each command fails or succeeds on its own
        assert r[4]["error"] == "etcdserver: request is too large" and r[5]["code"] == 3
        assert len(rt.proposals) == 5  # the large one was not proposed
        # answers larger than FORWARD_ANSWER_BYTES come in parts, in order
        monkeypatch.setattr(forwarding, "FORWARD_ANSWER_BYTES", 60)
        rt.sent.clear()
        node._on_forward("n2", AppForward(10, tuple(b'["P","k%d","v",0,0]' % i for i in range(5))))
        await asyncio.sleep(0.01)
        parts = [m for _, m in rt.sent if isinstance(m, AppForwardResp)]
        assert len(parts) == len(rt.sent) > 1
        assert [m.first for m in parts] == [sum(len(p.results) for p in parts[:i]) for i in range(len(parts))]
        assert sum(len(m.results) for m in parts) == 5
        rt.raft.role = Role.FOLLOWER  # not the leader any more: nothing proposed, retry
        rt.sent.clear()
        node._on_forward("n2", AppForward(11, (b'["P","b","1",0,0]',)))
        await asyncio.sleep(0.01)
        assert rt.sent == [("n2", AppForwardResp(11, 0, (None,)))]

    serve(body)


def test_a_follower_gathers_writes_while_a_forward_is_in_flight(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The first write goes to the leader at once; the writes that arrive while it is in
    flight travel together in the next batch (FORWARD_LINGER_S), each answered on its own."""
    from udpraft.kv import forwarding

    # A longer linger than the real 1 ms: five loop turns on a busy CI machine can take
    # more than 1 ms, which split the batch (seen [1, 4, 1] once). Same mechanism.
    monkeypatch.setattr(forwarding, "FORWARD_LINGER_S", 0.2)

    async def body(s: aiohttp.ClientSession, url: str, node: KVNode, rt: FakeRuntime) -> None:
        def answer(m: AppForward) -> None:  # in two parts when it can
            results = tuple(b'{"header":{"revision":"%d"}}' % (i + 1) for i in range(len(m.cmds)))
            node._on_forward_answer("n2", AppForwardResp(m.req_id, 0, results[:2]))
            if len(results) > 2:
                node._on_forward_answer("n2", AppForwardResp(m.req_id, 2, results[2:]))

        rt.raft.role, rt.raft.leader = Role.FOLLOWER, "n2"
        dl = time.monotonic() + 5
        first = asyncio.create_task(node.forward_command(b'["P","a","1",0,0]', "n2", dl))
        while not rt.sent:
            await asyncio.sleep(0.001)
        rest = []
        for i in range(5):  # one per loop turn, as separate HTTP requests would come
            rest.append(asyncio.create_task(node.forward_command(b'["P","b","%d",0,0]' % i, "n2", dl)))
            await asyncio.sleep(0)
        end = time.monotonic() + 5
        while len(rt.sent) < 2 and time.monotonic() < end:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        sent = [m for _, m in rt.sent if isinstance(m, AppForward)]
        assert len(sent) == len(rt.sent)
        assert [len(m.cmds) for m in sent] == [1, 5], "gathered into one batch while the first was in flight"
        for m in sent:
            answer(m)
        answers = await asyncio.gather(first, *rest)
        assert all(r is not None and r.status == 200 for r in answers)
        revs = [json.loads(r.body)["header"]["revision"] for r in answers[1:]]  # type: ignore[arg-type]
        assert revs == ["1", "2", "3", "4", "5"]  # each its own answer, from either part
        assert node._fwd_in_flight == {"n2": 0} and node._fwd_calls == {}
        # nothing in flight: the next write leaves at once, alone
        again = asyncio.create_task(node.forward_command(b'["P","c","1",0,0]', "n2", time.monotonic() + 5))
        while len(rt.sent) < 3:
            await asyncio.sleep(0.001)
        third = rt.sent[2][1]
        assert isinstance(third, AppForward) and len(third.cmds) == 1
        answer(third)
        r = await again
        assert r is not None and r.status == 200

    serve(body)


def test_forward_answers_that_are_not_ours_and_forwards_that_fail() -> None:
    async def body(s: aiohttp.ClientSession, url: str, node: KVNode, rt: FakeRuntime) -> None:
        rt.raft.role, rt.raft.leader = Role.FOLLOWER, "n2"
        task = asyncio.create_task(node.forward_command(b'["P","a","1",0,0]', "n2", time.monotonic() + 5))
        while not rt.sent:
            await asyncio.sleep(0.001)
        m = rt.sent[0][1]
        assert isinstance(m, AppForward)
        ok = b'{"header":{"revision":"7"}}'
        node._on_forward_answer("n1", AppForwardResp(m.req_id, 0, (ok,)))  # wrong sender
        node._on_forward_answer("n2", AppForwardResp(m.req_id + 1, 0, (ok,)))  # unknown call
        node._on_forward_answer("n2", AppForwardResp(m.req_id, 1, (ok,)))  # past its end
        assert node.counters["forward_answers_unknown"] == 3 and not task.done()
        node._on_forward_answer("n2", AppForwardResp(m.req_id, 0, (b"[1]",)))  # not an answer
        r = await task
        assert r is not None and r.status == 503  # it may have applied: unavailable, not retried
        # not sent at all (no route to the leader): None, so the write is retried, here until
        # its deadline passes
        rt.send_ok = False
        r = await node.forward_command(b'["P","a","2",0,0]', "n2", time.monotonic() + 5)
        assert r is None
        # sent, and the leader it went to is replaced before it answers: "leader changed"
        # at once (its answer may never come), not at the deadline, and not retried here
        rt.send_ok = True
        task = asyncio.create_task(node.forward_command(b'["P","a","4",0,0]', "n2", time.monotonic() + 5))
        await asyncio.sleep(0.15)
        assert not task.done()  # still waiting: same leader, same term
        t0 = time.monotonic()
        rt.raft.term += 1
        r = await task
        assert time.monotonic() - t0 < 1.0 and r is not None and r.status == 503
        assert json.loads(r.body)["error"] == "etcdserver: leader changed"  # type: ignore[arg-type]
        assert node.counters["forward_leader_changed"] == 1
        # sent, never answered: unavailable at the request's deadline
        t0 = time.monotonic()
        r = await node.forward_command(b'["P","a","3",0,0]', "n2", t0 + 0.3)
        assert r is not None and r.status == 503 and node._fwd_calls == {}
        assert 0.25 < time.monotonic() - t0 < 1.5
        assert json.loads(r.body)["error"] != "etcdserver: leader changed"  # type: ignore[arg-type]

    serve(body)
