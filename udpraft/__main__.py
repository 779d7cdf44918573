"""``python -m udpraft submit TEXT | retrieve --start N | status`` (``--cluster FILE``).

Output is JSON, one object per line. Exit status: 0 on success, 1 on a udpraft error
(timeout, no quorum, refused), 2 on bad usage or a missing cluster file.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys

from udpraft.client.blocking import Client
from udpraft.errors import ClusterConfigError, UdpRaftError


def _text(data: bytes) -> dict[str, str]:
    try:
        return {"data": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"data_b64": base64.b64encode(data).decode()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m udpraft", description=__doc__)
    ap.add_argument("--cluster", default="data/cluster.json", help="cluster file")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("submit", help="append TEXT to the log; prints index and term")
    s.add_argument("text")
    s.add_argument("--timeout", type=float, default=5.0)
    r = sub.add_parser("retrieve", help="committed entries from --start on")
    r.add_argument("--start", type=int, default=1)
    r.add_argument("--timeout", type=float, default=10.0)
    sub.add_parser("status", help="each node's status")
    a = ap.parse_args(argv)
    try:
        client = Client.from_cluster_file(a.cluster)
    except ClusterConfigError as e:
        print(json.dumps({"error": str(e)}), file=sys.stderr)
        return 2
    try:
        with client:
            if a.cmd == "submit":
                res = client.submit(a.text.encode(), timeout=a.timeout)
                print(json.dumps({"index": res.index, "term": res.term}))
            elif a.cmd == "retrieve":
                for ent in client.retrieve(a.start, timeout=a.timeout):
                    print(json.dumps({"index": ent.index, "term": ent.term, **_text(ent.data)}))
            else:
                for st in client.status():
                    print(json.dumps(st))
    except UdpRaftError as e:
        print(json.dumps({"error": type(e).__name__, "message": str(e)}), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
