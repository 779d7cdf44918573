"""etcd 3.4's v3 JSON API (grpc-gateway paths and shapes) on the node's aiohttp app.

How this works: each handler reads the body, decodes it with etcd's gateway semantics
(``udpraft.kv.parse``; a bad request is answered here, never proposed), then either
proposes a command through ``KVNode.write`` (put, delete, write txn, compaction, lease grant
and revoke), reads locally after ReadIndex (range, read-only txn), or runs on the leader
(keepalive, time-to-live, leases: the lease clocks live there).

Streaming calls follow the gateway: ``/v3/watch`` and ``/v3/lease/keepalive`` read a stream
of JSON request objects from the body and write one ``{"result": ...}`` line per response.
A first request that cannot be decoded gets a plain error answer (code 2, HTTP 500, as the
gateway does); a later one closes the client's side (no more requests are read; watches
already made go on, a keepalive stream ends). A failure of the call itself (no leader) is
a ``{"error": {...}}`` line. A watch stream stays open until the client goes away or the
node stops. Unlike Go's HTTP/1 server, which answers only once the request body is
complete, requests are served as they arrive, so one open stream can add watches later.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from aiohttp import web

from udpraft.kv import errors
from udpraft.kv.errors import KvError
from udpraft.kv.gojson import EOF_DECODER, EmptyInput, GoJsonError, scan_value
from udpraft.kv.jsonfmt import b64
from udpraft.kv.parse import (
    compaction_request,
    delete_request,
    lease_grant,
    lease_id,
    lease_ttl_request,
    load_body,
    parse,
    put_request,
    range_request,
    txn_request,
    validate,
    watch_request,
)
from udpraft.kv.server import KVNode, error_response, json_response
from udpraft.kv.types import (
    LeaseGrantReq,
    RangeReq,
    TxnReq,
    encode_command,
    is_read_only,
    revoke_command,
)
from udpraft.kv.watch import WatchStream

KV_NODE: web.AppKey[KVNode] = web.AppKey("kv_node", KVNode)
MAX_STREAM_BUFFER = 1 << 20  # bytes of one not-yet-complete request object in a stream
WATCH_IDLE_CHECK_S = 1.0


def _node(request: web.Request) -> KVNode:
    return request.app[KV_NODE]


# ================================================================== KV


async def kv_range(request: web.Request) -> web.Response:
    node = _node(request)
    try:
        r: RangeReq = validate(parse(await request.read(), range_request))  # type: ignore[assignment]
    except KvError as e:
        return error_response(e)
    return await _read(node, r.serializable, lambda: node.machine.range(r))


async def _write(request: web.Request, decode: Callable[[bytes], Any]) -> web.Response:
    """Decode a write request, then propose it (forwarded when this node is a follower)."""
    try:
        cmd = encode_command(decode(await request.read()))
    except KvError as e:
        return error_response(e)
    return await _node(request).write(cmd)


async def _read(node: KVNode, serializable: bool, run: Callable[[], Any]) -> web.Response:
    """Serve a read after the ReadIndex barrier (unless serializable)."""
    bad = await node.read_barrier(serializable)
    if bad is not None:
        return error_response(bad)
    try:
        return node.answer(run())
    except KvError as e:
        return error_response(e)


async def kv_put(request: web.Request) -> web.Response:
    return await _write(request, lambda raw: validate(parse(raw, put_request)))


async def kv_delete(request: web.Request) -> web.Response:
    return await _write(request, lambda raw: validate(parse(raw, delete_request)))


async def kv_txn(request: web.Request) -> web.Response:
    node = _node(request)
    raw = await request.read()
    try:
        t: TxnReq = validate(parse(raw, txn_request))  # type: ignore[assignment]
    except KvError as e:
        return error_response(e)
    if not is_read_only(t):
        return await node.write(encode_command(t))
    serializable = all(o.serializable for o in t.success + t.failure)  # type: ignore[union-attr]
    return await _read(node, serializable, lambda: node.machine.txn(t))


async def kv_compaction(request: web.Request) -> web.Response:
    return await _write(request, lambda raw: parse(raw, compaction_request))


# ================================================================== leases


async def lease_grant_h(request: web.Request) -> web.Response:
    node = _node(request)
    raw = await request.read()
    try:
        g = parse(raw, lease_grant)
    except KvError as e:
        return error_response(e)
    if g.id == 0:  # as in etcd, the member asked picks a random id before proposing
        g = LeaseGrantReq(node.new_lease_id(), g.ttl)
    return await node.write(encode_command(g))


async def lease_revoke(request: web.Request) -> web.Response:
    raw = await request.read()
    try:
        lid = parse(raw, lease_id)
    except KvError as e:
        return error_response(e)
    if lid == 0:
        return error_response(errors.err(errors.LEASE_NOT_FOUND))
    return await _node(request).write(revoke_command(lid))


async def lease_ttl(request: web.Request) -> web.Response:
    node = _node(request)
    raw = await request.read()
    try:
        lid, keys = parse(raw, lease_ttl_request)
    except KvError as e:
        return error_response(e)

    async def on_leader(deadline: float) -> web.Response | None:
        if await node.read_barrier(False, deadline) is not None:
            return None
        resp: dict[str, Any] = {"header": {"revision": str(node.machine.store.rev)}}
        if lid:
            resp["ID"] = str(lid)
        lease = node.machine.leases.get(lid)
        if lease is None:
            resp["TTL"] = "-1"
            return node.answer(resp)
        resp["TTL"] = str(node.remaining_s(lid))
        resp["grantedTTL"] = str(lease.ttl)
        if keys and lease.keys:
            resp["keys"] = [b64(k) for k in sorted(lease.keys)]
        return node.answer(resp)

    return await node.on_leader(request, raw, on_leader)


async def lease_leases(request: web.Request) -> web.Response:
    node = _node(request)
    raw = await request.read()
    try:
        load_body(raw)
    except KvError as e:
        return error_response(e)

    async def on_leader(deadline: float) -> web.Response | None:
        if await node.read_barrier(False, deadline) is not None:
            return None
        far = time.monotonic() + 1e12
        ids = sorted(node.machine.leases.leases, key=lambda i: (node.deadlines.get(i, far), i))
        resp: dict[str, Any] = {"header": {"revision": str(node.machine.store.rev)}}
        if ids:
            resp["leases"] = [{"ID": str(i)} for i in ids]
        return node.answer(resp)

    return await node.on_leader(request, raw, on_leader)


async def lease_keepalive(request: web.Request) -> web.StreamResponse:
    """Each request object renews one lease on the leader; one result line per object.
    As in the gateway, a request that cannot be decoded after the first just ends the
    stream (the client's side of the stream is closed)."""
    node = _node(request)
    resp: web.StreamResponse | None = None
    async for item in iter_objects(request):
        try:
            if isinstance(item, KvError):
                raise item
            lid = lease_id(load_body(item))
        except KvError as e:
            if resp is None:
                return json_response(KvError(errors.UNKNOWN, e.message).body(), 500)
            break
        line = await _keepalive_one(node, request, item, lid)
        if resp is None:
            # a failure before anything was written sets the status, as in the gateway
            status = 200 if line.startswith(b'{"result"') else int(orjson.loads(line)["error"]["http_code"])
            resp = web.StreamResponse(status=status, headers={"Content-Type": "application/json"})
            await resp.prepare(request)
        await resp.write(line)
        if not line.startswith(b'{"result"'):
            break
    if resp is None:  # empty body: the gateway answers an empty stream
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
    await resp.write_eof()
    return resp


async def _keepalive_one(node: KVNode, request: web.Request, item: bytes, lid: int) -> bytes:
    async def on_leader(deadline: float) -> web.Response | None:
        if await node.read_barrier(False, deadline) is not None:
            return None
        ttl = node.renew(lid)
        res: dict[str, Any] = {"header": {"revision": str(node.machine.store.rev)}}
        if lid:
            res["ID"] = str(lid)
        if ttl:
            res["TTL"] = str(ttl)
        return json_response({"result": node.fill(res)})

    r = await node.on_leader(request, item, on_leader, path="/v3/lease/keepalive")
    body = r.body if isinstance(r.body, bytes) else b"{}"
    d = orjson.loads(body.split(b"\n", 1)[0] or b"{}")
    if r.status != 200 or "result" not in d:
        e = KvError(d.get("code", errors.UNKNOWN), d.get("message", "keepalive failed"))
        if isinstance(d.get("error"), dict):  # the leader's own stream error
            return orjson.dumps(d) + b"\n"
        return orjson.dumps(e.stream_body()) + b"\n"
    node.fill(d["result"])  # forwarded: this member answers
    return orjson.dumps(d) + b"\n"


# ================================================================== watch


async def iter_objects(request: web.Request) -> AsyncIterator[bytes | KvError]:
    """The request body as a stream of JSON values (Go's json.Decoder over the body)."""
    buf = b""
    content = request.content
    eof = False
    while True:
        while buf:
            try:
                start, end = scan_value(buf)
            except EmptyInput:
                buf = b""
                break
            except GoJsonError as e:
                if str(e) == EOF_DECODER and not eof:
                    break
                yield KvError(errors.INVALID_ARGUMENT, str(e))
                return
            if end == len(buf) and buf[start] in b"-0123456789" and not eof:
                break  # a bare number may continue in the next chunk
            yield buf[start:end]
            buf = buf[end:]
        if eof:
            return
        if len(buf) > MAX_STREAM_BUFFER:
            yield errors.err(errors.REQUEST_TOO_LARGE)
            return
        chunk = await content.readany()
        if not chunk:
            eof = True
            if not buf.strip():
                return
        buf += chunk


def _handle_watch(node: KVNode, stream: WatchStream, item: bytes) -> KvError | None:
    try:
        kind, arg = watch_request(load_body(item))
    except KvError as e:
        return e
    if kind == "create":
        stream.create(arg)
    elif kind == "cancel":
        stream.cancel(arg)
    elif kind == "progress":
        stream.progress()
    return None


async def watch(request: web.Request) -> web.StreamResponse:
    node = _node(request)
    objects = iter_objects(request).__aiter__()
    wake = asyncio.Event()
    stream = WatchStream(node.hub, wake.set)
    node.stream_wakers.add(wake.set)
    try:
        first = await anext(objects, None)
        if isinstance(first, KvError):
            return json_response(KvError(errors.UNKNOWN, first.message).body(), 500)
        if first is not None:
            bad = _handle_watch(node, stream, first)
            if bad is not None:
                return json_response(KvError(errors.UNKNOWN, bad.message).body(), 500)
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        reader = asyncio.get_running_loop().create_task(_read_watch(node, stream, objects))
        try:
            await _write_watch(node, request, resp, stream, wake)
        finally:
            reader.cancel()
        return resp
    finally:
        node.stream_wakers.discard(wake.set)
        stream.close()


async def _read_watch(node: KVNode, stream: WatchStream, objects: AsyncIterator[bytes | KvError]) -> None:
    """Later requests of the stream. As in the gateway, one that cannot be decoded closes
    the client's side: no more requests are read, the watches already made go on."""
    async for item in objects:
        if isinstance(item, KvError) or _handle_watch(node, stream, item) is not None:
            return


async def _write_watch(
    node: KVNode,
    request: web.Request,
    resp: web.StreamResponse,
    stream: WatchStream,
    wake: asyncio.Event,
) -> None:
    try:
        while True:
            items = stream.pop(64)
            if items:
                out = b"".join(
                    b'{"result":' + orjson.dumps(node.fill(r)) + b"}\n" for r in items
                )
                await resp.write(out)
                continue
            if node.closing:
                return
            if stream.overflow:
                e = KvError(errors.RESOURCE_EXHAUSTED, "udpraft: watch stream overflow")
                await resp.write(orjson.dumps(e.stream_body()) + b"\n")
                return
            wake.clear()
            try:
                await asyncio.wait_for(wake.wait(), WATCH_IDLE_CHECK_S)
            except TimeoutError:
                tr = request.transport
                if tr is None or tr.is_closing():
                    return
    except (ConnectionResetError, ConnectionError, RuntimeError):
        return


# ================================================================== maintenance


async def maintenance_status(request: web.Request) -> web.Response:
    raw = await request.read()
    try:
        load_body(raw)
    except KvError as e:
        return error_response(e)
    return json_response(_node(request).status())


def mount(app: web.Application, node: KVNode) -> None:
    app[KV_NODE] = node
    r = app.router
    r.add_post("/v3/kv/range", kv_range)
    r.add_post("/v3/kv/put", kv_put)
    r.add_post("/v3/kv/deleterange", kv_delete)
    r.add_post("/v3/kv/txn", kv_txn)
    r.add_post("/v3/kv/compaction", kv_compaction)
    r.add_post("/v3/lease/grant", lease_grant_h)
    r.add_post("/v3/lease/revoke", lease_revoke)
    r.add_post("/v3/kv/lease/revoke", lease_revoke)
    r.add_post("/v3/lease/keepalive", lease_keepalive)
    r.add_post("/v3/lease/timetolive", lease_ttl)
    r.add_post("/v3/kv/lease/timetolive", lease_ttl)
    r.add_post("/v3/lease/leases", lease_leases)
    r.add_post("/v3/kv/lease/leases", lease_leases)
    r.add_post("/v3/watch", watch)
    r.add_post("/v3/maintenance/status", maintenance_status)
