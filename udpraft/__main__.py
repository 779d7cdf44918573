"""``python -m udpraft submit TEXT | retrieve --start N | status | member ...`` (``--cluster FILE``,
before or after the command).

``member list``, ``member add ID --udp H:P --http H:P [--learner]`` (a learner, caught up,
then promoted unless --learner), ``member promote ID``, ``member remove ID``.

Output is JSON, one object per line. Exit status: 0 on success, 1 on a udpraft error
(timeout, no quorum, refused), 2 on bad usage or a missing cluster file.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys

from udpraft.admin import Admin
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
    # --cluster is also taken after the command (`submit hello --cluster F`): there it
    # overrides, and when absent it leaves the value above alone (SUPPRESS).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--cluster", default=argparse.SUPPRESS, help="cluster file")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("submit", parents=[common], help="append TEXT to the log; prints index and term")
    s.add_argument("text")
    s.add_argument("--timeout", type=float, default=5.0)
    r = sub.add_parser("retrieve", parents=[common], help="committed entries from --start on")
    r.add_argument("--start", type=int, default=1)
    r.add_argument("--timeout", type=float, default=10.0)
    sub.add_parser("status", parents=[common], help="each node's status")
    m = sub.add_parser("member", parents=[common], help="list or change the cluster's membership")
    msub = m.add_subparsers(dest="mcmd", required=True)
    msub.add_parser("list", parents=[common], help="voters, learners, removed ids and addresses")
    ma = msub.add_parser("add", parents=[common], help="add a node: learner, catch up, promote")
    ma.add_argument("id")
    ma.add_argument("--udp", required=True, help="the new node's UDP host:port")
    ma.add_argument("--http", required=True, help="the new node's HTTP host:port")
    ma.add_argument("--learner", action="store_true", help="stop at learner (no promotion)")
    ma.add_argument("--catch-up-s", type=float, default=60.0)
    msub.add_parser("promote", parents=[common], help="make a learner a voter").add_argument("id")
    mr = msub.add_parser("remove", parents=[common], help="remove a node for good")
    mr.add_argument("id")
    mr.add_argument("--force", action="store_true",
                    help="even if it leaves two voters or too few live ones to commit")
    m.add_argument("--timeout", type=float, default=15.0)
    a = ap.parse_args(argv)
    if a.cmd == "member":
        return _member(a)
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


def _member(a: argparse.Namespace) -> int:
    try:
        adm = Admin.from_cluster_file(a.cluster, timeout=a.timeout)
    except ClusterConfigError as e:
        print(json.dumps({"error": str(e)}), file=sys.stderr)
        return 2
    try:
        if a.mcmd == "list":
            out = adm.members()
        elif a.mcmd == "add" and a.learner:
            out = adm.add_learner(a.id, a.udp, a.http)
        elif a.mcmd == "add":
            out = adm.add(a.id, a.udp, a.http, a.catch_up_s)
        elif a.mcmd == "promote":
            out = adm.promote(a.id)
        else:
            out = adm.remove(a.id, force=a.force)
    except UdpRaftError as e:
        print(json.dumps({"error": type(e).__name__, "message": str(e)}), file=sys.stderr)
        return 1
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
