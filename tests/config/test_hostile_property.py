"""Property: no record under a bound config's keys stops the binding from applying a publish."""

from __future__ import annotations

import asyncio
import json
import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

import keel
from keel.config import ConfigCenter, GrayRelease, LiveConfig
from keel.observe import ConfigMetrics

FIELDS = [
    "name",
    "content",
    "format",
    "version",
    "md5",
    "author",
    "comment",
    "published_at",
    "rule",
    "base_version",
    "ids",
    "labels",
    "percent",
]


class Orders(BaseModel):
    """The settings model used below."""

    timeout_s: float = 1.0


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | st.sampled_from(["yaml", "json", "orders.yaml", "timeout_s: 5\n"])
)
shapes = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=4), children, max_size=6)
    ),
    max_leaves=16,
)


def deep(depth: int, opener: bytes, closer: bytes) -> bytes:
    """A JSON document nested ``depth`` levels."""
    return opener * depth + b"1" + closer * depth


hostile = st.one_of(
    shapes.map(lambda doc: json.dumps(doc).encode()),
    st.binary(max_size=48),
    st.binary(max_size=16).map(lambda b: b"\xff\xfe" + b),
    st.integers(min_value=33, max_value=5000).map(lambda d: deep(d, b"[", b"]")),
    st.integers(min_value=33, max_value=5000).map(lambda d: deep(d, b'{"rule": ', b"}")),
    st.just(b'{"version": ' + b"9" * 5000 + b"}"),
)


def is_gray_record(value: bytes) -> bool:
    """Whether ``value`` happens to be a valid gray record (it would rightly win)."""
    try:
        GrayRelease.decode(value)
    except ValueError:
        return False
    return True


WHERE = st.sampled_from(
    [
        "config/{name}",
        "config-gray/{name}",
        "config-history/{name}/0000000001",
        "config-history/{name}/junk",
        "config-clients/{name}/c1",
    ]
)
records = st.lists(st.tuples(WHERE, hostile), min_size=1, max_size=6).filter(
    lambda rs: not any(where.startswith("config-gray") and is_gray_record(v) for where, v in rs)
)


async def until(live: LiveConfig[Orders], timeout_s: float) -> None:
    """Wait until the binding's timeout_s is ``timeout_s``."""
    async with asyncio.timeout(10):
        if live.value.timeout_s == timeout_s:
            return
        async for value in live.changes():
            if value.timeout_s == timeout_s:
                return


async def scenario(url: str, written: list[tuple[str, bytes]]) -> None:
    """Bind, write the hostile records, publish a valid document, see it applied."""
    async with keel.connect(url) as store:
        center = ConfigCenter(store)
        name = f"p-{uuid.uuid4().hex[:10]}.yaml"
        await center.publish(name, "timeout_s: 1\n")
        async with center.bind(name, Orders, client_id="c1", metrics=ConfigMetrics()) as live:
            for where, value in written:
                await store.put(where.format(name=name), value)
            await center.publish(name, "timeout_s: 7\n", force=True)
            await until(live, 7)
            assert live.following
            await center.publish(name, "timeout_s: 8\n")
            await until(live, 8)


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(written=records)
def test_hostile_records_never_stop_a_binding(
    store_url: str, written: list[tuple[str, bytes]]
) -> None:
    """Whatever lands under a config's keys, the next valid publish is applied."""
    asyncio.run(scenario(store_url, written))
