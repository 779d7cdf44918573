"""A narrated 5-node simulated cluster: election, replication, a leader crash, recovery.

``python -m tools.sim_demo [--seed S]`` — everything runs in one process on virtual time with
the real Raft core, so what it prints is what the core does, step by step.
"""

from __future__ import annotations

import argparse
import sys

from udpraft.core.ready import Role
from udpraft.sim.cluster import Cluster, SimConfig


def describe(c: Cluster) -> str:
    parts = []
    for i in c.ids:
        n = c.nodes[i]
        if not n.up or n.raft is None:
            parts.append(f"{i}:DOWN")
            continue
        r = n.raft
        parts.append(f"{i}:{r.role.name[:4]} t{r.term} c{r.log.committed}/{r.log.last_index()}")
    return "  ".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.sim_demo", description=__doc__)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    c = Cluster(a.seed, SimConfig(nodes=5))
    say = print
    say(f"[{c.now:7.1f} ms] five nodes start as followers, each with a random election timeout")
    c.wait_for(lambda: c.leader() is not None, 2000)
    ld = c.leader()
    assert ld is not None
    say(f"[{c.now:7.1f} ms] {ld} won the election for term {c.raft(ld).term} (pre-vote, then vote)")
    say("             " + describe(c))
    for k in range(5):
        c.propose(ld, f"hello-{k}".encode())
    c.wait_for(lambda: all(c.raft(i).log.committed >= 6 for i in c.ids), 2000)
    say(f"[{c.now:7.1f} ms] 5 entries proposed to {ld}, replicated to all and committed")
    say("             " + describe(c))
    c.crash(ld)
    say(f"[{c.now:7.1f} ms] {ld} CRASHES (kill -9: only what it fsynced survives)")
    c.wait_for(lambda: c.leader() not in (None, ld), 3000)
    l2 = c.leader()
    assert l2 is not None
    say(f"[{c.now:7.1f} ms] followers timed out; {l2} leads term {c.raft(l2).term}")
    for k in range(3):
        c.propose(l2, f"after-{k}".encode())
    c.run_for(300)
    say(f"[{c.now:7.1f} ms] 3 more entries committed by the four survivors")
    say("             " + describe(c))
    c.restart(ld)
    say(f"[{c.now:7.1f} ms] {ld} restarts from its disk and rejoins as a follower")
    target = c.raft(l2).log.last_index()
    c.wait_for(lambda: c.raft(ld).log.committed >= target, 3000)
    say(f"[{c.now:7.1f} ms] {ld} caught up: every node holds the same committed log")
    say("             " + describe(c))
    roles = [c.raft(i).role for i in c.ids]
    ok = roles.count(Role.LEADER) == 1 and len({c.raft(i).log.committed for i in c.ids}) == 1
    say("invariants checked after every step: one leader per term, log matching, "
        "committed entries never change")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
