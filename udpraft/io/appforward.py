"""An application's commands forwarded node to node (the KV store's writes).

How this works: part of NodeRuntime (a mixin; runtime.py owns the state it declares here).
The application installs ``on_app_forward`` (on every node: it runs when this node is asked
to propose a follower's commands) and ``on_app_forward_resp`` (the answers to what this node
forwarded), and sends with ``send_to_node``. The messages travel over the node's own
reliable endpoint: authenticated, retransmitted until acknowledged, deduplicated by message
id, fragmented when large. Only members may send them; anything else is dropped and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable

from udpraft.io.faults import FaultHook
from udpraft.reliability.endpoint import ReliableEndpoint
from udpraft.wire import AppForward, AppForwardResp, EncodeError

Addr = tuple[str, int]


class AppForwarding:
    ep: ReliableEndpoint[Addr]
    addr_of: dict[str, Addr]
    counters: Counter[str]
    faults: FaultHook
    _loop: asyncio.AbstractEventLoop | None
    on_app_forward: Callable[[str, AppForward], None] | None
    on_app_forward_resp: Callable[[str, AppForwardResp], None] | None

    def _kick(self) -> None:
        raise NotImplementedError

    def _flush_net(self) -> None:
        raise NotImplementedError

    def _on_app_forward(self, sender: str, m: AppForward | AppForwardResp) -> None:
        if sender not in self.addr_of:
            self.counters["drop_app_forward_from_stranger"] += 1
            return
        if type(m) is AppForward:
            if self.on_app_forward is None:
                self.counters["drop_app_forward_unhandled"] += 1
            else:
                self.on_app_forward(sender, m)
        elif type(m) is AppForwardResp:
            if self.on_app_forward_resp is None:
                self.counters["drop_app_forward_unhandled"] += 1
            else:
                self.on_app_forward_resp(sender, m)

    def send_to_node(self, node_id: str, msg: AppForward | AppForwardResp) -> bool:
        """Send ``msg`` to member ``node_id`` reliably, in this loop turn's flush. False:
        not sent (no address for ``node_id``, too large, or a bound of the endpoint, which
        counts it). The fault hook's rules for messages to ``node_id`` apply: a drop loses
        it, as on a link that is down."""
        addr = self.addr_of.get(node_id)
        if addr is None:
            return False
        if self.faults.active():
            delay = self.faults.outbound(node_id)
            if delay is None:
                return True  # lost on the way, like any datagram to a cut-off peer
            if delay > 0 and self._loop is not None:
                self._loop.call_later(delay, self._send_node_later, addr, node_id, msg)
                return True
        try:
            ok = self.ep.send(addr, msg, True, time.monotonic(), dst=node_id)
        except EncodeError:
            self.counters["app_forward_too_large"] += 1
            return False
        self._kick()
        return ok

    def _send_node_later(self, addr: Addr, node_id: str, msg: AppForward | AppForwardResp) -> None:
        with contextlib.suppress(EncodeError):
            self.ep.send(addr, msg, True, time.monotonic(), dst=node_id)
        self._flush_net()
