"""Kill a writer process with SIGKILL and check what a reopened store recovers.

A killed process loses nothing that reached the kernel: the file backend's unsynced writes
sit in the page cache and survive, while SQLite rolls back a transaction that was never
committed (sync). Power cuts, which also lose the page cache, are simulated by cutting
files in test_storage_file.py and test_storage_model.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from udpraft.core.types import Entry, HardState
from udpraft.storage import open_store

REPO = Path(__file__).resolve().parents[2]

CHILD_UNSYNCED = """
import sys, time
from udpraft.core.types import Entry, HardState
from udpraft.storage import open_store
s = open_store(sys.argv[1], sys.argv[2])
s.append([Entry(i, 1, b"synced") for i in range(1, 101)])
s.set_hard_state(HardState(1, "n1", 100))
s.sync()
s.append([Entry(i, 2, b"unsynced") for i in range(90, 201)])  # truncates 90..100 first
s.set_hard_state(HardState(2, "n2", 150))
print("ready", flush=True)
time.sleep(60)
"""

CHILD_LOOP = """
import sys
from udpraft.core.types import Entry, HardState
from udpraft.storage import open_store
s = open_store(sys.argv[1], sys.argv[2])
hs, log = s.load()
i = s.last_index() + 1
while True:
    s.append([Entry(j, 1, b"%d" % j * 10, client_id="c") for j in range(i, i + 50)])
    i += 50
    s.set_hard_state(HardState(1, "n1", i - 1))
    s.sync()
    print(i - 1, flush=True)
"""


def spawn(code: str, kind: str, data_dir: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", code, kind, str(data_dir)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=str(REPO),
    )


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for p in started:  # only the children this test started, by pid
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=10)
        if p.stdout is not None:
            p.stdout.close()


def kill(p: subprocess.Popen[str]) -> None:
    os.kill(p.pid, signal.SIGKILL)
    assert p.wait(timeout=10) == -signal.SIGKILL


@pytest.mark.parametrize("kind", ["file", "sqlite"])
def test_sigkill_before_sync(kind: str, tmp_path: Path, procs: list[subprocess.Popen[str]]) -> None:
    p = spawn(CHILD_UNSYNCED, kind, tmp_path)
    procs.append(p)
    assert p.stdout is not None
    assert p.stdout.readline().strip() == "ready"
    kill(p)
    s = open_store(kind, str(tmp_path))  # the dead child's lock is gone
    hs, log = s.load()
    synced = [Entry(i, 1, b"synced") for i in range(1, 101)]
    if kind == "sqlite":
        # The open transaction died with the process: exactly the last sync survives.
        assert (hs, log) == (HardState(1, "n1", 100), synced)
    else:
        # Written bytes were in the kernel already; the hard state waits for sync.
        assert hs == HardState(1, "n1", 100)
        assert log == synced[:89] + [Entry(i, 2, b"unsynced") for i in range(90, 201)]
    s.close()


@pytest.mark.parametrize("kind", ["file", "sqlite"])
def test_sigkill_at_a_random_point_of_a_write_loop(
    kind: str, tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    durable = 0
    for _round in range(2):  # the second child resumes from what the first left
        p = spawn(CHILD_LOOP, kind, tmp_path)
        procs.append(p)
        assert p.stdout is not None
        for _ in range(15):
            durable = int(p.stdout.readline())
        kill(p)
    s = open_store(kind, str(tmp_path))
    hs, log = s.load()
    assert len(log) >= durable
    assert [e.index for e in log] == list(range(1, len(log) + 1))
    assert all(e.data == b"%d" % e.index * 10 for e in log)
    assert durable <= hs.commit <= len(log)
    s.close()
