"""Request decoding with etcd's gateway semantics and Go's error messages (expected texts
were taken from etcd 3.4.23 answers and Go's encoding/json and encoding/base64)."""

from __future__ import annotations

import base64
import binascii

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from udpraft.kv import gojson, parse
from udpraft.kv.errors import KvError
from udpraft.kv.types import DeleteReq, PutReq, RangeReq, TxnReq


def error_of(raw: bytes, fn=parse.put_request) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(KvError) as ei:
        parse.validate(parse.parse(raw, fn))
    return ei.value.message


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"key":', "unexpected EOF"),
        (b'{"key": "YQ==" "x": 1}', "invalid character '\"' after object key:value pair"),
        (b'{"key" 1}', "invalid character '1' after object key"),
        (b"{,}", "invalid character ',' looking for beginning of object key string"),
        (b"[1 2]", "invalid character '2' after array element"),
        (b"x", "invalid character 'x' looking for beginning of value"),
        (b'{"a": tru}', "invalid character '}' in literal true (expecting 'e')"),
        (b'{"a": nul', "unexpected EOF"),
        (b'{"a": -x}', "invalid character 'x' in numeric literal"),
        (b'{"a": 1.}', "invalid character '}' after decimal point in numeric literal"),
        (b'{"a": 1e}', "invalid character '}' in exponent of numeric literal"),
        (b'{"a": "\\q"}', "invalid character 'q' in string escape code"),
        (b'{"a": "\\u12x4"}', "invalid character 'x' in \\u hexadecimal character escape"),
        (b'{"a": "\x01"}', "invalid character '\\x01' in string literal"),
        (b"[1,2]", "json: cannot unmarshal array into Go value of type map[string]json.RawMessage"),
        (b'"x"', "json: cannot unmarshal string into Go value of type map[string]json.RawMessage"),
        (b"", "etcdserver: key is not provided"),
        (b"  \n", "etcdserver: key is not provided"),
        (b"null", "etcdserver: key is not provided"),
        (b'{"key": "YQ==", "value": 5}', "json: cannot unmarshal number into Go value of type []uint8"),
        (b'{"key": "YQ==", "lease": 1.5}', "json: cannot unmarshal number 1.5 into Go value of type int64"),
        (b'{"key": "YQ==", "lease": 1e3}', "json: cannot unmarshal number 1e3 into Go value of type int64"),
        (b'{"key": "YQ==", "lease": 99999999999999999999}',
         "json: cannot unmarshal number 99999999999999999999 into Go value of type int64"),
        (b'{"key": "YQ==", "lease": "abc"}', "invalid character 'a' looking for beginning of value"),
        (b'{"key": "YQ==", "lease": ""}', "unexpected end of JSON input"),
        (b'{"key": "YQ==", "lease": "1x"}', "invalid character 'x' after top-level value"),
        (b'{"key": "YQ==", "lease": true}', "json: cannot unmarshal bool into Go value of type int64"),
        (b'{"key": "YQ==", "prev_kv": "yes"}', "json: cannot unmarshal string into Go value of type bool"),
        (b'{"key": "YQ=", "value": "eA=="}', "illegal base64 data at input byte 3"),
        (b'{"key": "YQ"}', "illegal base64 data at input byte 0"),
        (b'{"key": "YQ-_"}', "illegal base64 data at input byte 2"),
        (b'{"key": "!!!"}', "illegal base64 data at input byte 0"),
        (b'{"key": "YQ==x"}', "illegal base64 data at input byte 4"),
        (b'{"key": ""}', "etcdserver: key is not provided"),
        (b'{"key": "YQ==", "value": "eA==", "ignore_value": true}', "etcdserver: value is provided"),
        (b'{"key": "YQ==", "lease": 3, "ignore_lease": true}', "etcdserver: lease is provided"),
    ],
)
def test_put_errors_are_etcds(raw: bytes, message: str) -> None:
    assert error_of(raw) == message


def test_accepted_forms() -> None:
    assert parse.parse(b'{"key": "YQ==", "value": "eQ=="} garbage', parse.put_request) == PutReq("a", "y")
    assert parse.parse(b'{"key": "YQ==", "lease": "12", "prevKv": true, "bogus": [1]}',
                       parse.put_request) == PutReq("a", "", 12, True)
    assert parse.parse(b'{"key": "YQ==", "lease": -0}', parse.put_request).lease == 0
    r = parse.parse(b'{"key":"YQ==","rangeEnd":"AA==","sortOrder":"DESCEND","sort_target":3,'
                    b'"limit":"5","serializable":true}', parse.range_request)
    assert r == RangeReq("a", "", 5, 0, 2, 3, serializable=True)
    assert parse.parse(b'{"key":"YQ==","range_end":""}', parse.range_request).end is None
    assert parse.parse(b'{"key":"YQ==\\n"}', parse.put_request).key == "a"  # Go skips newlines


def test_enum_and_message_errors() -> None:
    assert error_of(b'{"key":"YQ==","sort_order":"BOGUS"}', parse.range_request) == \
        'unknown value "BOGUS" for enum etcdserverpb.RangeRequest_SortOrder'
    assert error_of(b'{"key":"YQ==","sort_order":true}', parse.range_request) == \
        "json: cannot unmarshal bool into Go value of type etcdserverpb.RangeRequest_SortOrder"
    assert error_of(b'{"compare":{}}', parse.txn_request) == \
        "json: cannot unmarshal object into Go value of type []json.RawMessage"
    assert error_of(b'{"success":[{}]}', parse.txn_request) == "etcdserver: key not found"
    assert error_of(b'{"success":[[]]}', parse.txn_request) == \
        "json: cannot unmarshal array into Go value of type map[string]json.RawMessage"


def put(k: str) -> PutReq:
    return PutReq(k, "v")


@pytest.mark.parametrize(
    ("ops", "ok"),
    [
        ([put("a"), put("b")], True),
        ([put("a"), put("a")], False),
        ([DeleteReq("a", "c"), put("b")], False),
        ([DeleteReq("a", None), put("a")], False),
        ([DeleteReq("a", ""), put("b")], True),  # "\0" is an empty literal interval there
        ([DeleteReq("c", "a"), put("b")], True),
        ([TxnReq([], [put("a")], [put("a")]), put("b")], True),  # then/else exclusive
        ([TxnReq([], [put("a")], []), put("a")], False),
        ([TxnReq([], [DeleteReq("a", "z")], []), put("q")], False),
        ([TxnReq([], [put("q")], []), DeleteReq("a", "z")], False),
        ([TxnReq([], [put("a")], []), TxnReq([], [put("a")], [])], False),
    ],
)
def test_duplicate_key_rule(ops: list, ok: bool) -> None:  # type: ignore[type-arg]
    t = TxnReq([], ops, [])
    if ok:
        parse.validate(t)
    else:
        with pytest.raises(KvError, match="duplicate key"):
            parse.validate(t)


def test_too_many_ops() -> None:
    t = TxnReq([], [put(f"k{i}") for i in range(129)], [])
    with pytest.raises(KvError, match="too many operations"):
        parse.validate(t)
    parse.validate(TxnReq([], [put(f"k{i}") for i in range(128)], []))


@settings(max_examples=1500, deadline=None)
@given(st.text(alphabet="ABCDabcd0189+/=-_!\n\r ", max_size=16))
def test_base64_fast_path_agrees_with_the_go_port(s: str) -> None:
    try:
        go = gojson._go_b64(s.encode())
    except gojson.GoJsonError:
        go = None
    try:
        fast = binascii.a2b_base64(s, strict_mode=True) if len(s) % 4 == 0 else None
    except (binascii.Error, ValueError):
        fast = None
    if fast is not None:
        assert go == fast  # whatever the fast path accepts, Go accepts the same way
    try:
        ours = gojson.b64decode(s)
    except gojson.GoJsonError as e:
        ours = None
        assert go is None and str(e).startswith("illegal base64 data at input byte ")
    assert ours == go


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=40))
def test_base64_roundtrip(data: bytes) -> None:
    assert gojson.b64decode(base64.b64encode(data).decode()) == data


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=30))
def test_scanner_never_crashes_and_agrees_with_a_json_parser(data: bytes) -> None:
    import json

    try:
        start, end = gojson.scan_value(data)
    except (gojson.GoJsonError, gojson.EmptyInput):
        return
    json.loads(data[start:end].decode("utf-8", "replace"))  # what Go accepts, parses
