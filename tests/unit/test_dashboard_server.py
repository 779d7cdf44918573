"""The dashboard server against fake nodes (aiohttp apps that answer /status and /log) and a
fake launcher ``Control``: the page and its static files, the SSE stream, the control API
and its validation, and what a stuck node or a stuck browser costs."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from udpraft.config import ClusterConfig, NodeAddr
from udpraft.dashboard.control import ActionError
from udpraft.dashboard.server import Dashboard, DashboardThread

IDS = ["n1", "n2", "n3"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FakeNodes:
    """Three tiny HTTP servers playing nodes; ``hang`` makes one stop answering."""

    def __init__(self) -> None:
        self.roles = {"n1": "leader", "n2": "follower", "n3": "follower"}
        self.hang: set[str] = set()
        self.hits = dict.fromkeys(IDS, 0)
        self.runners: list[web.AppRunner] = []
        self.ports: dict[str, int] = {}

    def app(self, nid: str) -> web.Application:
        async def status(request: web.Request) -> web.Response:
            self.hits[nid] += 1
            if nid in self.hang:
                await asyncio.sleep(30)
            return web.json_response({
                "id": nid, "role": self.roles[nid], "term": 4, "vote": "n1", "leader": "n1",
                "commit_index": 2, "applied_index": 2, "last_log_index": 2, "last_log_term": 4,
                "pid": 1000 + int(nid[1]), "counters": {},
                "links": {p: {"out": self.hits[nid] * 10, "in": 0} for p in IDS if p != nid},
                "faults": {"all": {}, "peers": {}, "partition": []},
                "events": [{"ts": 1.0, "role": "leader", "term": 4}] if nid == "n1" else []})

        async def log(request: web.Request) -> web.Response:
            return web.json_response([
                {"index": 1, "term": 4, "kind": "noop", "data": "", "size": 0, "committed": True},
                {"index": 2, "term": 4, "kind": "normal", "data": "hi", "size": 2,
                 "committed": True}])

        app = web.Application()
        app.router.add_get("/status", status)
        app.router.add_get("/log", log)
        return app

    async def start(self) -> ClusterConfig:
        nodes = []
        for nid in IDS:
            runner = web.AppRunner(self.app(nid), shutdown_timeout=0.1)
            await runner.setup()
            port = free_port()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            self.runners.append(runner)
            self.ports[nid] = port
            nodes.append(NodeAddr(nid, ("127.0.0.1", 1), ("127.0.0.1", port)))
        return ClusterConfig("test-cluster", tuple(nodes), "")

    async def stop(self) -> None:
        for r in self.runners:
            await r.cleanup()


class FakeControl:
    def __init__(self, config: ClusterConfig, event_text: str = "kill n3") -> None:
        self._config = config
        self.calls: list[tuple[Any, ...]] = []
        self.event_text = event_text

    @property
    def config(self) -> ClusterConfig:
        return self._config

    def secret(self) -> bytes:
        return b"x" * 32

    def nodes(self) -> list[dict[str, Any]]:
        return [{"id": n, "pid": 1000 + i, "state": "up", "restarts": i}
                for i, n in enumerate(IDS, 1)]

    def events(self, limit: int) -> list[dict[str, Any]]:
        return [{"ts": 2.0 + i, "kind": "fault", "text": f"{self.event_text} {i}", "node": "n3"}
                for i in range(min(limit, 1 if self.event_text == "kill n3" else 100))]

    def _rec(self, *call: Any) -> list[str]:
        self.calls.append(call)
        return []

    def kill(self, node: str) -> None:
        if node == "n3":
            raise ActionError("n3 is not running")
        self._rec("kill", node)

    def restart(self, node: str) -> None:
        self._rec("restart", node)

    def stop_node(self, node: str) -> None:
        self._rec("stop", node)

    def start_node(self, node: str) -> None:
        self._rec("start", node)

    def pause(self, node: str) -> None:
        self._rec("pause", node)

    def resume(self, node: str) -> None:
        self._rec("resume", node)

    def partition(self, groups: list[list[str]]) -> list[str]:
        return self._rec("partition", groups)

    def degrade(self, nodes: list[str], peers: list[str] | None, drop_pct: float,
                delay_ms: float, jitter_ms: float) -> list[str]:
        return self._rec("degrade", nodes, peers, drop_pct, delay_ms, jitter_ms)

    def heal(self) -> list[str]:
        return self._rec("heal")

    def transfer(self, target: str) -> str:
        self._rec("transfer", target)
        return "n1"


Scenario = Callable[[Dashboard, FakeNodes, FakeControl, str], Awaitable[None]]


def run(scenario: Scenario, event_text: str = "kill n3", **opts: Any) -> None:
    async def go() -> None:
        fake = FakeNodes()
        cfg = await fake.start()
        control = FakeControl(cfg, event_text)
        dash = Dashboard(control, **opts)
        try:
            await dash.start("127.0.0.1", 0)
            await scenario(dash, fake, control, f"http://127.0.0.1:{dash.port}")
        finally:
            await dash.stop()
            await fake.stop()

    asyncio.run(asyncio.wait_for(go(), 30))


async def read_snapshots(url: str, n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as s, s.get(f"{url}/events") as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
        async for line in r.content:
            if line.startswith(b"data: "):
                out.append(json.loads(line[6:]))
                if len(out) == n:
                    return out
    return out


async def post(url: str, action: str, body: Any, ctype: str = "application/json") -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.post(
            f"{url}/api/{action}", data=json.dumps(body), headers={"Content-Type": ctype}) as r:
        return r.status, await r.json()


def test_page_static_files_and_api_listing() -> None:
    async def scenario(dash: Dashboard, fake: FakeNodes, ctl: FakeControl, url: str) -> None:
        async with aiohttp.ClientSession() as s:
            for path, want in (("/", "udpraft"), ("/static/app.js", "EventSource"),
                               ("/static/style.css", ".node")):
                async with s.get(url + path) as r:
                    assert r.status == 200 and want in await r.text(), path
            async with s.get(url + "/api") as r:
                listing = await r.json()
                assert "kill" in listing["actions"] and "POST /api" not in listing["usage"][:0]

    run(scenario)


def test_events_stream_several_snapshots_a_second() -> None:
    async def scenario(dash: Dashboard, fake: FakeNodes, ctl: FakeControl, url: str) -> None:
        began = time.monotonic()
        snaps = await read_snapshots(url, 9)
        took = time.monotonic() - began
        assert took < 6.0, f"9 snapshots took {took:.1f}s"
        last = snaps[-1]
        assert last["leader"] == "n1" and last["cluster"] == "test-cluster"
        assert [n["role"] for n in last["nodes"]] == ["leader", "follower", "follower"]
        assert last["nodes"][2]["restarts"] == 3  # the launcher's view is merged in
        assert last["log"]["indexes"] == [1, 2] and last["log"]["rows"]["n2"][1]["data"] == "hi"
        assert {i["kind"] for i in last["timeline"]} >= {"fault", "elected"}
        assert any(lk["out_per_s"] > 0 for lk in last["links"])
        assert [s["seq"] for s in snaps] == sorted(s["seq"] for s in snaps)

    run(scenario)


def test_a_hanging_node_does_not_slow_the_others() -> None:
    async def scenario(dash: Dashboard, fake: FakeNodes, ctl: FakeControl, url: str) -> None:
        fake.hang.add("n3")
        await asyncio.sleep(0.2)
        hits = dict(fake.hits)
        began = time.monotonic()
        snaps = await read_snapshots(url, 12)  # about three seconds at four a second
        took = time.monotonic() - began
        roles = {n["id"]: n["role"] for n in snaps[-1]["nodes"]}
        assert roles == {"n1": "leader", "n2": "follower", "n3": "no answer"}
        polled = {n: (fake.hits[n] - hits[n]) / took for n in IDS}
        assert polled["n1"] >= 2.5 and polled["n2"] >= 2.5, polled  # about 4 a second
        assert polled["n1"] <= 6, polled  # and not more: a node is never flooded
        assert polled["n3"] <= 2, polled  # a hanging node is not asked again and again

    run(scenario, status_timeout_s=0.3)


def test_control_api_calls_the_launcher_and_validates() -> None:
    async def scenario(dash: Dashboard, fake: FakeNodes, ctl: FakeControl, url: str) -> None:
        assert await post(url, "kill", {"node": "n1"}) == (
            200, {"ok": True, "node": "n1", "done": "killed"})
        st, body = await post(url, "kill", {"node": "n3"})
        assert st == 409 and body == {"ok": False, "error": "n3 is not running"}
        st, body = await post(url, "kill", {"node": "n9"})
        assert st == 400 and "n1, n2, n3" in body["error"]
        st, body = await post(url, "kill", {"node": "n1"}, ctype="text/plain")
        assert st == 415 and ctl.calls == [("kill", "n1")]
        assert (await post(url, "nope", {}))[0] == 404
        for action in ("restart", "stop", "start", "pause", "resume"):
            assert (await post(url, action, {"node": "n2"}))[0] == 200
        st, body = await post(url, "degrade", {"nodes": ["n1"], "peers": ["n2"],
                                               "delay_ms": 300, "both_ways": True})
        assert st == 200 and body["errors"] == []
        assert (await post(url, "degrade", {"delay_ms": -1}))[0] == 400
        assert (await post(url, "degrade", {"nodes": ["n1"], "peers": ["n1"]}))[0] == 400
        assert (await post(url, "partition", {"nodes": ["n3"]}))[0] == 200
        assert (await post(url, "partition", {"groups": [["n1"], ["n2", "n3"]]}))[0] == 200
        assert (await post(url, "partition", {"groups": [["n1"], ["n1"]]}))[0] == 400
        assert (await post(url, "partition", {"nodes": IDS}))[0] == 400
        assert (await post(url, "heal", {}))[0] == 200
        st, body = await post(url, "transfer", {"target": "n2"})
        assert st == 200 and body["asked"] == "n1"
        assert (await post(url, "submit", {"value": ""}))[0] == 400
        assert (await post(url, "submit", {"value": "x" * 2000}))[0] == 400
        assert (await post(url, "submit", ["not", "an", "object"]))[0] == 400
        st, body = await post(url, "wipe", {"node": "n2"})  # this control cannot wipe
        assert st == 409 and "cannot wipe" in body["error"]
        assert ctl.calls[1:] == [
            ("restart", "n2"), ("stop", "n2"), ("start", "n2"), ("pause", "n2"),
            ("resume", "n2"),
            ("degrade", ["n1"], ["n2"], 0.0, 300.0, 0.0),
            ("degrade", ["n2"], ["n1"], 0.0, 300.0, 0.0),
            ("partition", [["n3"]]), ("partition", [["n1"], ["n2", "n3"]]),
            ("heal",), ("transfer", "n2")]
        await asyncio.sleep(0.3)
        assert any(i["kind"] == "transfer" for i in dash.timeline.latest())

    run(scenario)


def test_a_browser_that_stops_reading_is_dropped() -> None:
    async def scenario(dash: Dashboard, fake: FakeNodes, ctl: FakeControl, url: str) -> None:
        # a raw connection that asks for the stream and then never reads a byte
        _reader, writer = await asyncio.open_connection("127.0.0.1", dash.port)
        writer.transport.set_write_buffer_limits(0)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        writer.write(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.5)
        assert len(dash.hub) == 1
        deadline = time.monotonic() + 20
        while len(dash.hub) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert len(dash.hub) == 0 and dash.hub.dropped_total >= 1
        writer.close()
        # and the stream still works for everybody else
        assert len(await read_snapshots(url, 2)) == 2

    # big snapshots fill the socket buffers quickly; a short stuck time keeps the test short
    from udpraft.dashboard.hub import Hub

    run(scenario, event_text="x" * 2000, hub=Hub(stuck_s=1.0), push_interval_s=0.05)


def test_dashboard_thread_serves_and_stops() -> None:
    async def nodes() -> tuple[FakeNodes, ClusterConfig]:
        fake = FakeNodes()
        return fake, await fake.start()

    loop = asyncio.new_event_loop()
    try:
        fake, cfg = loop.run_until_complete(nodes())
        port = free_port()
        th = DashboardThread(FakeControl(cfg), "127.0.0.1", port)
        th.start()
        try:
            assert th.url == f"http://127.0.0.1:{port}/"
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"GET /api/state HTTP/1.0\r\n\r\n")
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
            assert b"200 OK" in data.split(b"\r\n")[0] and b'"cluster": "test-cluster"' in data
            busy = DashboardThread(FakeControl(cfg), "127.0.0.1", port)
            try:
                busy.start()
                raise AssertionError("a second dashboard bound a busy port")
            except OSError:
                pass
        finally:
            th.stop()
        assert th._thread is not None and not th._thread.is_alive()
        loop.run_until_complete(fake.stop())
    finally:
        loop.close()


def test_ctl_commands_reach_the_dashboard_and_the_nodes(tmp_path: Any) -> None:
    """``python -m launcher ctl`` drives what only the launcher can do (restart, stop,
    start, submit) through the dashboard API, and link faults straight at the nodes."""
    import threading

    from launcher.ctl import main as ctl_main
    from udpraft.config import cluster_to_json, write_atomic

    faults: list[tuple[str, dict[str, Any]]] = []
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    class Nodes(FakeNodes):
        def app(self, nid: str) -> web.Application:
            app = super().app(nid)

            async def fault(request: web.Request) -> web.Response:
                faults.append((nid, await request.json()))
                return web.json_response({})

            app.router.add_post("/fault", fault)
            return app

    fake = Nodes()
    cfg = asyncio.run_coroutine_threadsafe(fake.start(), loop).result(10)
    control = FakeControl(cfg)
    dash = DashboardThread(control, "127.0.0.1", free_port())
    dash.start()
    try:
        cfg = ClusterConfig(cfg.cluster, cfg.nodes, dash.url)
        write_atomic(tmp_path / "cluster.json", cluster_to_json(cfg))
        ctl = ["--data-dir", str(tmp_path)]
        assert ctl_main([*ctl, "restart", "n2"]) == 0
        assert ctl_main([*ctl, "stop", "n3"]) == 0
        assert ctl_main([*ctl, "start", "n3"]) == 0
        assert control.calls == [("restart", "n2"), ("stop", "n3"), ("start", "n3")]
        assert ctl_main([*ctl, "degrade", "n1", "--to", "n2", "--both-ways",
                         "--delay-ms", "300"]) == 0
        assert faults == [
            ("n1", {"drop_pct": 0.0, "delay_ms": 300.0, "jitter_ms": 0.0, "peers": ["n2"]}),
            ("n2", {"drop_pct": 0.0, "delay_ms": 300.0, "jitter_ms": 0.0, "peers": ["n1"]})]
        faults.clear()
        assert ctl_main([*ctl, "split", "n1,n2", "n3"]) == 0
        assert sorted(faults) == [("n1", {"partition": ["n3"]}), ("n2", {"partition": ["n3"]}),
                                  ("n3", {"partition": ["n1", "n2"]})]
        lines = (tmp_path / "faults.jsonl").read_text().splitlines()
        assert [json.loads(ln)["kind"] for ln in lines] == ["delay", "delay", "partition"]
    finally:
        dash.stop()
        asyncio.run_coroutine_threadsafe(fake.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
