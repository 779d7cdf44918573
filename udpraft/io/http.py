"""The node's HTTP face (aiohttp): /status, /metrics, /log, /fault, /transfer, /health,
/members (GET: the membership; POST {"op", "id", "udp", "http", "force"}: change it, on the
leader).

The key-value API (etcd v3 JSON) mounts its routes on the same application when enabled.
Bad requests get a JSON error body; nothing here blocks the event loop.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from udpraft.core.errors import InvalidRequest, NotLeader, ProposalDropped, RaftError
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
    if spec.pop("heal", False):
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


async def members_get(request: web.Request) -> web.Response:
    return _json(request.app[RUNTIME_KEY].members.describe())


async def members_post(request: web.Request) -> web.Response:
    """One membership change. 200 once committed; 421 on a follower (with the leader's id
    and HTTP address, to retry there); 400 for a change that makes no sense; 409 while
    another change is in flight; 504 when it did not commit in time (it may still)."""
    rt = request.app[RUNTIME_KEY]
    spec = await _body(request)
    op, node = spec.get("op"), spec.get("id")
    udp, http = spec.get("udp", ""), spec.get("http", "")
    timeout = spec.get("timeout_s", 10.0)
    force = spec.get("force", False)
    if not isinstance(force, bool):
        return _error(400, "force must be true or false")
    if not isinstance(op, str) or not isinstance(node, str) or not node:
        return _error(400, "want {\"op\": add_learner|add_voter|promote|remove, \"id\": node id}")
    if not isinstance(udp, str) or not isinstance(http, str):
        return _error(400, "udp and http must be host:port strings")
    if not isinstance(timeout, int | float) or not 0 < timeout <= 60:
        return _error(400, "timeout_s must be a number in (0, 60]")
    try:
        return _json(await rt.members.change(op, node, udp, http, float(timeout), force))
    except NotLeader as e:
        leader = e.leader
        return _json({"error": f"not the leader (leader: {leader or 'unknown'})", "code": 421,
                      "leader": leader, "leader_http": rt.book.http_of.get(leader, "")}, 421)
    except InvalidRequest as e:
        return _error(400, str(e))
    except ProposalDropped as e:
        return _error(409, str(e))
    except TimeoutError as e:
        return _error(504, str(e))
    except RaftError as e:
        return _error(409, str(e))


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
    app.router.add_get("/members", members_get)
    app.router.add_post("/members", members_post)
    return app
