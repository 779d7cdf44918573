"""``python -m tools.bench core``: proposals committed per second by the pure core.

Three (or N) RaftNodes in one process, no faults, an instant "disk" and a perfect network;
the leader proposes batches of ``--batch`` entries of ``--payload`` bytes, keeping
``--window`` entries in flight. It measures the algorithm's own cost per entry: batching,
log slicing, progress tracking, commit counting and apply hand-off.
"""

from __future__ import annotations

import argparse
import random
import time
from collections import deque

from udpraft.core.messages import Message
from udpraft.core.raft import RaftNode
from udpraft.core.ready import Config, Role


def run(nodes: int, payload: int, batch: int, window: int, duration_s: float) -> dict[str, float]:
    ids = [f"n{i + 1}" for i in range(nodes)]
    cfg = Config(max_msg_bytes=1 << 20, max_inflight_msgs=1024, max_uncommitted_entries=1 << 22)
    rafts = {i: RaftNode(i, ids, random.Random(k), cfg) for k, i in enumerate(ids)}
    q: deque[Message] = deque()

    def pump() -> int:
        applied = 0
        progress = True
        while progress:
            progress = False
            for r in rafts.values():
                while r.has_ready():
                    rd = r.ready()
                    q.extend(rd.messages)
                    q.extend(rd.persisted_messages)
                    if r.role == Role.LEADER:
                        applied += len(rd.committed_entries)
                    r.advance(rd)
                    progress = True
            while q:
                m = q.popleft()
                rafts[m.dst].step(m)
                progress = True
        return applied

    rafts[ids[0]].campaign()
    pump()
    leader = rafts[ids[0]]
    assert leader.role == Role.LEADER
    data = b"x" * payload
    items = [(data, "", 0)] * batch
    committed = 0
    lat: list[float] = []
    t0 = time.perf_counter()
    deadline = t0 + duration_s
    while time.perf_counter() < deadline:
        in_flight = leader.log.last_index() - leader.log.committed
        if in_flight < window:
            t_prop = time.perf_counter()
            leader.propose_batch(items)
            committed += pump()
            lat.append(time.perf_counter() - t_prop)
        else:
            committed += pump()
    dt = time.perf_counter() - t0
    lat.sort()
    return {
        "ops_per_s": committed / dt,
        "p50_ms": 1000 * lat[len(lat) // 2] if lat else 0.0,
        "p99_ms": 1000 * lat[int(len(lat) * 0.99)] if lat else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.bench core", description=__doc__)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--payload", type=int, default=10)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--window", type=int, default=10_000)
    ap.add_argument("--duration-s", type=float, default=5.0)
    a = ap.parse_args(argv)
    r = run(a.nodes, a.payload, a.batch, a.window, a.duration_s)
    print(
        f"udpraft core nodes={a.nodes} payload={a.payload} batch={a.batch} window={a.window} "
        f"ops_per_s={r['ops_per_s']:.0f} p50_ms={r['p50_ms']:.2f} p99_ms={r['p99_ms']:.2f}"
    )
    return 0
