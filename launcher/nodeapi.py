"""Talking to a node over its HTTP port: ``/status``, ``/fault``, ``/transfer``, ``/members``.

How this works: one short-lived ``http.client`` connection per call, with a timeout, so a
paused (SIGSTOPped) or dead node costs the caller at most ``timeout_s`` and never hangs it.
This is the launcher's only way into a node besides signals: it imports nothing of the
node's code (see tests/unit/test_boundaries.py).
"""

from __future__ import annotations

import http.client
from typing import Any

import orjson

STATUS_TIMEOUT_S = 0.5
FAULT_TIMEOUT_S = 1.0
MEMBERS_TIMEOUT_S = 2.0


class NodeUnreachable(Exception):
    """The node did not answer (refused, timed out, or answered with an error)."""


def request_json(
    addr: tuple[str, int], method: str, path: str, body: Any = None,
    timeout_s: float = FAULT_TIMEOUT_S,
) -> Any:
    status, got = request_status(addr, method, path, body, timeout_s)
    if status >= 400:
        raise NodeUnreachable(
            f"{method} {path} on {addr[0]}:{addr[1]}: HTTP {status} {str(got)[:200]}"
        )
    return got


def request_status(
    addr: tuple[str, int], method: str, path: str, body: Any = None,
    timeout_s: float = FAULT_TIMEOUT_S,
) -> tuple[int, Any]:
    """(HTTP status, decoded JSON body) of one request; raises NodeUnreachable only when
    there is no answer (or it is not JSON), so callers can act on 4xx/5xx answers."""
    conn = http.client.HTTPConnection(addr[0], addr[1], timeout=timeout_s)
    try:
        payload = orjson.dumps(body) if body is not None else None
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        conn.request(method, path, body=payload, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
    except (OSError, http.client.HTTPException) as e:
        raise NodeUnreachable(f"{method} {path} on {addr[0]}:{addr[1]}: {e}") from e
    finally:
        conn.close()
    try:
        return resp.status, orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        if resp.status >= 400:
            return resp.status, {"error": raw[:200].decode(errors="replace")}
        raise NodeUnreachable(f"{method} {path} on {addr[0]}:{addr[1]}: bad JSON: {e}") from e


def get_status(addr: tuple[str, int], timeout_s: float = STATUS_TIMEOUT_S) -> dict[str, Any] | None:
    """The node's /status, or None if it does not answer in time."""
    try:
        st = request_json(addr, "GET", "/status", timeout_s=timeout_s)
    except NodeUnreachable:
        return None
    return st if isinstance(st, dict) else None


def set_fault(
    addr: tuple[str, int], spec: dict[str, Any], timeout_s: float = FAULT_TIMEOUT_S
) -> dict[str, Any]:
    """POST /fault (see udpraft/io/faults.py for the spec). Raises NodeUnreachable."""
    out = request_json(addr, "POST", "/fault", spec, timeout_s=timeout_s)
    return out if isinstance(out, dict) else {}


def heal_faults(addr: tuple[str, int], timeout_s: float = FAULT_TIMEOUT_S) -> None:
    request_json(addr, "POST", "/fault", {"heal": True}, timeout_s=timeout_s)


def transfer(addr: tuple[str, int], target: str, timeout_s: float = FAULT_TIMEOUT_S) -> None:
    request_json(addr, "POST", "/transfer", {"target": target}, timeout_s=timeout_s)


def apply_fault(node_id: str, addr: tuple[str, int], spec: dict[str, Any] | None) -> list[str]:
    """Set (or, with ``spec=None``, heal) a node's transport faults; errors as messages."""
    try:
        if spec is None:
            heal_faults(addr)
        else:
            set_fault(addr, spec)
    except NodeUnreachable as e:
        return [f"{node_id}: {e}"]
    return []


def get_members(addr: tuple[str, int], timeout_s: float = MEMBERS_TIMEOUT_S) -> dict[str, Any] | None:
    """The node's ``GET /members`` (its view of the membership), or None."""
    try:
        status, got = request_status(addr, "GET", "/members", timeout_s=timeout_s)
    except NodeUnreachable:
        return None
    return got if status == 200 and isinstance(got, dict) else None


def post_members(
    addr: tuple[str, int], body: dict[str, Any], timeout_s: float
) -> tuple[int, dict[str, Any]]:
    """``POST /members``: (status, answer). Raises NodeUnreachable when nothing answers."""
    status, got = request_status(addr, "POST", "/members", body, timeout_s=timeout_s)
    return status, got if isinstance(got, dict) else {"error": str(got)[:200]}
