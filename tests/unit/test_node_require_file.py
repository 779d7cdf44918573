"""``udpraft.node --require-file``: a node whose data dir lost the launcher's marker does
not start under its id (the launcher replaces it instead)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tools.localcluster import ROOT, LocalCluster
from udpraft.node import EXIT_WIPED


def test_missing_marker_refuses_to_start(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path, 3)  # writes cluster.json and the secret; starts nothing
    cmd = [sys.executable, "-m", "udpraft.node", "--id", "n1", "--cluster-config",
           str(c.cluster_file), "--data-dir", str(tmp_path / "n1"), "--require-file", ".marker"]
    cp = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert cp.returncode == EXIT_WIPED, cp.stderr
    assert "was wiped" in cp.stderr and str(tmp_path / "n1" / ".marker") in cp.stderr
    assert not (tmp_path / "n1").exists()  # it created nothing either
