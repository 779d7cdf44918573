"""The dashboard's control API: ``POST /api/<action>`` with a JSON body, a JSON answer.

    kill      {"node": "n1"}            SIGKILL; the launcher restarts it from its data
    restart   {"node": "n1"}            stop it now and start it again at once
    stop      {"node": "n1"}            stop it and keep it down ...
    start     {"node": "n1"}            ... until started again
    pause     {"node": "n1"}            SIGSTOP (it answers nothing) ...
    resume    {"node": "n1"}            ... SIGCONT
    partition {"nodes": ["n1"]}         cut n1 off from the rest (both directions), or
              {"groups": [["n1", "n2"], ["n3"]]}   split the cluster into sides
    degrade   {"nodes": ["n1"], "peers": ["n2"], "delay_ms": 300, "drop_pct": 10,
               "jitter_ms": 0, "both_ways": true}
              slow and/or lossy links: what ``nodes`` send to ``peers`` (omit ``peers``
              for every peer; omit ``nodes`` for every node); ``both_ways`` also applies it
              to what the peers send back. Zeroes clear it.
    heal      {}                        resume paused nodes, clear every network fault
    transfer  {"target": "n2"}          ask the leader to hand leadership to n2
    submit    {"value": "hello"}        append a value through the client; answers once it
                                        is committed: {"ok": true, "index": 7, "term": 3}
    add_node  {}                        add a fresh node (never-used id, free ports, its own
                                        data dir): started, a learner, then a voter once it
                                        has caught up: {"ok": true, "node": "n6", ...}
    retire_node {"node": "n2"}          remove n2 from the cluster (leader or not), then
                                        stop its process for good
    wipe      {"node": "n2"}            a lost disk: SIGKILL n2 and delete its data dir; the
                                        launcher replaces it with a fresh node (never
                                        restarts it under its id)

Answers: ``{"ok": true, ...}``; a refused request gets 400 (bad body), 409 (cannot now) or
503 (the cluster did not commit in time, or a membership change did not complete) with ``{"ok": false, "error": "..."}``. Network
faults answer 200 with ``"errors"`` naming nodes that did not take the order (one that is
down, say). Requests must say ``Content-Type: application/json``: a browser on another site
cannot send that without a CORS preflight, which this server never grants.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from aiohttp import web

from udpraft.dashboard.control import ActionError, ActionFailed, MembershipControl

if TYPE_CHECKING:
    from udpraft.client.aio import AsyncClient
    from udpraft.config import ClusterConfig
    from udpraft.dashboard.server import Dashboard

SUBMIT_TIMEOUT_S = 5.0
VALUE_MAX_BYTES = 1024
DELAY_MS_MAX = 60_000.0

Body = dict[str, Any]
Action = Callable[["Dashboard", Body], Awaitable[Body]]


class BadRequest(Exception):
    pass


def _answer(data: Body, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


async def handle(request: web.Request) -> web.Response:
    from udpraft.dashboard.server import DASHBOARD_KEY

    dash = request.app[DASHBOARD_KEY]
    dash.sync_config()  # a node added or retired a moment ago is known here too
    name = request.match_info["action"]
    action = ACTIONS.get(name)
    if action is None:
        return _answer({"ok": False, "error": f"no action {name!r} (see GET /api)"}, 404)
    if request.content_type != "application/json":
        return _answer({"ok": False, "error": "send Content-Type: application/json"}, 415)
    try:
        raw = await request.read()
        body = json.loads(raw) if raw.strip() else {}
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
        return _answer({"ok": True, **await action(dash, body)})
    except (BadRequest, json.JSONDecodeError, UnicodeDecodeError) as e:
        return _answer({"ok": False, "error": str(e)}, 400)
    except (ActionError, KeyError) as e:
        return _answer({"ok": False, "error": str(e.args[0] if e.args else e)}, 409)
    except (SubmitFailed, ActionFailed) as e:
        return _answer({"ok": False, "error": str(e)}, 503)


async def describe(request: web.Request) -> web.Response:
    return _answer({"actions": sorted(ACTIONS), "usage": __doc__})


# -------------------------------------------------------------------- validation


def _node(dash: Dashboard, body: Body, key: str = "node") -> str:
    v = body.get(key)
    if not isinstance(v, str) or v not in dash.ids:
        raise BadRequest(f"{key} must be one of {', '.join(dash.ids)}")
    return v


def _nodes(dash: Dashboard, v: Any, key: str) -> list[str]:
    if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
        raise BadRequest(f"{key} must be a non-empty list of node ids")
    unknown = [x for x in v if x not in dash.ids]
    if unknown:
        raise BadRequest(f"unknown node(s) {unknown} in {key} (have {', '.join(dash.ids)})")
    return list(dict.fromkeys(v))


def _num(body: Body, key: str, hi: float) -> float:
    v = body.get(key, 0)
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= hi:
        raise BadRequest(f"{key} must be a number within 0..{hi:g}")
    return float(v)


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


# -------------------------------------------------------------------- actions


def _process(method: str, verb: str) -> Action:
    async def act(dash: Dashboard, body: Body) -> Body:
        node = _node(dash, body)
        await _call(getattr(dash.control, method), node)
        return {"node": node, "done": verb}

    return act


async def _partition(dash: Dashboard, body: Body) -> Body:
    if "groups" in body:
        raw = body["groups"]
        if not isinstance(raw, list) or not raw:
            raise BadRequest("groups must be a list of lists of node ids")
        groups = [_nodes(dash, g, "groups") for g in raw]
        seen = [n for g in groups for n in g]
        if len(seen) != len(set(seen)):
            raise BadRequest("a node may stand in one group only")
    else:
        groups = [_nodes(dash, body.get("nodes"), "nodes")]
    if all(len(g) == len(dash.ids) for g in groups):
        raise BadRequest("a partition needs at least two sides")
    errors = await _call(dash.control.partition, groups)
    return {"groups": groups, "errors": errors}


async def _degrade(dash: Dashboard, body: Body) -> Body:
    nodes = _nodes(dash, body["nodes"], "nodes") if "nodes" in body else list(dash.ids)
    peers = _nodes(dash, body["peers"], "peers") if body.get("peers") is not None else None
    drop_pct = _num(body, "drop_pct", 100.0)
    delay_ms = _num(body, "delay_ms", DELAY_MS_MAX)
    jitter_ms = _num(body, "jitter_ms", DELAY_MS_MAX)
    both = bool(body.get("both_ways", False))
    if peers is not None:
        peers = [p for p in peers if p not in nodes] or None
        if peers is None:
            raise BadRequest("peers must name nodes other than nodes")
    orders: list[tuple[list[str], list[str] | None]] = [(nodes, peers)]
    if both:
        back = peers if peers is not None else [n for n in dash.ids if n not in nodes]
        orders += [([p], nodes) for p in back]
    errors: list[str] = []
    for who, to in orders:
        errors += await _call(dash.control.degrade, who, to, drop_pct, delay_ms, jitter_ms)
    return {"nodes": nodes, "peers": peers, "both_ways": both, "drop_pct": drop_pct,
            "delay_ms": delay_ms, "jitter_ms": jitter_ms, "errors": errors}


async def _heal(dash: Dashboard, body: Body) -> Body:
    return {"errors": await _call(dash.control.heal)}


async def _transfer(dash: Dashboard, body: Body) -> Body:
    target = _node(dash, body, "target")
    leader = await _call(dash.control.transfer, target)
    dash.note("transfer", f"asked {leader} to hand leadership to {target}", target)
    return {"target": target, "asked": leader}


async def _submit(dash: Dashboard, body: Body) -> Body:
    value = body.get("value")
    if not isinstance(value, str) or not value:
        raise BadRequest("value must be a non-empty string")
    data = value.encode()
    if len(data) > VALUE_MAX_BYTES:
        raise BadRequest(f"value must be at most {VALUE_MAX_BYTES} bytes")
    index, term = await dash.submitter.submit(data)
    dash.note("submit", f"submitted {value[:24]!r}: committed at index {index} (term {term})")
    return {"value": value, "index": index, "term": term}


def _membership(dash: Dashboard) -> MembershipControl:
    if not callable(getattr(dash.control, "add_node", None)):
        raise ActionError("this dashboard's control cannot change the membership")
    return cast("MembershipControl", dash.control)


async def _add_node(dash: Dashboard, body: Body) -> Body:
    out: Body = await _call(_membership(dash).add_node)
    dash.sync_config()
    dash.note("member", f"added {out.get('node')} (voters: {', '.join(out.get('voters', []))})",
              str(out.get("node", "")))
    return out


async def _wipe(dash: Dashboard, body: Body) -> Body:
    node = _node(dash, body)
    wipe = getattr(dash.control, "wipe", None)
    if not callable(wipe):
        raise ActionError("this dashboard's control cannot wipe a node")
    out: Body = await _call(wipe, node)
    dash.note("fault", f"wiped {node}: it is replaced by a fresh node", node)
    return {"node": node, **out}


async def _retire_node(dash: Dashboard, body: Body) -> Body:
    node = _node(dash, body)
    out: Body = await _call(_membership(dash).retire_node, node)
    dash.sync_config()
    dash.note("member", f"retired {node}", node)
    return out


class SubmitFailed(Exception):
    pass


class Submitter:
    """One client session for the dashboard's submits (opened on first use)."""

    def __init__(self, dash: Dashboard) -> None:
        self.dash = dash
        self._client: AsyncClient | None = None
        self._config: ClusterConfig | None = None

    async def submit(self, data: bytes) -> tuple[int, int]:
        from udpraft.client.aio import AsyncClient
        from udpraft.errors import UdpRaftError

        if self._client is not None and self._config is not self.dash.config:
            await self.close()  # the membership changed: talk to the nodes there are now
        if self._client is None:
            cfg = self._config = self.dash.config
            secret = await _call(self.dash.control.secret)
            nodes = {n.id: f"{n.udp[0]}:{n.udp[1]}" for n in cfg.nodes}
            self._client = AsyncClient(nodes, secret=secret, cluster_id=cfg.cluster)
        try:
            r = await self._client.submit(data, timeout=SUBMIT_TIMEOUT_S)
        except UdpRaftError as e:
            raise SubmitFailed(f"not committed: {type(e).__name__}: {e}") from e
        return r.index, r.term

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


ACTIONS: dict[str, Action] = {
    "kill": _process("kill", "killed"),
    "restart": _process("restart", "restarting"),
    "stop": _process("stop_node", "stopped"),
    "start": _process("start_node", "starting"),
    "pause": _process("pause", "paused"),
    "resume": _process("resume", "resumed"),
    "partition": _partition,
    "degrade": _degrade,
    "heal": _heal,
    "transfer": _transfer,
    "submit": _submit,
    "add_node": _add_node,
    "retire_node": _retire_node,
    "wipe": _wipe,
}
