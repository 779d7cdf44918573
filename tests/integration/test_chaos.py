"""A short checked chaos run (5 nodes) as part of the suite, and the runner's own verdicts."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration

LINE = re.compile(
    r"^chaos nodes=5 seed=3 ops=(\d+) ok=(\d+) failed=(\d+) unknown=(\d+) lost=(\d+) "
    r"linearizable=(true|false|unknown)$"
)


def test_short_chaos_run_is_linearizable_and_loses_nothing(tmp_path: Path) -> None:
    p = subprocess.run(
        [sys.executable, "-m", "tools.chaos", "--nodes", "5", "--duration-s", "20", "--seed", "3",
         "--data-dir", str(tmp_path / "run")],
        cwd=ROOT, capture_output=True, text=True, timeout=400,
    )
    last = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else ""
    m = LINE.match(last)
    assert m, f"unexpected output:\n{p.stdout}\n{p.stderr[-3000:]}"
    ops, ok, _failed, _unknown, lost, lin = m.groups()
    assert p.returncode == 0, p.stdout
    assert int(ops) > 100 and int(ok) > 100
    assert lost == "0" and lin == "true"
    faults = (tmp_path / "run" / "faults.jsonl").read_text().splitlines()
    assert len(faults) >= 4, "the nemesis injected faults"
    assert (tmp_path / "run" / "history.jsonl").exists()
