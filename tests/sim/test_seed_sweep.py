"""Random seed sweeps: safety with random faults, then liveness in a healed cluster.

``make test`` runs UDPRAFT_SIM_SEEDS (default 500) five-node seeds, split into chunks so
pytest-xdist can use both cores, plus smaller sweeps on 3 and 7 nodes. A failing seed
prints its fault mix and the command that replays it; once fixed, it joins REGRESSION_SEEDS.
"""

from __future__ import annotations

import os

import pytest

from udpraft.sim.run import run_seed

SEEDS = int(os.environ.get("UDPRAFT_SIM_SEEDS", "500"))
CHUNKS = 10

# Seeds that once failed (seed, nodes): kept forever as regression tests.
REGRESSION_SEEDS: list[tuple[int, int]] = [
    # Pipelined first request of a session was refused as "expired" (fixed: sessions open
    # with a lone first request); found by seeds 8, 10, 12 in the first sweep.
    (8, 5),
    (10, 5),
    (12, 5),
]


def _sweep(seeds: range, nodes: int) -> None:
    failures = []
    for s in seeds:
        r = run_seed(s, nodes=nodes)
        if not r.ok:
            failures.append(r.line() + f"\n  replay: python -m tools.replay_seed {s} --nodes {nodes}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_five_node_seeds(chunk: int) -> None:
    per = (SEEDS + CHUNKS - 1) // CHUNKS
    _sweep(range(1 + chunk * per, 1 + min(SEEDS, (chunk + 1) * per)), 5)


@pytest.mark.parametrize("nodes", [3, 7])
def test_other_sizes(nodes: int) -> None:
    _sweep(range(10_000, 10_000 + 60), nodes)


# Membership seeds that failed liveness on intermediate versions of membership changes (a
# node that just joined, and a voter that missed the entry adding the new leader, refused
# the leader's appends as from an unknown sender). Run with the membership nemesis forced on.
MEMBERSHIP_REGRESSION_SEEDS: list[tuple[int, int]] = [(181, 5), (425, 5), (109, 5)]


@pytest.mark.parametrize(("seed", "nodes"), MEMBERSHIP_REGRESSION_SEEDS)
def test_membership_regression_seed(seed: int, nodes: int) -> None:
    r = run_seed(seed, nodes=nodes, membership=True)
    assert r.ok, r.line()


@pytest.mark.parametrize(("seed", "nodes"), REGRESSION_SEEDS)
def test_regression_seed(seed: int, nodes: int) -> None:
    r = run_seed(seed, nodes=nodes)
    assert r.ok, r.line()
    assert r.acked > 0, "the regression seed must exercise client requests"


def test_same_seed_same_run() -> None:
    a = run_seed(42, trace=True)
    b = run_seed(42, trace=True)
    assert a.trace == b.trace and a.line() == b.line()
    assert len(a.trace) > 5
