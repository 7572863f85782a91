"""The one decoding boundary for records read from the store."""

from __future__ import annotations

import json

import pytest
from prometheus_client import REGISTRY

from keel._records import Rejected, check_depth, decode, load_json_object, report


def _rejected_total(area: str) -> float:
    value = REGISTRY.get_sample_value("keel_records_rejected_total", {"area": area})
    return value or 0.0


@pytest.mark.parametrize(
    "value",
    [
        b"\xff\xfe",
        b"not json",
        b"[1, 2]",
        b'"text"',
        b"[" * 20000 + b"]" * 20000,
        json.dumps(json.loads("[" * 40 + "]" * 40)).join(['{"a": ', "}"]).encode(),
    ],
)
def test_decode_turns_every_failure_into_a_rejection(value: bytes) -> None:
    """Bad UTF-8, non-JSON, a non-object and deep nesting are rejected, never raised."""
    result = decode("test", "k", value, load_json_object)
    assert isinstance(result, Rejected)
    assert result.key == "k" and result.area == "test" and result.reason


def test_decode_catches_what_a_careless_decoder_raises() -> None:
    """AttributeError and RecursionError from the decoder become rejections."""

    def careless(value: bytes) -> str:
        return str(load_json_object(value)["metadata"].get("x"))

    result = decode("test", "services/a/1", b'{"metadata": [1]}', careless)
    assert isinstance(result, Rejected)
    assert "AttributeError" in result.reason
    assert "services/a/1" in str(result)


def test_valid_records_decode() -> None:
    """A good record comes back decoded."""
    assert decode("test", "k", b'{"a": {"b": [1]}}', load_json_object) == {"a": {"b": [1]}}


def test_check_depth_counts_levels() -> None:
    """Depth 3 passes a limit of 3 and fails a limit of 2."""
    doc = {"a": [{"b": 1}]}
    check_depth(doc, 3)
    with pytest.raises(ValueError, match="deeper than 2"):
        check_depth(doc, 2)


def test_report_counts_every_rejection_and_logs_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each report is counted; the warning for one key is not repeated at once."""
    before = _rejected_total("test-report")
    rejected = Rejected("test-report", "jobs/x/def", "not JSON")
    with caplog.at_level("WARNING", logger="keel.records"):
        report(rejected)
        report(rejected)
    assert _rejected_total("test-report") == before + 2
    warnings = [r for r in caplog.records if "jobs/x/def" in r.getMessage()]
    assert len(warnings) == 1
