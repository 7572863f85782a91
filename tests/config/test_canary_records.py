"""Canary, canary-log, client-report and schema records are untrusted: decoders refuse
anything malformed with a ValueError (never another exception), and a malformed schema
blocks publishing with the repair named."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel._records import Rejected, decode
from keel.config import (
    Analysis,
    Canary,
    CanaryEntry,
    ClientReport,
    ConfigCenter,
    ConfigSchema,
    MalformedConfigError,
    Step,
)
from keel.store import Store

GOOD = Canary(
    name="o.yaml",
    analysis=Analysis(steps=(Step(percent=10, duration_s=60), Step(percent=100))),
    gray_md5="g",
    step=0,
    step_started_at=1.0,
    started_at=1.0,
    deadline_at=2.0,
    evaluations=(CanaryEntry(at=1.0, step=0, kind="pass", reasons=("ok",), evidence={"x": 1}),),
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
DECODERS = (Canary.decode, CanaryEntry.decode, ClientReport.decode, ConfigSchema.decode)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(list(json.loads(GOOD.encode()))), values)
def test_any_field_value_is_decoded_or_refused_cleanly(field: str, value: object) -> None:
    """Replacing any field of a good record with anything: decoded, or a ValueError."""
    record = json.loads(GOOD.encode())
    record[field] = value
    raw = json.dumps(record).encode()
    for decoder in DECODERS:
        with contextlib.suppress(ValueError):  # refusing is fine; nothing else may escape
            decoder(raw)
        assert not isinstance(decode("config", "k", raw, decoder), Exception)


@pytest.mark.parametrize(
    "raw", [b"", b"[]", b"\xff", b'{"status": "running"}', b"{" * 5000, b'{"schema": {"type": 5}}']
)
def test_garbage_is_refused(raw: bytes) -> None:
    """Garbage bytes are a Rejected through the one boundary, for every decoder."""
    for decoder in DECODERS:
        assert isinstance(decode("config", "k", raw, decoder), Rejected)


async def test_a_malformed_schema_blocks_publishing_with_the_repair(store: Store) -> None:
    """A schema record that cannot be read refuses publish (it cannot check) and says how to fix."""
    center = ConfigCenter(store)
    await store.put("config-schema/o.yaml", b'{"schema": [1]}')
    with pytest.raises(MalformedConfigError, match=r"keel config schema set o\.yaml"):
        await center.publish("o.yaml", "x: 1\n")
    assert await center.delete_schema("o.yaml")
    assert (await center.publish("o.yaml", "x: 1\n")).version == 1
