"""The C CRC-32C and the pure-Python fallback agree, including chained (running) CRCs."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from udpraft.storage.crc32c import _pure_crc32c, crc32c


def test_check_value() -> None:
    assert crc32c(b"123456789") == 0xE3069283
    assert _pure_crc32c(b"123456789") == 0xE3069283


@settings(max_examples=200, database=None)
@given(st.binary(max_size=300), st.binary(max_size=300))
def test_implementations_agree(a: bytes, b: bytes) -> None:
    assert crc32c(a + b) == _pure_crc32c(a + b)
    assert crc32c(b, crc32c(a)) == crc32c(a + b) == _pure_crc32c(b, _pure_crc32c(a))
