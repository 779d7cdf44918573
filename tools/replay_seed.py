"""Replay one simulator seed with a readable trace: ``python -m tools.replay_seed SEED``.

The same seed always produces the same run (one generator derives every fault), so the trace
shows exactly what led to a failure: starts, crashes, partitions, leaders, and the verdict.
"""

from __future__ import annotations

import argparse
import sys

from udpraft.sim.run import run_seed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.replay_seed", description=__doc__)
    ap.add_argument("seed", type=int)
    ap.add_argument("--nodes", type=int, default=5)
    ap.add_argument("--safety-ms", type=float, default=2000.0)
    ap.add_argument("--tail", type=int, default=0, help="print only the last N trace lines")
    args = ap.parse_args(argv)
    r = run_seed(args.seed, nodes=args.nodes, safety_ms=args.safety_ms, trace=True)
    lines = r.trace[-args.tail :] if args.tail else r.trace
    for line in lines:
        print(line)
    print(r.line())
    return 0 if r.ok else 1


if __name__ == "__main__":
    sys.exit(main())
