"""etcd's JSON output: what grpc-gateway's jsonpb marshaler (OrigName, no defaults) writes.

How this works: fields keep their proto names, int64 values become decimal strings, bytes
become standard base64, and zero values (0, false, empty bytes, empty lists) are left out.
Field order follows the proto declaration order, as jsonpb writes it.
"""

from __future__ import annotations

from binascii import b2a_base64
from typing import Any

from udpraft.kv.types import KV


def b64(s: str) -> str:
    return b2a_base64(s.encode("latin-1"), newline=False).decode("ascii")


def kv_json(kv: KV, keys_only: bool = False) -> dict[str, Any]:
    d: dict[str, Any] = {"key": b64(kv[0])}
    if kv[1]:
        d["create_revision"] = str(kv[1])
    if kv[2]:
        d["mod_revision"] = str(kv[2])
    if kv[3]:
        d["version"] = str(kv[3])
    if kv[4] and not keys_only:
        d["value"] = b64(kv[4])
    if kv[5]:
        d["lease"] = str(kv[5])
    return d


def event_json(kv: KV, prev: KV | None) -> dict[str, Any]:
    ev: dict[str, Any] = {} if kv[3] else {"type": "DELETE"}
    ev["kv"] = kv_json(kv)
    if prev is not None:
        ev["prev_kv"] = kv_json(prev)
    return ev


def rev_header(rev: int) -> dict[str, Any]:
    return {"revision": str(rev)} if rev else {}
