"""Locust load for a running udpraft cluster.

    locust -f loadtest/locustfile.py --headless -u 50 -r 50 -t 30s

The cluster file comes from ``UDPRAFT_CLUSTER`` (default ``data/cluster.json``). Users run
the blocking client (plain sockets, which locust's gevent patches), submit to the log and
use the etcd-compatible KV API over HTTP, and fire locust request events with real response
times. With ``UDPRAFT_HISTORY=FILE`` every operation is also appended to FILE as a JSON line
(call/return times and outcome) so ``tools.checker`` can check the run afterwards.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import random
import threading
import time
from typing import Any

from locust import FastHttpUser, User, constant, task

from udpraft.client.blocking import Client
from udpraft.config import load_cluster
from udpraft.errors import Timeout, UdpRaftError

CLUSTER = os.environ.get("UDPRAFT_CLUSTER", "data/cluster.json")
HISTORY = os.environ.get("UDPRAFT_HISTORY", "")
_lock = threading.Lock()
_ids = itertools.count(1)


def record(op: dict[str, Any]) -> None:
    if not HISTORY:
        return
    line = json.dumps(op)
    with _lock, open(HISTORY, "a") as f:
        f.write(line + "\n")


class SubmitUser(User):
    """Appends small payloads to the replicated log; each call returns once committed."""

    weight = 3
    wait_time = constant(0)

    def on_start(self) -> None:
        self.client = Client.from_cluster_file(CLUSTER)
        self.name = f"locust-{os.getpid()}-{next(_ids)}"
        self.n = 0

    def on_stop(self) -> None:
        self.client.close()

    @task
    def submit(self) -> None:
        self.n += 1
        payload = f"{self.name}:{self.n}".encode()
        t0 = time.time()
        exc: BaseException | None = None
        status, index = "ok", 0
        try:
            index = self.client.submit(payload, timeout=5.0).index
        except Timeout as e:
            exc, status = e, "unknown"
        except UdpRaftError as e:
            exc, status = e, "failed"
        t1 = time.time()
        self.environment.events.request.fire(
            request_type="UDP", name="submit", response_time=(t1 - t0) * 1000.0,
            response_length=len(payload), exception=exc, context={},
        )
        record({"client": self.name, "op_id": self.n, "kind": "submit", "key": "",
                "input": payload.decode(), "output": index, "call_s": t0,
                "return_s": t1 if status != "unknown" else None, "status": status})


def _http_nodes() -> list[str]:
    return [f"http://{n.http[0]}:{n.http[1]}" for n in load_cluster(CLUSTER).nodes]


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


class KvUser(FastHttpUser):
    """Puts and linearizable gets through the etcd v3 JSON API of any node."""

    weight = 1
    wait_time = constant(0)
    host = "http://127.0.0.1"  # replaced per request by a random node of the cluster

    def on_start(self) -> None:
        self.nodes = _http_nodes()
        self.name = f"kv-{os.getpid()}-{next(_ids)}"
        self.n = 0

    @task(1)
    def put(self) -> None:
        self.n += 1
        key = f"locust/{random.randrange(32)}"
        value = f"{self.name}:{self.n}"
        self._call("put", "/v3/kv/put", {"key": _b64(key), "value": _b64(value)}, key, value)

    @task(1)
    def get(self) -> None:
        self.n += 1
        key = f"locust/{random.randrange(32)}"
        self._call("get", "/v3/kv/range", {"key": _b64(key)}, key, None)

    def _call(self, kind: str, path: str, body: dict[str, Any], key: str, value: str | None) -> None:
        url = random.choice(self.nodes) + path
        t0 = time.time()
        status, output = "ok", None
        with self.client.post(url, json=body, name=path, catch_response=True) as resp:
            if resp.status_code != 200:
                status = "unknown" if kind == "put" else "failed"
                resp.failure(f"HTTP {resp.status_code}")
            elif kind == "get":
                kvs = (resp.json() or {}).get("kvs") or []
                output = base64.b64decode(kvs[0]["value"]).decode() if kvs else None
        t1 = time.time()
        record({"client": self.name, "op_id": self.n, "kind": kind, "key": key,
                "input": value, "output": output, "call_s": t0,
                "return_s": t1 if status != "unknown" else None, "status": status})
