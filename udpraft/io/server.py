"""Run one node: UDP endpoint + HTTP server around a NodeRuntime, until SIGTERM/SIGINT.

How this works: ``serve`` opens the log store, binds the node's UDP address with 4 MiB
socket buffers (loopback drops bursts at the 208 KiB default), starts aiohttp on the HTTP
address, and waits for a stop signal; then it stops the runtime (which finishes the
in-flight fsync and closes the store) and exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from udpraft.config import ClusterConfig
from udpraft.core.ready import Config
from udpraft.io.gctune import tune_gc, tune_switch
from udpraft.io.http import make_app
from udpraft.io.runtime import NodeRuntime
from udpraft.service.logservice import Application
from udpraft.storage import open_store

log = logging.getLogger("udpraft.node")
SOCKET_BUFFER_BYTES = 4 * 1024 * 1024


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, rt: NodeRuntime) -> None:
        self.rt = rt

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.rt.attach(transport)  # type: ignore[arg-type]  # uvloop's UDPTransport

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.rt.datagram_received(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        self.rt.error_received(exc)


def udp_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            s.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER_BYTES)
        except OSError:
            pass
    s.bind((host, port))
    s.setblocking(False)
    return s


@dataclass(slots=True)
class NodeOptions:
    node_id: str
    cluster: ClusterConfig
    secret: bytes
    data_dir: str
    storage: str = "file"
    raft_config: Config | None = None
    tick_s: float = 0.01
    app_factory: Callable[[NodeRuntime, web.Application], Application | None] | None = None
    parent_pid: int = 0  # when set, stop once this process is no longer our parent
    snapshot_entries: int = 0  # snapshot + compact every N applied entries (0: never)


async def start_node(opts: NodeOptions) -> tuple[NodeRuntime, web.AppRunner]:
    me = opts.cluster.node(opts.node_id)
    os.makedirs(opts.data_dir, exist_ok=True)
    store = open_store(opts.storage, opts.data_dir)
    snapshot_dir = os.path.join(opts.data_dir, "snapshots")
    if opts.storage == "memory":  # a memory log keeps nothing across restarts: nor do snapshots
        shutil.rmtree(snapshot_dir, ignore_errors=True)
    rt = NodeRuntime(
        opts.node_id, opts.cluster, opts.secret, store,
        raft_config=opts.raft_config, tick_s=opts.tick_s,
        snapshot_dir=snapshot_dir, snapshot_entries=opts.snapshot_entries,
    )
    app = make_app(rt)
    if opts.app_factory is not None:
        application = opts.app_factory(rt, app)
        if application is not None:
            rt.service.app = application
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(lambda: _Protocol(rt), sock=udp_socket(*me.udp))
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, me.http[0], me.http[1], reuse_address=True)
    await site.start()
    log.info("node %s: udp %s:%d http %s:%d data %s (%s)", opts.node_id, *me.udp, *me.http,
             opts.data_dir, opts.storage)
    return rt, runner


async def serve(opts: NodeOptions) -> int:
    rt, runner = await start_node(opts)
    tune_gc()  # a node process is ours: collect garbage cycles less often (gctune.py)
    tune_switch()  # and let its disk thread in sooner
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watcher = None
    if opts.parent_pid:
        watcher = asyncio.create_task(_watch_parent(opts.parent_pid, stop))
    await stop.wait()
    if watcher is not None:
        watcher.cancel()
    log.info("node %s: stopping", opts.node_id)
    await runner.cleanup()
    await rt.stop()
    return 0


async def _watch_parent(parent_pid: int, stop: asyncio.Event) -> None:
    """Orphaned (the launcher died, even by SIGKILL): stop like on SIGTERM."""
    while not stop.is_set():
        if os.getppid() != parent_pid:
            log.warning("parent %d is gone; stopping", parent_pid)
            stop.set()
            return
        await asyncio.sleep(0.5)
