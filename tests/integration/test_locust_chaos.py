"""Locust load (the documented recipe) while ``launcher --chaos`` kills and partitions nodes.

Failures must fall inside fault windows (from the fault to a few seconds after its heal),
and the history the locust users recorded must pass the checker.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tools.checker import AbsoluteLogModel, check, load_history
from tools.localcluster import free_base_port

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration
GRACE_S = 6.0  # after a heal: a new election, client retries, restart backoff


@pytest.mark.skipif(shutil.which("locust", path=os.path.dirname(sys.executable)) is None,
                    reason="locust is not installed (pip install -e '.[test]')")
def test_locust_under_chaos(tmp_path: Path) -> None:
    data = tmp_path / "data"
    launcher = subprocess.Popen(
        [sys.executable, "-m", "launcher", "--nodes", "3", "--data-dir", str(data), "--base-port",
         str(free_base_port()), "--chaos", "--seed", "5", "--duration-s", "60", "--plain"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        deadline = time.time() + 30
        while not (data / "cluster.json").exists():
            assert time.time() < deadline, "cluster did not come up"
            assert launcher.poll() is None, "launcher died"
            time.sleep(0.2)
        hist = tmp_path / "history.jsonl"
        env = {**os.environ, "UDPRAFT_CLUSTER": str(data / "cluster.json"),
               "UDPRAFT_HISTORY": str(hist)}
        loc = subprocess.run(
            [os.path.join(os.path.dirname(sys.executable), "locust"), "-f",
             str(ROOT / "loadtest" / "locustfile.py"), "--headless", "-u", "8", "-r", "8", "-t",
             "15s", "--only-summary", "SubmitUser"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
        )
        assert "Aggregated" in loc.stdout + loc.stderr, loc.stderr[-2000:]
        ops = load_history(hist)
        assert len(ops) > 200
        faults = [json.loads(x) for x in (data / "faults.jsonl").read_text().splitlines()]
        windows: list[tuple[float, float]] = []
        open_at: dict[int, float] = {}
        for f in faults:
            fid = f.get("fault_id")
            if fid is None:
                continue
            if f["kind"] == "heal":
                windows.append((open_at.pop(fid, f["ts"]), f["ts"] + GRACE_S))
            else:
                open_at.setdefault(fid, f["ts"])
        windows += [(t, float("inf")) for t in open_at.values()]
        assert windows, "the nemesis injected no fault during the load"
        bad = [o for o in ops if o.status != "ok"
               and not any(a - 1.0 <= o.call_s <= b for a, b in windows)]
        assert not bad, f"failures outside fault windows: {bad[:5]}"
        result = check(ops, AbsoluteLogModel(), timeout_s=60)
        assert result.verdict == "ok", result.verdict
    finally:
        os.killpg(launcher.pid, signal.SIGTERM)
        try:
            launcher.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait(10)
