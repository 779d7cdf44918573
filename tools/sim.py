"""Run many seeded simulations: ``python -m tools.sim --seeds 1..500 --nodes 5``.

Prints one line per failing seed (with its fault mix) and, last,
``sim seeds=N failures=F``. Exits non-zero when any seed fails; replay one with
``python -m tools.replay_seed SEED``.
"""

from __future__ import annotations

import argparse
import sys
import time

from udpraft.sim.run import run_seed


def parse_range(text: str) -> range:
    if ".." in text:
        a, b = text.split("..", 1)
        return range(int(a), int(b) + 1)
    return range(int(text), int(text) + 1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.sim", description=__doc__)
    ap.add_argument("--seeds", default="1..100", help="A..B (inclusive) or one seed")
    ap.add_argument("--nodes", type=int, default=5)
    ap.add_argument("--safety-ms", type=float, default=2000.0)
    ap.add_argument("--verbose", "-v", action="store_true", help="print every seed")
    args = ap.parse_args(argv)
    seeds = parse_range(args.seeds)
    failures = 0
    t0 = time.perf_counter()
    for s in seeds:
        r = run_seed(s, nodes=args.nodes, safety_ms=args.safety_ms)
        if not r.ok:
            failures += 1
            print(r.line(), flush=True)
            print(f"  replay: python -m tools.replay_seed {s} --nodes {args.nodes}", flush=True)
        elif args.verbose:
            print(r.line(), flush=True)
    dt = time.perf_counter() - t0
    print(f"sim seeds={len(seeds)} failures={failures} nodes={args.nodes} seconds={dt:.1f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
