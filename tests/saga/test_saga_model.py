"""The saga record's decoder and ids: strict, and never more than a Rejected on junk."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel._records import Rejected, decode
from keel.errors import ValidationError
from keel.saga import SagaRecord, Status, StepRecord, StepState
from keel.saga._model import orphans, record_decoder, split_id
from keel.store import Event, EventType, KeyValue


def _record(**changes: object) -> dict[str, object]:
    rec = SagaRecord(
        saga="order",
        id="x1",
        status=Status.RUNNING,
        input={"a": [1, 2]},
        steps={"s": StepRecord(state=StepState.STARTED, started_at=1.0)},
        created_at=1.0,
        updated_at=2.0,
    )
    doc: dict[str, object] = msgspec.to_builtins(rec)
    doc.update(changes)
    return doc


def test_round_trip() -> None:
    """A record written by keel decodes to the same record."""
    doc = _record()
    rec = record_decoder(msgspec.json.encode(doc))
    assert msgspec.to_builtins(rec) == doc


@pytest.mark.parametrize(
    "changes",
    [
        {"token": True},
        {"token": "3"},
        {"token": 2**70},
        {"status": "lost"},
        {"steps": []},
        {"steps": {"s": {"state": "started", "attempts": 1.5}}},
        {"created_at": "yesterday"},
        {"v": 2},
        {"abort": 1},
        {"saga": None},
    ],
)
def test_wrong_types_are_rejected(changes: dict[str, object]) -> None:
    """Each wrong type or unknown value rejects the whole record."""
    out = decode("saga", "sagas/order/x1", msgspec.json.encode(_record(**changes)), record_decoder)
    assert isinstance(out, Rejected)


@settings(max_examples=30, deadline=None)
@given(
    st.binary(max_size=200)
    | st.recursive(
        st.none() | st.integers() | st.text(max_size=5),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
        max_leaves=10,
    ).map(msgspec.json.encode)
)
def test_junk_is_only_ever_rejected(value: bytes) -> None:
    """Arbitrary bytes and JSON decode to a record or a Rejected, never an exception."""
    out = decode("saga", "sagas/order/x1", value, record_decoder)
    assert isinstance(out, Rejected | SagaRecord)


@pytest.mark.parametrize("bad", ["x", "a/b/c", "/x", "a/", "a b/c", 3, None, "a/" + "x" * 65])
def test_bad_saga_ids_are_refused(bad: object) -> None:
    """A saga id is '<name>/<id>'; anything else is a ValidationError naming the form."""
    with pytest.raises(ValidationError, match="<saga name>/<id>"):
        split_id(bad)


def _ev(kind: EventType, key: str) -> Event:
    return Event(kind, KeyValue(key, b"", 1, 1, 1))


def test_orphans_of_a_watch_batch() -> None:
    """A vanished owner or an ownerless active marker is an orphan; ends and new owners are not."""
    put, delete = EventType.PUT, EventType.DELETE
    batch = [
        _ev(delete, "saga-run/owner/o/lost"),
        _ev(put, "saga-run/active/o/new"),
        _ev(put, "saga-run/owner/o/new"),  # started by a running coordinator: owned
        _ev(delete, "saga-run/owner/o/ended"),
        _ev(delete, "saga-run/active/o/ended"),  # ended: not an orphan
        _ev(put, "saga-run/active/o/waiting"),
        _ev(put, "saga-run/active/o/waiting"),
        _ev(delete, "saga-run/owner/o/retried"),
        _ev(delete, "saga-run/active/o/retried"),
        _ev(put, "saga-run/active/o/retried"),  # failed, then retried by an operator
    ]
    assert orphans(batch) == ["o/lost", "o/waiting", "o/retried"]
