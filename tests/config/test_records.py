"""The config record decoders: one boundary per record type, strict about every field."""

from __future__ import annotations

import json

import pytest

from keel._records import Rejected, decode
from keel.config import ClientReport, ConfigDocument, GrayRelease, GrayRule

DOC = {
    "name": "orders.yaml",
    "content": "timeout_s: 2\n",
    "format": "yaml",
    "version": 3,
    "md5": "",
    "author": "ann",
    "comment": "",
    "published_at": 1.5,
}
GRAY = {
    **{k: v for k, v in DOC.items() if k != "version"},
    "rule": {"ids": ["a"], "labels": {"zone": "a"}, "percent": 20},
    "base_version": 3,
}


def with_(base: dict[str, object], **changes: object) -> bytes:
    """``base`` with some fields replaced (``None`` removes one), as JSON."""
    record = {**base, **changes}
    return json.dumps({k: v for k, v in record.items() if v is not None}).encode()


def test_good_records_round_trip() -> None:
    """A record encoded by keel decodes to the same value."""
    doc = ConfigDocument.decode(with_(DOC))
    assert ConfigDocument.decode(doc.encode()) == doc and doc.md5  # md5 filled in
    gray = GrayRelease.decode(with_(GRAY))
    assert GrayRelease.decode(gray.encode()) == gray
    assert gray.rule == GrayRule(ids=("a",), labels={"zone": "a"}, percent=20)
    report = ClientReport(version=2, gray=True, md5="x", labels={"zone": "a"})
    assert ClientReport.decode(report.encode()) == report


@pytest.mark.parametrize(
    "value",
    [
        with_(DOC, version="3"),
        with_(DOC, version=True),
        with_(DOC, version=0),
        with_(DOC, version=2**63),
        with_(DOC, version=3.0),
        with_(DOC, content=None),
        with_(DOC, content=["a"]),
        with_(DOC, name="../etc"),
        with_(DOC, format="xml"),
        with_(DOC, md5=5),
        with_(DOC, published_at="now"),
        with_(DOC, published_at=False),
        b'{"published_at": NaN, "name": "a", "content": "", "version": 1}',
        b'{"published_at": Infinity, "name": "a", "content": "", "version": 1}',
        b"[]",
        b"\xff",
    ],
)
def test_documents_of_the_wrong_shape_are_rejected(value: bytes) -> None:
    """Wrong types, missing fields, NaN and non-objects are rejected, never coerced."""
    assert isinstance(decode("config", "config/x", value, ConfigDocument.decode), Rejected)


@pytest.mark.parametrize(
    "value",
    [
        with_(GRAY, rule=None),
        with_(GRAY, rule=[1]),
        with_(GRAY, rule={}),
        with_(GRAY, rule={"ids": "a"}),
        with_(GRAY, rule={"ids": [1]}),
        with_(GRAY, rule={"labels": {"zone": 1}}),
        with_(GRAY, rule={"labels": ["zone"]}),
        with_(GRAY, rule={"percent": 101}),
        with_(GRAY, rule={"percent": True}),
        with_(GRAY, rule={"percent": "5"}),
        with_(GRAY, base_version=-1),
        with_(GRAY, format=None),
    ],
)
def test_gray_records_of_the_wrong_shape_are_rejected(value: bytes) -> None:
    """A gray record with a rule of the wrong shape is rejected."""
    assert isinstance(decode("config", "config-gray/x", value, GrayRelease.decode), Rejected)


@pytest.mark.parametrize(
    "value",
    [b'{"version": "1"}', b'{"gray": 1}', b'{"labels": [1]}', b'{"md5": 5}', b"[1]"],
)
def test_client_reports_of_the_wrong_shape_are_rejected(value: bytes) -> None:
    """A client report with a field of the wrong type is rejected."""
    assert isinstance(decode("config", "config-clients/x/c", value, ClientReport.decode), Rejected)
