"""The live dashboard: watch a udpraft cluster in a browser, and break it on purpose.

The launcher serves it at ``cluster.json``'s ``dashboard`` URL:

    from udpraft.dashboard import DashboardThread
    dash = DashboardThread(control, "127.0.0.1", 8080)   # control: see control.py
    dash.start(); ...; dash.stop()

One page (``static/``: plain HTML, CSS and JavaScript, no build step) follows a
Server-Sent Events stream of snapshots; every button on it is also an HTTP call
(``POST /api/<action>``, see api.py) and a ``python -m launcher ctl`` command.
The package imports aiohttp, ``udpraft.config`` and, for submits, ``udpraft.client``.
Names are imported on first use, so ``udpraft.dashboard.control`` alone stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from udpraft.dashboard.control import ActionError, Control
    from udpraft.dashboard.server import Dashboard, DashboardThread

__all__ = ["ActionError", "Control", "Dashboard", "DashboardThread"]


def __getattr__(name: str) -> Any:
    if name in ("ActionError", "Control"):
        from udpraft.dashboard import control

        return getattr(control, name)
    if name in ("Dashboard", "DashboardThread"):
        from udpraft.dashboard import server

        return getattr(server, name)
    raise AttributeError(f"module 'udpraft.dashboard' has no attribute {name!r}")
