"""Micro benchmark of the wire codec (not a test): ``python -m udpraft.wire.bench``.

Encodes and decodes an AppendEntries of ``n_entries`` entries of ``entry_bytes`` bytes and
prints the best-of-``repeat`` time per call in microseconds. Uses :mod:`timeit` (the codec
itself never reads a clock).
"""

from __future__ import annotations

import timeit

from udpraft.core.messages import AppendEntries, Heartbeat
from udpraft.core.types import Entry
from udpraft.wire.codec import Decoded, decode, encode
from udpraft.wire.envelope import WireContext


def _best_us(fn: object, number: int, repeat: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6  # type: ignore[arg-type]


def bench_append_entries(
    n_entries: int = 100, entry_bytes: int = 50, number: int = 2000, repeat: int = 5
) -> dict[str, float]:
    """Time encode/decode of one AppendEntries; returns and prints the figures."""
    sender = WireContext("bench", b"k" * 32, "n1", incarnation=7)
    receiver = WireContext("bench", b"k" * 32, "n2", incarnation=9)
    entries = tuple(
        Entry(i + 1, 3, bytes([i % 256]) * entry_bytes, client_id=f"c{i % 8}", seq=i, ts_ms=1)
        for i in range(n_entries)
    )
    msg = AppendEntries("n1", "n2", 3, 0, 0, entries, n_entries)
    data = encode(msg, sender, msg_id=1)
    result = decode(data, receiver)
    assert isinstance(result, Decoded) and result.msg == msg
    hb = Heartbeat("n1", "n2", 3, 10)
    hb_data = encode(hb, sender, msg_id=2)
    figures = {
        "size_bytes": float(len(data)),
        "encode_us": _best_us(lambda: encode(msg, sender, msg_id=1), number, repeat),
        "decode_us": _best_us(lambda: decode(data, receiver), number, repeat),
        "heartbeat_encode_us": _best_us(lambda: encode(hb, sender, msg_id=2), number, repeat),
        "heartbeat_decode_us": _best_us(lambda: decode(hb_data, receiver), number, repeat),
    }
    print(
        f"wire AppendEntries entries={n_entries} entry_bytes={entry_bytes} "
        f"size_bytes={len(data)} encode_us={figures['encode_us']:.1f} "
        f"decode_us={figures['decode_us']:.1f} "
        f"heartbeat_encode_us={figures['heartbeat_encode_us']:.1f} "
        f"heartbeat_decode_us={figures['heartbeat_decode_us']:.1f}"
    )
    return figures


if __name__ == "__main__":
    bench_append_entries()
