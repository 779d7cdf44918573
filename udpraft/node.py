"""``python -m udpraft.node --id n1 --cluster-config FILE [--data-dir DIR] [--storage KIND]
[--snapshot-entries N]``

Runs one udpraft node process on uvloop. The cluster file lists every node's ``udp`` and
``http`` address; the cluster secret is read from beside it (or UDPRAFT_SECRET_FILE).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from udpraft.config import load_cluster, load_secret

EXIT_WIPED = 78  # EX_CONFIG: started with --require-file and the file is not there


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m udpraft.node", description=__doc__)
    ap.add_argument("--id", required=True, help="this node's id in the cluster file")
    ap.add_argument("--cluster-config", required=True, help="path to cluster.json")
    ap.add_argument("--data-dir", help="default: the cluster file's data_dir, else data/<id>")
    ap.add_argument("--storage", choices=["file", "sqlite", "memory"], default="file")
    ap.add_argument("--tick-ms", type=float, default=10.0)
    ap.add_argument("--snapshot-entries", type=int, default=0, metavar="N",
                    help="snapshot the state and compact the log every N applied entries "
                         "(default 0: never; snapshots from the leader are installed anyway)")
    ap.add_argument("--exit-with-parent", action="store_true",
                    help="stop (gracefully) when the parent process dies (used by the launcher)")
    ap.add_argument("--require-file", metavar="NAME",
                    help="refuse to start (exit 78) unless DATA_DIR/NAME exists: the launcher's "
                         "marker, so a node whose data dir was wiped never starts under its id")
    ap.add_argument("--log-level", default=os.environ.get("UDPRAFT_LOG", "INFO"))
    a = ap.parse_args(argv)
    logging.basicConfig(
        level=a.log_level.upper(),
        format=f"%(asctime)s {a.id} %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    try:
        cluster = load_cluster(a.cluster_config)
        secret = load_secret(a.cluster_config)
        me = cluster.node(a.id)
    except (OSError, ValueError, KeyError) as e:
        print(f"udpraft.node: {e}", file=sys.stderr)
        return 2
    data_dir = a.data_dir or me.data_dir or os.path.join("data", a.id)
    if a.require_file and not os.path.isfile(os.path.join(data_dir, a.require_file)):
        # Raft's safety needs what this node acknowledged: a wiped dir must not rejoin.
        print(f"udpraft.node: {os.path.join(data_dir, a.require_file)} is missing: the data "
              f"dir of {a.id} was wiped or replaced; not starting under this id", file=sys.stderr)
        return EXIT_WIPED
    from udpraft.io.server import NodeOptions, serve
    from udpraft.kv.server import kv_app_factory

    opts = NodeOptions(
        a.id, cluster, secret, data_dir, a.storage, tick_s=a.tick_ms / 1000.0,
        app_factory=kv_app_factory,  # every node serves the etcd v3 JSON API on its http port
        parent_pid=os.getppid() if a.exit_with_parent else 0,
        snapshot_entries=max(0, a.snapshot_entries),
    )
    try:
        import uvloop

        return int(uvloop.run(serve(opts)))
    except ImportError:  # pragma: no cover - uvloop is a dependency; keep running without it
        return int(asyncio.run(serve(opts)))


if __name__ == "__main__":
    sys.exit(main())
