"""Go's encoding/json and encoding/base64 error messages, for etcd-identical 400 answers.

How this works: requests are parsed with orjson (fast path). Only when that fails, or a
field has the wrong type, do we need to know what etcd's gateway — Go's json.Decoder,
jsonpb and base64.StdEncoding — would have said. ``scan_value`` is a port of Go's JSON
scanner: it finds where the first JSON value of a body ends (Go's Decoder ignores what
follows) or raises ``GoJsonError`` with Go's exact message ("invalid character 'x' after
object key", "unexpected EOF", ...). ``b64decode`` decodes base64 as Go does (newlines
skipped, trailing bits ignored) and reports errors as "illegal base64 data at input byte N".
"""

from __future__ import annotations

import binascii

WS = frozenset(b" \t\r\n")
DIGITS = frozenset(b"0123456789")
HEX = frozenset(b"0123456789abcdefABCDEF")
ESCAPES = frozenset(b'"\\/bfnrtu')
EOF_DECODER = "unexpected EOF"  # json.Decoder: the stream ended inside a value
EOF_UNMARSHAL = "unexpected end of JSON input"  # json.Unmarshal


class GoJsonError(ValueError):
    """A body Go's JSON decoder would reject; the message is Go's."""


class EmptyInput(Exception):
    """Only whitespace: Go's Decoder reports io.EOF, which the gateway takes as an empty request."""


def quote_char(c: int) -> str:
    """Go's json quoteChar (strconv.Quote of the byte as a rune, in single quotes)."""
    if c == 0x27:
        return "'\\''"
    if c == 0x22:
        return "'\"'"
    named = {7: "\\a", 8: "\\b", 12: "\\f", 10: "\\n", 13: "\\r", 9: "\\t", 11: "\\v", 0x5C: "\\\\"}
    if c in named:
        return f"'{named[c]}'"
    if c < 0x20 or c == 0x7F:
        return f"'\\x{c:02x}'"
    if 0x80 <= c <= 0xA0 or c == 0xAD:
        return f"'\\u{c:04x}'"
    return f"'{chr(c)}'"


def _bad(c: int, context: str) -> GoJsonError:
    return GoJsonError(f"invalid character {quote_char(c)} {context}")


def _skip_ws(data: bytes, i: int) -> int:
    n = len(data)
    while i < n and data[i] in WS:
        i += 1
    return i


def _scan_string(data: bytes, i: int, eof: str) -> int:
    """``data[i]`` is the opening quote; returns the offset after the closing one."""
    n = len(data)
    i += 1
    while True:
        if i >= n:
            raise GoJsonError(eof)
        c = data[i]
        if c == 0x22:
            return i + 1
        if c == 0x5C:
            if i + 1 >= n:
                raise GoJsonError(eof)
            e = data[i + 1]
            if e not in ESCAPES:
                raise _bad(e, "in string escape code")
            i += 2
            if e == 0x75:  # \uXXXX
                for _ in range(4):
                    if i >= n:
                        raise GoJsonError(eof)
                    if data[i] not in HEX:
                        raise _bad(data[i], "in \\u hexadecimal character escape")
                    i += 1
            continue
        if c < 0x20:
            raise _bad(c, "in string literal")
        i += 1


def _scan_number(data: bytes, i: int, eof: str, top: bool) -> int:
    n = len(data)
    if data[i] == 0x2D:  # '-'
        i += 1
        if i >= n:
            raise GoJsonError(eof)
        if data[i] not in DIGITS:
            raise _bad(data[i], "in numeric literal")
    if data[i] == 0x30:
        i += 1
    else:
        while i < n and data[i] in DIGITS:
            i += 1
    if i < n and data[i] == 0x2E:  # '.'
        i += 1
        if i >= n:
            raise GoJsonError(eof)
        if data[i] not in DIGITS:
            raise _bad(data[i], "after decimal point in numeric literal")
        while i < n and data[i] in DIGITS:
            i += 1
    if i < n and data[i] in b"eE":
        i += 1
        if i < n and data[i] in b"+-":
            i += 1
        if i >= n:
            raise GoJsonError(eof)
        if data[i] not in DIGITS:
            raise _bad(data[i], "in exponent of numeric literal")
        while i < n and data[i] in DIGITS:
            i += 1
    if i >= n and not top:
        raise GoJsonError(eof)
    return i


def _scan_literal(data: bytes, i: int, eof: str) -> int:
    word = {0x74: b"true", 0x66: b"false", 0x6E: b"null"}[data[i]]
    n = len(data)
    for k in range(1, len(word)):
        if i + k >= n:
            raise GoJsonError(eof)
        if data[i + k] != word[k]:
            raise _bad(data[i + k], f"in literal {word.decode()} (expecting {quote_char(word[k])})")
    return i + len(word)


def scan_value(data: bytes, pos: int = 0, eof: str = EOF_DECODER) -> tuple[int, int]:
    """(start, end) of the first JSON value at or after ``pos``; Go's error otherwise."""
    n = len(data)
    i = _skip_ws(data, pos)
    if i >= n:
        raise EmptyInput()
    start = i
    stack: list[int] = []  # 0x7B object, 0x5B array
    expect_value = True
    while True:
        if expect_value:
            i = _skip_ws(data, i)
            if i >= n:
                raise GoJsonError(eof)
            c = data[i]
            if c == 0x7B or c == 0x5B:
                stack.append(c)
                i = _skip_ws(data, i + 1)
                if i >= n:
                    raise GoJsonError(eof)
                close = 0x7D if c == 0x7B else 0x5D
                if data[i] == close:
                    stack.pop()
                    i += 1
                    expect_value = False
                elif c == 0x7B:
                    i = _scan_key(data, i, eof)
                continue
            if c == 0x22:
                i = _scan_string(data, i, eof)
            elif c == 0x2D or c in DIGITS:
                i = _scan_number(data, i, eof, top=not stack)
            elif c in b"tfn":
                i = _scan_literal(data, i, eof)
            else:
                raise _bad(c, "looking for beginning of value")
            expect_value = False
            continue
        if not stack:
            return start, i
        i = _skip_ws(data, i)
        if i >= n:
            raise GoJsonError(eof)
        c = data[i]
        if stack[-1] == 0x7B:
            if c == 0x2C:
                i = _scan_key(data, _skip_ws(data, i + 1), eof)
                expect_value = True
            elif c == 0x7D:
                stack.pop()
                i += 1
            else:
                raise _bad(c, "after object key:value pair")
        else:
            if c == 0x2C:
                i += 1
                expect_value = True
            elif c == 0x5D:
                stack.pop()
                i += 1
            else:
                raise _bad(c, "after array element")


def _scan_key(data: bytes, i: int, eof: str) -> int:
    """At an object key (after '{' or ','): scan it and its ':'; returns the offset after ':'."""
    n = len(data)
    if i >= n:
        raise GoJsonError(eof)
    if data[i] != 0x22:
        raise _bad(data[i], "looking for beginning of object key string")
    i = _skip_ws(data, _scan_string(data, i, eof))
    if i >= n:
        raise GoJsonError(eof)
    if data[i] != 0x3A:
        raise _bad(data[i], "after object key")
    return i + 1


def check_unmarshal(data: bytes) -> None:
    """json.Unmarshal's validity check: exactly one value, nothing but space after it."""
    try:
        _start, end = scan_value(data, 0, EOF_UNMARSHAL)
    except EmptyInput:
        raise GoJsonError(EOF_UNMARSHAL) from None
    end = _skip_ws(data, end)
    if end < len(data):
        raise _bad(data[end], "after top-level value")


# ------------------------------------------------------------------ base64

_B64 = {c: i for i, c in enumerate(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}


def b64decode(s: str) -> bytes:
    """base64.StdEncoding.DecodeString, as encoding/json uses it for []byte fields."""
    if len(s) % 4 == 0:  # padded quanta only: then Python's strict mode is Go's decoder
        try:
            return binascii.a2b_base64(s, strict_mode=True)
        except (binascii.Error, ValueError):
            pass
    return _go_b64(s.encode("utf-8"))


def _go_b64(src: bytes) -> bytes:
    out = bytearray()
    si, n = 0, len(src)
    while si < n:
        buf: list[int] = []
        dlen = 4
        j = 0
        while j < 4:
            if si == n:
                if j == 0:
                    return bytes(out)
                raise _corrupt(si - j)
            c = src[si]
            si += 1
            v = _B64.get(c)
            if v is not None:
                buf.append(v)
                j += 1
                continue
            if c in (10, 13):
                continue
            if c != 0x3D:
                raise _corrupt(si - 1)
            if j in (0, 1):
                raise _corrupt(si - 1)
            if j == 2:
                while si < n and src[si] in (10, 13):
                    si += 1
                if si == n:
                    raise _corrupt(n)
                if src[si] != 0x3D:
                    raise _corrupt(si - 1)
                si += 1
            while si < n and src[si] in (10, 13):
                si += 1
            if si < n:
                raise _corrupt(si)
            dlen = j
            break
        buf += [0] * (4 - len(buf))
        val = buf[0] << 18 | buf[1] << 12 | buf[2] << 6 | buf[3]
        out += bytes((val >> 16 & 0xFF, val >> 8 & 0xFF, val & 0xFF))[: dlen - 1]
    return bytes(out)


def _corrupt(pos: int) -> GoJsonError:
    return GoJsonError(f"illegal base64 data at input byte {pos}")


def go_quote(s: str) -> str:
    """strconv.Quote, close enough for enum names in error messages."""
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif o < 0x20 or o == 0x7F:
            out.append({10: "\\n", 13: "\\r", 9: "\\t"}.get(o, f"\\x{o:02x}"))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)
