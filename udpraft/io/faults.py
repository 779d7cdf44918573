"""The transport's fault hook: drop, delay and partition, per peer or for everyone.

How this works: every datagram this node sends passes ``outbound(peer)`` and every datagram
it receives passes ``inbound(peer)``; each answers "drop" or a delay in seconds. Off by
default; the launcher's nemesis and the dashboard switch it over HTTP (``/fault``). Because
``tc netem`` does not exist on the project's kernel, this is where delay is injected.
``peer`` is a node id, or "" for clients (client traffic is never faulted unless "*"
rules name it explicitly through ``clients``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class LinkFault:
    drop_pct: float = 0.0
    delay_ms: float = 0.0
    jitter_ms: float = 0.0


@dataclass(slots=True)
class FaultHook:
    rng: random.Random
    all_peers: LinkFault = field(default_factory=LinkFault)
    per_peer: dict[str, LinkFault] = field(default_factory=dict)
    partitioned: set[str] = field(default_factory=set)  # peers we neither hear nor reach
    dropped_out: int = 0
    dropped_in: int = 0
    delayed: int = 0

    def active(self) -> bool:
        return bool(
            self.partitioned
            or self.per_peer
            or self.all_peers.drop_pct
            or self.all_peers.delay_ms
        )

    def _link(self, peer: str) -> LinkFault:
        return self.per_peer.get(peer, self.all_peers)

    def outbound(self, peer: str) -> float | None:
        """None: drop. Else the delay in seconds (0.0 = send now)."""
        if not peer:
            return 0.0
        if peer in self.partitioned:
            self.dropped_out += 1
            return None
        link = self._link(peer)
        if link.drop_pct and self.rng.random() * 100.0 < link.drop_pct:
            self.dropped_out += 1
            return None
        if link.delay_ms:
            self.delayed += 1
            jitter = self.rng.uniform(-link.jitter_ms, link.jitter_ms) if link.jitter_ms else 0.0
            return max(0.0, link.delay_ms + jitter) / 1000.0
        return 0.0

    def inbound(self, peer: str) -> bool:
        """False: drop what ``peer`` sent us."""
        if peer and peer in self.partitioned:
            self.dropped_in += 1
            return False
        return True

    # ------------------------------------------------------------------ control

    def apply(self, spec: dict[str, Any], known_peers: set[str]) -> None:
        """Set faults from a JSON spec (see the /fault endpoint). Raises ValueError, and
        then changes nothing.

        The two kinds compose: a spec naming a link field (``drop_pct``, ``delay_ms``,
        ``jitter_ms``) or ``peers`` sets the lossy/slow link (for ``peers``, else for all),
        and leaves the partition alone; a spec naming ``partition`` replaces the set of
        cut-off peers and leaves the links alone (a partition ordered while a node's links
        are lossy keeps them lossy)."""
        unknown = set(spec) - _SPEC_KEYS
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)} "
                             f"(known: {', '.join(sorted(_SPEC_KEYS))})")
        link: LinkFault | None = None
        targets: list[str] | None = None
        if "peers" in spec or _LINK_KEYS & spec.keys():
            link = LinkFault(
                drop_pct=_num(spec.get("drop_pct", 0.0), 0.0, 100.0, "drop_pct"),
                delay_ms=_num(spec.get("delay_ms", 0.0), 0.0, 60_000.0, "delay_ms"),
                jitter_ms=_num(spec.get("jitter_ms", 0.0), 0.0, 60_000.0, "jitter_ms"),
            )
            if spec.get("peers") is not None:
                targets = _peer_list(spec["peers"], known_peers)
        cut = set(_peer_list(spec["partition"], known_peers)) if "partition" in spec else None
        if link is not None:  # everything checked: now change
            if targets is None:
                self.all_peers = link
            else:
                for p in targets:
                    self.per_peer[p] = link
        if cut is not None:
            self.partitioned = cut

    def heal(self) -> None:
        self.all_peers = LinkFault()
        self.per_peer.clear()
        self.partitioned.clear()

    def describe(self) -> dict[str, Any]:
        def d(lf: LinkFault) -> dict[str, float]:
            return {"drop_pct": lf.drop_pct, "delay_ms": lf.delay_ms, "jitter_ms": lf.jitter_ms}

        return {
            "all": d(self.all_peers),
            "peers": {p: d(lf) for p, lf in sorted(self.per_peer.items())},
            "partition": sorted(self.partitioned),
            "dropped_out": self.dropped_out,
            "dropped_in": self.dropped_in,
            "delayed": self.delayed,
        }


_LINK_KEYS = frozenset({"drop_pct", "delay_ms", "jitter_ms"})
_SPEC_KEYS = _LINK_KEYS | {"peers", "partition"}


def _num(v: Any, lo: float, hi: float, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ValueError(f"{name} must be a number")
    if not lo <= float(v) <= hi:
        raise ValueError(f"{name} must be within {lo}..{hi}")
    return float(v)


def _peer_list(v: Any, known: set[str]) -> list[str]:
    if not isinstance(v, list) or not all(isinstance(p, str) for p in v):
        raise ValueError("peers must be a list of node ids")
    unknown = [p for p in v if p not in known]
    if unknown:
        raise ValueError(f"unknown peers: {unknown}")
    return list(v)
