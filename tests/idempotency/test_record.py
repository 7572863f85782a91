"""The idempotency record decoder refuses every malformed record and round-trips good ones."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel._records import Rejected, decode
from keel.idempotency._record import DONE, RUNNING, TOO_LARGE, Record, decode_record, encode_record

GOOD = [
    Record(RUNNING, "f" * 64, token="ab12"),
    Record(DONE, "f" * 64, status=201, headers=((b"content-type", b"a/b"),), body=b"\x00\xff"),
    Record(TOO_LARGE, "f" * 64, status=200),
]


@pytest.mark.parametrize("record", GOOD)
def test_round_trip(record: Record) -> None:
    """Every state encodes to JSON and decodes back to the same record."""
    assert decode_record(encode_record(record)) == record


@pytest.mark.parametrize(
    "value",
    [
        b"[]",
        b"not json",
        b'{"v": true, "state": "running", "fp": "x", "token": "t"}',
        b'{"v": 2, "state": "running", "fp": "x", "token": "t"}',
        b'{"v": 1, "state": ["running"], "fp": "x", "token": "t"}',
        b'{"v": 1, "state": "running", "fp": 5, "token": "t"}',
        b'{"v": 1, "state": "done", "fp": "x", "status": true, "headers": [], "body": ""}',
        b'{"v": 1, "state": "done", "fp": "x", "status": 1e999, "headers": [], "body": ""}',
        b'{"v": 1, "state": "done", "fp": "x", "status": 99999999999999999999999, '
        b'"headers": [], "body": ""}',
        b'{"v": 1, "state": "done", "fp": "x", "status": 200, "headers": {"a": "b"}, "body": ""}',
        b'{"v": 1, "state": "done", "fp": "x", "status": 200, "headers": [["a"]], "body": ""}',
        b'{"v": 1, "state": "done", "fp": "x", "status": 200, "headers": [], "body": "!!"}',
        b'{"v": 1, "state": "done", "fp": "x", "status": 200, "headers": [[[[[[]]]]]], "body": ""}',
        b'{"v": 1, "x": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        b"\xff\xfe",
    ],
)
def test_malformed_records_are_rejected(value: bytes) -> None:
    """Wrong types, bools for ints, huge or NaN numbers, deep nesting, bad base64: rejected."""
    assert isinstance(decode("idempotency", "k", value, decode_record), Rejected)


@settings(max_examples=30, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_decode_or_reject(value: bytes) -> None:
    """Arbitrary bytes never raise through decode(): a record or a Rejected."""
    found = decode("idempotency", "k", value, decode_record)
    assert isinstance(found, Record | Rejected)
