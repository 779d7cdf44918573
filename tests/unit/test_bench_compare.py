"""Smoke test of the PySyncObj side of ``python -m tools.bench compare``: the harness starts
three PySyncObj node processes, loads the leader for about a second with 10 appends in
flight, reports figures and stops every process. No performance is asserted."""

from __future__ import annotations

import importlib.util

import pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("pysyncobj") is None,
    reason="pysyncobj is not installed (pip install -e '.[bench]')",
)


def test_pysyncobj_harness_reports_ops() -> None:
    from tools.bench import pysyncobj_node

    r = pysyncobj_node.run(nodes=3, payload=10, window=10, duration_s=1.0)
    assert r["system"] == "pysyncobj"
    assert r["ops_per_s"] > 0
    assert r["errors"] == 0
    assert r["config"]["appendEntriesUseBatch"] is True  # PySyncObj's defaults, untouched
    assert r["config"]["journalFile"] is None
    assert set(r["cpu_s_per_1k_ops"]) == {"p1", "p2", "p3"}
    assert all(v > 0 for v in r["peak_rss_mb"].values())
