"""``IndexSet``: a set of log indices as a bitmap, for the log service's hidden entries.

How this works: one bit per index from ``base`` (a multiple of 8) up to the largest index
added, in a ``bytearray``. The log service marks every entry a client must not see
(no-ops, configurations, duplicates, application commands: every entry of a KV workload)
and asks about each entry ``retrieve`` walks over. A Python ``set`` of ints costs ~60
bytes per member (1,000,000 KV entries: ~60 MB per node until a snapshot prunes it); the
bitmap costs one bit per index of the span, member or not (125 KB per 1,000,000 indices).
``prune(upto)`` drops the bits at or below ``upto`` when the log before them is
compacted. Indices are >= 1, as log indices are.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator


class IndexSet:
    __slots__ = ("_base", "_bits", "_count")

    def __init__(self, members: Iterable[int] = ()) -> None:
        self._base = 0  # index of bit 0 of byte 0; a multiple of 8
        self._bits = bytearray()
        self._count = 0
        for i in members:
            self.add(i)

    def add(self, i: int) -> None:
        if i < 1:
            raise ValueError(f"log index {i} < 1")
        if i < self._base:  # below a prune: re-open the bytes down to it
            new_base = i - i % 8
            self._bits[:0] = bytes((self._base - new_base) // 8)
            self._base = new_base
        k = i - self._base
        byte = k >> 3
        if byte >= len(self._bits):
            self._bits.extend(bytes(byte + 1 - len(self._bits)))
        mask = 1 << (k & 7)
        if not self._bits[byte] & mask:
            self._bits[byte] |= mask
            self._count += 1

    def __contains__(self, i: object) -> bool:
        if type(i) is not int:
            return False
        k = i - self._base
        if k < 0:
            return False
        byte = k >> 3
        return byte < len(self._bits) and bool(self._bits[byte] & (1 << (k & 7)))

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[int]:
        return iter(self.above(self._base - 1))

    def above(self, floor: int) -> list[int]:
        """Members greater than ``floor``, ascending."""
        start = max(0, (floor + 1 - self._base) >> 3)
        base = self._base
        out = []
        for byte in range(start, len(self._bits)):
            v = self._bits[byte]
            if v:
                for bit in range(8):
                    i = base + byte * 8 + bit
                    if v >> bit & 1 and i > floor:
                        out.append(i)
        return out

    def prune(self, upto: int) -> None:
        """Forget the members ``<= upto``."""
        cut = (upto + 1 - self._base) >> 3  # whole bytes entirely <= upto
        if cut > 0:
            gone = self._bits[:cut]
            self._count -= sum(bin(b).count("1") for b in gone if b)
            del self._bits[:cut]
            self._base += cut * 8
        for i in range(self._base, min(upto + 1, self._base + 8)):
            k = i - self._base
            if k >> 3 < len(self._bits) and self._bits[k >> 3] & (1 << (k & 7)):
                self._bits[k >> 3] &= ~(1 << (k & 7)) & 0xFF
                self._count -= 1

    def __eq__(self, other: object) -> bool:
        if isinstance(other, IndexSet):
            return len(self) == len(other) and list(self) == list(other)
        if isinstance(other, set | frozenset):
            return len(self) == len(other) and all(i in self for i in other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"IndexSet({len(self)} members from {self._base})"

    def nbytes(self) -> int:
        return len(self._bits)
