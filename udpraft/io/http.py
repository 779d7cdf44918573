"""The node's HTTP face (aiohttp): /status, /metrics, /log, /fault, /transfer, /health.

The key-value API (etcd v3 JSON) mounts its routes on the same application when enabled.
Bad requests get a JSON error body; nothing here blocks the event loop.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from udpraft.core.errors import RaftError
from udpraft.io.metrics import render_metrics
from udpraft.io.runtime import NodeRuntime

RUNTIME_KEY: web.AppKey[NodeRuntime] = web.AppKey("runtime", NodeRuntime)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message, "code": status}, status)


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw:
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise web.HTTPBadRequest(
            body=orjson.dumps({"error": f"malformed JSON: {e}", "code": 400}),
            content_type="application/json",
        ) from None
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(
            body=orjson.dumps({"error": "body must be a JSON object", "code": 400}),
            content_type="application/json",
        )
    return data


async def status(request: web.Request) -> web.Response:
    return _json(request.app[RUNTIME_KEY].status())


async def health(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME_KEY]
    return _json({"ok": True, "id": rt.id, "role": rt.raft.role.name.lower()})


async def metrics(request: web.Request) -> web.Response:
    body, ctype = render_metrics(request.app[RUNTIME_KEY])
    return web.Response(body=body, headers={"Content-Type": ctype})


async def log_tail(request: web.Request) -> web.Response:
    try:
        n = int(request.query.get("tail", "20"))
    except ValueError:
        return _error(400, "tail must be an integer")
    return _json(request.app[RUNTIME_KEY].log_tail(n))


async def fault_get(request: web.Request) -> web.Response:
    return _json(request.app[RUNTIME_KEY].faults.describe())


async def fault_set(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME_KEY]
    spec = await _body(request)
    if spec.get("heal"):
        rt.faults.heal()
        return _json(rt.faults.describe())
    try:
        rt.faults.apply(spec, set(rt.addr_of) - {rt.id})
    except ValueError as e:
        return _error(400, str(e))
    return _json(rt.faults.describe())


async def fault_clear(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME_KEY]
    rt.faults.heal()
    return _json(rt.faults.describe())


async def transfer(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME_KEY]
    spec = await _body(request)
    target = spec.get("target")
    if not isinstance(target, str) or not target:
        return _error(400, "target must be a node id")
    try:
        rt.transfer_leadership(target)
    except RaftError as e:
        return _error(409, str(e))
    return _json({"ok": True, "target": target})


def make_app(rt: NodeRuntime) -> web.Application:
    app = web.Application(client_max_size=4 * 1024 * 1024)
    app[RUNTIME_KEY] = rt
    app.router.add_get("/status", status)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/log", log_tail)
    app.router.add_get("/fault", fault_get)
    app.router.add_post("/fault", fault_set)
    app.router.add_delete("/fault", fault_clear)
    app.router.add_post("/transfer", transfer)
    return app
