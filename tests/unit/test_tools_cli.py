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


def test_udpraft_cli_takes_cluster_before_or_after_the_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`python -m udpraft --cluster F submit x` and `... submit x --cluster F` (INTERFACE:
    every command takes --cluster FILE); after the command it overrides, absent it leaves
    the default."""
    import udpraft.__main__ as cli
    from udpraft.errors import ClusterConfigError

    seen: list[str] = []

    def opened(path: str, **_kw: object) -> None:
        seen.append(path)
        raise ClusterConfigError(f"no cluster file {path}")

    monkeypatch.setattr("udpraft.__main__.Client.from_cluster_file", opened)
    monkeypatch.setattr("udpraft.__main__.Admin.from_cluster_file", opened)
    for argv in (["submit", "x"], ["--cluster", "A", "submit", "x"], ["submit", "x", "--cluster", "B"],
                 ["--cluster", "A", "retrieve", "--cluster", "C"], ["status", "--cluster", "D"],
                 ["member", "list", "--cluster", "E"]):
        assert cli.main(argv) == 2
    assert seen == ["data/cluster.json", "A", "B", "C", "D", "E"]
    assert "no cluster file" in capsys.readouterr().err
