"""A short checked chaos run whose nemesis also changes the membership (``--membership``):
fresh nodes added (learner, then voter) and old ones — the leader among them — removed and
retired, and a node's data dir wiped (the supervisor replaces it), while clients run; the
history must still be linearizable with nothing lost."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

# seed 24 on 5 nodes over 20 s draws two replaces, the first of the leader, and a wipe of
# the leader between them (launcher.nemesis)
LINE = re.compile(
    r"^chaos nodes=5 seed=24 ops=(\d+) ok=(\d+) failed=(\d+) unknown=(\d+) lost=(\d+) "
    r"linearizable=(true|false|unknown) membership_changes=(\d+) nodes_now=(\d+)$"
)


def test_chaos_with_membership_changes_is_linearizable_and_loses_nothing(tmp_path: Path) -> None:
    run = tmp_path / "run"
    p = subprocess.run(
        [sys.executable, "-m", "tools.chaos", "--nodes", "5", "--duration-s", "20", "--seed",
         "24", "--membership", "--data-dir", str(run)],
        cwd=ROOT, capture_output=True, text=True, timeout=200,
    )
    last = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else ""
    m = LINE.match(last)
    assert m, f"unexpected output:\n{p.stdout}\n{p.stderr[-3000:]}"
    ops, ok, _failed, _unknown, lost, lin, changes, nodes_now = m.groups()
    assert p.returncode == 0, p.stdout
    assert int(ops) > 100 and int(ok) > 100
    assert lost == "0" and lin == "true"
    assert int(changes) >= 3 and nodes_now == "5"  # each replace adds one and removes one
    faults = [json.loads(ln) for ln in (run / "faults.jsonl").read_text().splitlines()]
    replaces = [f for f in faults if f["kind"] == "replace"]
    assert replaces and all(f.get("retired") and f.get("added") for f in replaces), replaces
    # the cluster file lists the nodes as they are now: a retired one is gone, a new one in
    cfg = json.loads((run / "cluster.json").read_text())
    ids = [n["id"] for n in cfg["nodes"]]
    assert cfg["initial_voters"] == ["n1", "n2", "n3", "n4", "n5"]
    assert all(f["retired"] not in ids for f in replaces)
    assert any(f["added"] in ids for f in replaces)
    # a wiped node: replaced by the supervisor (the heal names its replacement), gone
    wipes = [f for f in faults if f["kind"] == "wipe"]
    healed = {f["targets"][0]: f for f in faults if f.get("heals") == "wipe"}
    assert wipes and all(healed[w["targets"][0]]["back"] for w in wipes), (wipes, healed)
    for w in wipes:
        old = w["targets"][0]
        assert old not in ids and healed[old]["replaced_by"][old].startswith("n")
        assert not (run / old).exists()  # never re-created: it was not started again
