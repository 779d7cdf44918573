"""A simulated network: delay, loss, duplication, reordering, partitions, flapping links.

How this works: ``send`` decides, with the cluster's single seeded generator, whether a
message is lost, how long it travels (reordering falls out of random delays) and whether it
is duplicated; it returns the delivery times. Links are directed, so a partition can be
asymmetric (a -> b blocked while b -> a flows). A blocked link drops at *send* time and again
at *delivery* time (a message in flight when a partition starts is lost, as in a real cut).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(slots=True)
class NetConfig:
    delay_ms_min: float = 0.5
    delay_ms_max: float = 5.0
    loss: float = 0.0
    dup: float = 0.0
    long_delay: float = 0.0  # probability of a long hold (0.2-2 s): "long reordering"


@dataclass(slots=True)
class Network:
    rng: random.Random
    cfg: NetConfig = field(default_factory=NetConfig)
    blocked: set[tuple[str, str]] = field(default_factory=set)
    sent: int = 0
    dropped: int = 0
    sent_by_type: dict[str, int] = field(default_factory=dict)

    def can_pass(self, src: str, dst: str) -> bool:
        return (src, dst) not in self.blocked

    def send(self, src: str, dst: str, type_name: str, now_ms: float) -> list[float]:
        """Return the delivery times of this message (empty when it is lost)."""
        self.sent += 1
        self.sent_by_type[type_name] = self.sent_by_type.get(type_name, 0) + 1
        if not self.can_pass(src, dst):
            self.dropped += 1
            return []
        rng = self.rng
        if self.cfg.loss and rng.random() < self.cfg.loss:
            self.dropped += 1
            return []
        copies = 2 if self.cfg.dup and rng.random() < self.cfg.dup else 1
        out = []
        for _ in range(copies):
            d = rng.uniform(self.cfg.delay_ms_min, self.cfg.delay_ms_max)
            if self.cfg.long_delay and rng.random() < self.cfg.long_delay:
                d += rng.uniform(200.0, 2000.0)
            out.append(now_ms + d)
        return out

    # -- partitions ---------------------------------------------------------------------

    def isolate(self, node: str, everyone: list[str]) -> None:
        for o in everyone:
            if o != node:
                self.blocked.add((node, o))
                self.blocked.add((o, node))

    def split(self, side_a: list[str], side_b: list[str]) -> None:
        for a in side_a:
            for b in side_b:
                self.blocked.add((a, b))
                self.blocked.add((b, a))

    def block_one_way(self, src: str, dst: str) -> None:
        self.blocked.add((src, dst))

    def reconnect(self, node: str) -> None:
        self.blocked = {(a, b) for (a, b) in self.blocked if a != node and b != node}

    def heal(self) -> None:
        self.blocked.clear()
