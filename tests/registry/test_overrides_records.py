"""Override records are untrusted input: one decoder, pure merge and filter rules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from keel.errors import ValidationError
from keel.registry import (
    DRAINING,
    Instance,
    Override,
    decode_override,
    encode_override,
    select,
)
from keel.registry._cache import ServiceCache
from keel.registry._overrides import apply_override
from keel.registry._snapshot import read_snapshot, write_snapshot

KEY = "overrides/orders/10.0.0.1:8080"


def inst(n: int, **kw: object) -> Instance:
    """An instance of orders on 10.0.0.n:8080."""
    return Instance(service="orders", address=f"10.0.0.{n}", port=8080, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("key", "body"),
    [
        (KEY, b"not json"),
        (KEY, b"[1]"),
        (KEY, b'{"weight": 0}'),
        (KEY, b'{"weight": 1001}'),
        (KEY, b'{"weight": true}'),
        (KEY, b'{"weight": 1.5}'),
        (KEY, b'{"weight": 99999999999999999999999999}'),
        (KEY, b'{"disabled": 1}'),
        (KEY, b'{"draining": "yes"}'),
        (KEY, b'{"by": ["x"]}'),
        (KEY, b'{"note": {"a": 1}}'),
        (KEY, b'{"at": "yesterday"}'),
        (KEY, b'{"at": 5}'),
        (KEY, b"[" * 5000 + b"]" * 5000),
        (KEY, b"\xff\xfe"),
        ("overrides/Orders/x", b"{}"),
        ("overrides/orders/has space", b"{}"),
        ("overrides/orders", b"{}"),
    ],
)
def test_hostile_records_are_rejected_with_validation_error(key: str, body: bytes) -> None:
    """Every malformed key or body raises ValidationError, never anything else."""
    with pytest.raises(ValidationError):
        decode_override(key, body)


def test_record_round_trips_and_ignores_unknown_fields() -> None:
    """encode/decode keep every field; nulls read as defaults; unknown fields are ignored."""
    override = decode_override(KEY, b'{"weight": 5, "draining": true, "by": "a", "x": [1]}', 7)
    assert (override.service, override.instance_id) == ("orders", "10.0.0.1:8080")
    assert (override.weight, override.draining, override.disabled, override.revision) == (
        5,
        True,
        False,
        7,
    )
    again = decode_override(KEY, encode_override(override), 7)
    assert again == override
    nulls = decode_override(KEY, b'{"weight": null, "disabled": null, "by": null, "at": null}')
    assert nulls.empty and nulls.by == "" and nulls.at is None


def test_apply_override_is_pure() -> None:
    """apply_override replaces the weight, drains, attaches itself; none/empty change nothing."""
    base = inst(1, weight=100)
    assert apply_override(base, None) is base
    assert apply_override(base, Override(service="orders", instance_id=base.id)) is base
    merged = apply_override(
        base, Override(service="orders", instance_id=base.id, weight=3, draining=True)
    )
    assert (merged.weight, merged.status, base.weight) == (3, DRAINING, 100)
    assert merged.override is not None and merged.override.weight == 3
    with pytest.raises(ValidationError, match="override"):
        inst(1, override="disabled")


def test_select_leaves_disabled_out_even_under_protection() -> None:
    """select() never returns a disabled instance, whatever the threshold or flags."""
    off = Override(service="orders", instance_id="10.0.0.1:8080", disabled=True)
    pool = [apply_override(inst(1), off), inst(2), inst(3)]
    assert [i.id for i in select(pool, set())] == ["10.0.0.2:8080", "10.0.0.3:8080"]
    every_failing = {"10.0.0.2:8080", "10.0.0.3:8080"}
    protected = select(pool, every_failing, protect_threshold=1.0, include_draining=True)
    assert [i.id for i in protected] == ["10.0.0.2:8080", "10.0.0.3:8080"]
    assert select(pool[:1], set(), protect_threshold=1.0) == ()


def test_snapshot_round_trip_applies_overrides(tmp_path: Path) -> None:
    """A snapshot's overrides are decoded like store records and merged at cold start."""
    path = tmp_path / "orders.json"
    override = Override(service="orders", instance_id="10.0.0.1:8080", weight=4, by="ops")
    write_snapshot(path, 9, [inst(1), inst(2)], ["10.0.0.2:8080"], [override])
    body = json.loads(path.read_text())
    body["overrides"]["bad id"] = {"weight": 3}
    body["overrides"]["10.0.0.2:8080"] = {"weight": "x"}
    path.write_text(json.dumps(body))
    snapshot = read_snapshot(path, "orders")
    assert snapshot is not None
    kvs, failing, overrides, revision = snapshot
    cache = ServiceCache("orders")
    cache.load(kvs, [], overrides, revision)
    assert {i.id: i.weight for i in cache.instances.values()} == {
        "10.0.0.1:8080": 4,
        "10.0.0.2:8080": 100,
    }
    assert (failing, revision, list(cache.overrides)) == (["10.0.0.2:8080"], 9, ["10.0.0.1:8080"])


def test_cache_result_does_not_depend_on_event_order() -> None:
    """The override applies whether it arrives before or after the instance record."""
    from keel.store import Event, EventType, KeyValue

    def event(key: str, value: bytes, revision: int) -> Event:
        return Event(EventType.PUT, KeyValue(key, value, revision, revision, 1), None)

    record = json.dumps({"address": "10.0.0.1", "port": 8080, "weight": 100}).encode()
    put_instance = event("services/orders/10.0.0.1:8080", record, 5)
    put_override = event(KEY, b'{"weight": 6}', 6)
    first, second = ServiceCache("orders"), ServiceCache("orders")
    for cache, events in (
        (first, (put_instance, put_override)),
        (second, (put_override, put_instance)),
    ):
        for e in events:
            cache.apply(e)
    assert first.instances == second.instances
    assert first.instances["10.0.0.1:8080"].weight == 6


JSON: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
OVERRIDE_LIKE = st.fixed_dictionaries(
    {}, optional={n: JSON for n in ("weight", "disabled", "draining", "by", "at", "note")}
)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=48),
        JSON.map(lambda doc: json.dumps(doc).encode()),
        OVERRIDE_LIKE.map(lambda doc: json.dumps(doc).encode()),
    )
)
def test_any_bytes_decode_to_an_override_or_a_validation_error(body: bytes) -> None:
    """Whatever the bytes, the decoder returns a valid Override or raises ValidationError."""
    try:
        override = decode_override(KEY, body)
    except ValidationError:
        return
    assert override.weight is None or 1 <= override.weight <= 1000
    assert isinstance(override.disabled, bool) and isinstance(override.draining, bool)
    merged = apply_override(inst(1), override)
    assert merged.weight == (override.weight or 100)
