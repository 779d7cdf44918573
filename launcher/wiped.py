"""Has a node lost what it acknowledged? The launcher's test before it (re)starts a node.

How this works: Raft's safety assumes a restarted node kept its log and its vote. A node
whose data dir was wiped (a lost disk, ``rm -rf DIR/n3``) and that came back under its old
id could vote with an empty log — helping elect a leader that lacks a committed entry — and
vote twice in one term. So the supervisor never restarts such a node: it replaces it (a
fresh id through ``add_node``, then ``retire_node`` of the old one, see cluster.py).

The signal is a marker file the supervisor writes into the node's data dir
(``DIR/<id>/.launcher-node``) right before it starts the node, once it has checked that the
dir is fine. The node itself never writes it, so a dir that was deleted and re-created (by
the node starting again, or by anything else) has none. A node is *wiped* when

- ``--storage memory``: it answered ``/status`` before (it took part, so it may have
  voted or acknowledged entries) and its process ended: a memory log keeps nothing across a
  restart, so every restart of such a node is a wiped node's restart, and it is replaced;
- file / sqlite: the launcher started it before — this run (``marked``: the supervisor put
  the marker there) or an earlier one on the same data dir (its ``DIR/<id>.log`` exists
  when the launcher starts) — and the marker is gone now. A node of an earlier run whose
  dir has no marker (laid down before markers existed) counts as intact while its log
  files (``wal/hardstate.bin`` / ``wal-*.log`` for file, ``log.sqlite3`` for sqlite) are
  there, and is then marked.

A node that never ran has nothing to lose and is started as usual; one wrongly taken for
wiped (started once, killed before it wrote a byte, then its dir removed) is replaced
needlessly, which is safe.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

MARKER = ".launcher-node"


def marker_path(node_dir: str | os.PathLike[str]) -> Path:
    return Path(node_dir) / MARKER


def has_marker(node_dir: str | os.PathLike[str]) -> bool:
    return marker_path(node_dir).is_file()


def has_log(node_dir: str | os.PathLike[str], storage: str) -> bool:
    """Do the store's files exist (udpraft.storage.open_store's layout)?"""
    d = Path(node_dir)
    if storage == "sqlite":
        return (d / "log.sqlite3").is_file()
    if storage == "file":
        wal = d / "wal"
        if (wal / "hardstate.bin").is_file():
            return True
        with contextlib.suppress(OSError):
            return any(p.name.startswith("wal-") and p.name.endswith(".log")
                       for p in wal.iterdir())
    return False


def write_marker(node_dir: str | os.PathLike[str], node_id: str, cluster: str) -> None:
    """Create the node's data dir if needed and put the marker in it (atomically)."""
    d = Path(node_dir)
    d.mkdir(parents=True, exist_ok=True)
    p = marker_path(d)
    if p.is_file():
        return
    tmp = d / f"{MARKER}.tmp"
    tmp.write_text(f"{node_id} of cluster {cluster}: written by the launcher before it "
                   "started this node; if it is gone, the node lost its data and is "
                   "replaced, never restarted under its id\n")
    os.replace(tmp, p)


def wiped_reason(
    node_dir: str | os.PathLike[str], storage: str, *, ran_before: bool, marked: bool,
    answered_before: bool,
) -> str:
    """Why the node must not start again under its id ("" when it may).

    ``ran_before``: the launcher started it before (this run or an earlier one on the same
    data dir); ``marked``: this run's supervisor saw or wrote its marker; ``answered_before``:
    it answered /status since the supervisor started (for ``--storage memory``)."""
    if storage == "memory":
        if answered_before:
            return "--storage memory: it lost its log and votes with its process"
        return ""
    if not (ran_before or marked) or has_marker(node_dir):
        return ""
    if not marked and has_log(node_dir, storage):
        return ""  # a data dir from before markers, with its log: intact
    if not Path(node_dir).exists():
        return f"its data dir {node_dir} is gone"
    return f"its data dir {node_dir} lost its contents"
