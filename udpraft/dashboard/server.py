"""The dashboard's web server: one page, a live Server-Sent Events stream, and a control API.

How this works: ``Dashboard`` owns an aiohttp application on its own event loop (the
launcher runs it in a background thread: ``DashboardThread``). One poll task per node GETs
``/status`` and ``/log?tail=N`` every ``poll_interval_s`` while a browser watches (every
``idle_poll_s`` otherwise) with a short timeout, so a paused or dead node costs only its own
task a timeout and never delays the others; one that did not answer is asked again only
``RETRY_AFTER_FAILURE_S`` later, so requests never pile up in a stopped node's backlog. One push task builds a snapshot from the latest
answers every ``push_interval_s`` and hands it to the ``Hub`` (hub.py), which bounds what
each browser may hold. However many browsers watch, each node sees the same few small
requests a second, and a browser can never slow the poll loop, nor a node.

Routes:

    GET  /                 the page (static/index.html; app.js and style.css beside it)
    GET  /events           text/event-stream: one JSON snapshot per ``data:`` message
    GET  /api/state        the current snapshot, once (for scripts)
    GET  /api              the control actions and their bodies
    POST /api/<action>     a control action (api.py); JSON body, JSON answer

Anything that takes the launcher (signals, its records) goes through the ``Control`` it
handed in, from a worker thread (``run_in_executor``): the loop never blocks on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from udpraft.dashboard import api
from udpraft.dashboard.control import Control
from udpraft.dashboard.hub import Hub, Subscriber
from udpraft.dashboard.model import (
    LOG_COLUMNS,
    NodeTrack,
    Timeline,
    build_snapshot,
    launcher_events,
    node_events,
)

STATIC_DIR = Path(__file__).resolve().parent / "static"
POLL_INTERVAL_S = 0.25
IDLE_POLL_S = 1.0
PUSH_INTERVAL_S = 0.25
STATUS_TIMEOUT_S = 0.6
RETRY_AFTER_FAILURE_S = 1.0  # a node that did not answer is asked again after this long
SSE_SNDBUF_BYTES = 128 * 1024  # kernel buffer per browser: a few snapshots, not megabytes
LAUNCHER_EVENTS = 100
DASHBOARD_KEY: web.AppKey[Dashboard] = web.AppKey("dashboard")


class Dashboard:
    def __init__(
        self, control: Control, poll_interval_s: float = POLL_INTERVAL_S,
        push_interval_s: float = PUSH_INTERVAL_S, idle_poll_s: float = IDLE_POLL_S,
        status_timeout_s: float = STATUS_TIMEOUT_S, hub: Hub | None = None,
    ) -> None:
        self.control = control
        self.config = control.config
        self.ids = self.config.ids
        self.poll_interval_s, self.push_interval_s = poll_interval_s, push_interval_s
        self.idle_poll_s, self.status_timeout_s = idle_poll_s, status_timeout_s
        self.hub = hub or Hub()
        self.tracks = {nid: NodeTrack(nid) for nid in self.ids}
        self.timeline = Timeline()
        self.launcher_nodes: list[dict[str, Any]] = []
        self.seq = 0
        self.started_wall = time.time()
        self.app = self._make_app()
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._polls: dict[str, asyncio.Task[None]] = {}
        self._runner: web.AppRunner | None = None
        self.submitter = api.Submitter(self)
        self.port = 0

    # ---------------------------------------------------------------- lifecycle

    def _make_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024)
        app[DASHBOARD_KEY] = self
        app.router.add_get("/", _index)
        app.router.add_get("/index.html", _index)
        app.router.add_get("/events", _events)
        app.router.add_get("/api/state", _state)
        app.router.add_get("/api", api.describe)
        app.router.add_post("/api/{action}", api.handle)
        app.router.add_static("/static/", STATIC_DIR, append_version=False)
        return app

    async def start(self, host: str, port: int) -> None:
        """Bind and start polling. Raises OSError when the port is taken."""
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True)
        try:
            await site.start()
        except OSError:
            await self._runner.cleanup()
            self._runner = None
            raise
        server = getattr(site, "_server", None)
        socks = getattr(server, "sockets", None) or []
        self.port = int(socks[0].getsockname()[1]) if socks else port
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit_per_host=2, force_close=False),
            timeout=aiohttp.ClientTimeout(total=self.status_timeout_s))
        self._polls = {nid: asyncio.create_task(self._poll_node(nid)) for nid in self.ids}
        self._tasks = [asyncio.create_task(self._push())]

    def sync_config(self) -> None:
        """Follow the launcher's cluster: a node added since gets a track and a poll task, a
        retired one loses both. Cheap when nothing changed; call it on the loop."""
        cfg = self.control.config
        if cfg is self.config:
            return
        if [(n.id, n.http) for n in cfg.nodes] != [(n.id, n.http) for n in self.config.nodes]:
            old = set(self.ids)
            self.ids = cfg.ids
            for nid in old - set(self.ids):
                task = self._polls.pop(nid, None)
                if task is not None:
                    task.cancel()
                self.tracks.pop(nid, None)
            for nid in self.ids:
                if nid not in self.tracks:
                    self.tracks[nid] = NodeTrack(nid)
            self.config = cfg
            if self._session is not None:
                for nid in self.ids:
                    if nid not in self._polls:
                        self._polls[nid] = asyncio.create_task(self._poll_node(nid))
        self.config = cfg

    async def stop(self) -> None:
        self.hub.close_all()
        tasks = [*self._tasks, *self._polls.values()]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks, self._polls = [], {}
        await self.submitter.close()
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ---------------------------------------------------------------- polling

    async def _get_json(self, url: str) -> Any:
        assert self._session is not None
        async with self._session.get(url) as resp:
            if resp.status != 200:
                raise aiohttp.ClientError(f"HTTP {resp.status}")
            return json.loads(await resp.read())

    async def _poll_node(self, nid: str) -> None:
        host, port = self.config.node(nid).http
        base = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        track = self.tracks[nid]
        loop = asyncio.get_running_loop()
        while True:
            began = loop.time()
            got: tuple[Any, Any] = await asyncio.gather(
                self._get_json(f"{base}/status"), self._get_json(f"{base}/log?tail={LOG_COLUMNS}"),
                return_exceptions=True)
            status, log = got
            interval = self.poll_interval_s if len(self.hub) else self.idle_poll_s
            if isinstance(status, dict):
                track.record(status, time.monotonic())
                self.timeline.add(node_events(nid, status))
                if isinstance(log, list):
                    track.log = log
            else:  # dead, paused or busy: do not pile requests up in its backlog
                track.error = type(status).__name__
                if isinstance(status, asyncio.CancelledError):
                    raise status
                interval = max(interval, (loop.time() - began) + RETRY_AFTER_FAILURE_S)
            await asyncio.sleep(max(0.02, interval - (loop.time() - began)))

    async def refresh_launcher(self) -> None:
        self.sync_config()
        loop = asyncio.get_running_loop()
        nodes, events = await loop.run_in_executor(None, self._read_launcher)
        self.launcher_nodes = nodes
        self.timeline.add(launcher_events(events))

    def _read_launcher(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        return self.control.nodes(), self.control.events(LAUNCHER_EVENTS)

    def snapshot(self) -> dict[str, Any]:
        self.seq += 1
        return build_snapshot(self.config.cluster, self.ids, self.tracks, self.launcher_nodes,
                              self.timeline, time.monotonic(), time.time(), self.seq,
                              len(self.hub))

    async def _push(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            began = loop.time()
            try:
                await self.refresh_launcher()
                if len(self.hub):
                    data = json.dumps(self.snapshot(), separators=(",", ":"))
                    self.hub.publish(f"data: {data}\n\n".encode())
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a bad moment must not end the live view
                self.note("warn", f"dashboard: {e!r}")
            interval = self.push_interval_s if len(self.hub) else self.idle_poll_s
            await asyncio.sleep(max(0.02, interval - (loop.time() - began)))

    def note(self, kind: str, text: str, node: str = "") -> None:
        """Put one of the dashboard's own doings on the timeline."""
        self.timeline.add([{"ts": time.time(), "kind": kind, "node": node, "text": text}])


# -------------------------------------------------------------------- handlers


async def _index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


async def _state(request: web.Request) -> web.Response:
    dash = request.app[DASHBOARD_KEY]
    await dash.refresh_launcher()
    return web.json_response(dash.snapshot())


async def _events(request: web.Request) -> web.StreamResponse:
    dash = request.app[DASHBOARD_KEY]
    transport = request.transport

    def close() -> None:
        if transport is not None:
            transport.abort()

    sub = dash.hub.subscribe(close)
    if sub is None:
        return web.json_response({"ok": False, "error": "too many viewers"}, status=503)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SSE_SNDBUF_BYTES)
    resp = web.StreamResponse(headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no"})
    try:
        await resp.prepare(request)
        first = json.dumps(dash.snapshot(), separators=(",", ":"))
        await resp.write(f"retry: 1000\n\ndata: {first}\n\n".encode())
        await _stream(dash.hub, sub, resp)
    except TimeoutError:
        dash.hub.drop(sub)  # one write waited stuck_s on a full socket: a stuck browser
    except (ConnectionError, aiohttp.ClientConnectionError, RuntimeError):
        pass  # the browser went away, or was dropped by the hub
    finally:
        dash.hub.unsubscribe(sub)
    return resp


async def _stream(hub: Hub, sub: Subscriber, resp: web.StreamResponse) -> None:
    while True:
        data = await hub.next(sub)
        if data is None:
            return
        await asyncio.wait_for(resp.write(data), hub.stuck_s)


# -------------------------------------------------------------------- thread


class DashboardThread:
    """Runs a ``Dashboard`` on its own event loop in a daemon thread (for the launcher)."""

    def __init__(self, control: Control, host: str, port: int, **opts: Any) -> None:
        self.control, self.host, self.port, self.opts = control, host, port, opts
        self.dashboard: Dashboard | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stopped: asyncio.Event | None = None

    @property
    def url(self) -> str:
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{shown}:{self.port}/"

    def start(self, timeout_s: float = 10.0) -> None:
        """Serve; returns once bound. Raises OSError (port taken) or RuntimeError."""
        self._thread = threading.Thread(target=self._run, name="udpraft-dashboard", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise RuntimeError("the dashboard did not start in time")
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as e:
            self._error = e
        finally:
            self._ready.set()
            loop.close()

    async def _main(self) -> None:
        self._stopped = asyncio.Event()
        dash = Dashboard(self.control, **self.opts)
        await dash.start(self.host, self.port)
        self.dashboard, self.port = dash, dash.port
        self._ready.set()
        try:
            await self._stopped.wait()
        finally:
            await dash.stop()

    def stop(self, timeout_s: float = 5.0) -> None:
        loop, stopped = self._loop, self._stopped
        if loop is not None and stopped is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stopped.set)
        if self._thread is not None:
            self._thread.join(timeout_s)
