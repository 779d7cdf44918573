"""The simulator's command-line faces run and report what they claim."""

from __future__ import annotations

import pytest

from tools import replay_seed, sim, sim_demo
from tools.bench import core as bench_core


def test_sim_cli_prints_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert sim.main(["--seeds", "1..3", "--nodes", "3"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("sim seeds=3 failures=0 nodes=3")


def test_sim_seed_range_parsing() -> None:
    assert list(sim.parse_range("4..6")) == [4, 5, 6]
    assert list(sim.parse_range("9")) == [9]


def test_replay_prints_trace_and_verdict(capsys: pytest.CaptureFixture[str]) -> None:
    assert replay_seed.main(["5", "--nodes", "3"]) == 0
    out = capsys.readouterr().out
    assert "LEADER term" in out and "seed=5 nodes=3 ok" in out


def test_demo_narrates_a_crash_and_recovery(capsys: pytest.CaptureFixture[str]) -> None:
    assert sim_demo.main([]) == 0
    out = capsys.readouterr().out
    assert "CRASHES" in out and "caught up" in out


def test_bench_core_commits_something() -> None:
    r = bench_core.run(3, 10, 100, 1000, 0.3)
    assert r["ops_per_s"] > 1000
