"""``launcher ctl members`` waits a few seconds for a leader before giving up."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from launcher import ctl


def fake_node(leader_after_s: float) -> tuple[ThreadingHTTPServer, int]:
    """A node answering GET /members: 503 (electing) until ``leader_after_s``, then as leader."""
    t0 = time.monotonic()

    class H(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ready = time.monotonic() - t0 >= leader_after_s
            body = json.dumps({"id": "n1", "leader": "n1", "voters": ["n1"], "learners": [],
                               "members": {}} if ready else {"error": "no leader"}).encode()
            self.send_response(200 if ready else 503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, srv.server_address[1]


def layout(tmp_path: Path, http_port: int) -> Path:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        udp = s.getsockname()[1]
    cfg = {"cluster": "t", "nodes": [{"id": "n1", "udp": f"127.0.0.1:{udp}",
                                      "http": f"127.0.0.1:{http_port}", "pid": 0,
                                      "data_dir": str(tmp_path / "n1")}]}
    (tmp_path / "cluster.json").write_text(json.dumps(cfg))
    return tmp_path


def test_members_waits_for_an_election(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    srv, port = fake_node(leader_after_s=1.0)
    try:
        t0 = time.monotonic()
        assert ctl.main(["--data-dir", str(layout(tmp_path, port)), "members"]) == 0
        assert 1.0 <= time.monotonic() - t0 < ctl.MEMBERS_WAIT_S
        assert json.loads(capsys.readouterr().out)["leader"] == "n1"
    finally:
        srv.shutdown()


def test_members_gives_up_after_a_few_seconds(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    srv, port = fake_node(leader_after_s=1e9)
    try:
        t0 = time.monotonic()
        assert ctl.main(["--data-dir", str(layout(tmp_path, port)), "members"]) == 1
        assert time.monotonic() - t0 >= ctl.MEMBERS_WAIT_S
        assert "no leader answers GET /members" in capsys.readouterr().err
    finally:
        srv.shutdown()
