"""Live binding on every backend: hot reload, invalid publishes, gray, layering, snapshots."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pydantic import BaseModel

from keel.config import ConfigCenter, GrayRule, LiveConfig, Source, env_overrides, parse
from keel.coord import Session
from keel.errors import ValidationError
from keel.observe import ConfigMetrics
from keel.store import Store


class Orders(BaseModel):
    """The settings model used below."""

    timeout_s: float = 1.0
    retries: int = 3
    region: str = "eu"


async def until(live: LiveConfig[Orders], timeout_s: float) -> Orders:
    """Wait until the binding's timeout_s is ``timeout_s`` (already, or after changes)."""
    async with asyncio.timeout(10):
        if live.value.timeout_s == timeout_s:
            return live.value
        async for value in live.changes():
            if value.timeout_s == timeout_s:
                return value
    raise AssertionError("unreachable")


async def test_publish_reaches_the_binding(store: Store) -> None:
    """A publish is applied; on_change sees old and new; changes() yields it."""
    center = ConfigCenter(store)
    await center.publish("orders.yaml", "timeout_s: 2\n")
    seen: list[tuple[float, float]] = []
    async with center.bind("orders.yaml", Orders, metrics=ConfigMetrics()) as live:
        assert live.value == Orders(timeout_s=2)
        live.on_change(lambda old, new: seen.append((old.timeout_s, new.timeout_s)))
        await center.publish("orders.yaml", "timeout_s: 5\nretries: 1\n")
        assert await until(live, 5) == Orders(timeout_s=5, retries=1)
        assert live.source.version == 2 and seen == [(2.0, 5.0)]


async def test_invalid_publish_keeps_the_last_good_value(store: Store) -> None:
    """A publish that fails the model keeps the old value, counts it and calls on_invalid."""
    center = ConfigCenter(store)
    metrics = ConfigMetrics()
    await center.publish("orders.yaml", "timeout_s: 2\n")
    refused: list[Source] = []
    seen_bad = asyncio.Event()

    def on_invalid(exc: Exception, source: Source) -> None:
        refused.append(source)
        seen_bad.set()

    async with center.bind("orders.yaml", Orders, metrics=metrics) as live:
        live.on_invalid(on_invalid)
        await center.publish("orders.yaml", "timeout_s: soon\n")
        async with asyncio.timeout(10):
            await seen_bad.wait()
        assert live.value == Orders(timeout_s=2)
        await center.publish("orders.yaml", "timeout_s: 3\n")
        assert await until(live, 3) == Orders(timeout_s=3)
        assert [s.version for s in refused] == [2]
        assert live.invalid == 1 and metrics.invalid_count("orders.yaml") == 1


async def test_gray_reaches_only_matching_clients(store: Store) -> None:
    """A gray release reaches the client it names; promote reaches everyone; abort reverts."""
    center = ConfigCenter(store)
    await center.publish("orders.yaml", "timeout_s: 1\n")
    async with (
        center.bind("orders.yaml", Orders, client_id="canary", metrics=ConfigMetrics()) as canary,
        center.bind(
            "orders.yaml", Orders, client_id="stable", labels={"zone": "b"}, metrics=ConfigMetrics()
        ) as stable,
    ):
        await center.publish_gray("orders.yaml", "timeout_s: 9\n", GrayRule(ids=("canary",)))
        await until(canary, 9)
        assert canary.source.gray and stable.value.timeout_s == 1
        await center.abort_gray("orders.yaml")
        await until(canary, 1)
        await center.publish_gray("orders.yaml", "timeout_s: 7\n", GrayRule(labels={"zone": "b"}))
        await until(stable, 7)
        await center.promote("orders.yaml")
        await until(canary, 7)
        assert canary.source == Source(2, False, canary.source.md5)


async def test_layers_defaults_file_store_env(store: Store, tmp_path: Path) -> None:
    """defaults < file < store < KEEL_CFG__ environment variables."""
    local = tmp_path / "orders.local.yaml"
    local.write_text("retries: 7\nregion: us\n")
    center = ConfigCenter(store)
    await center.publish("orders.yaml", "region: ap\n")
    env = {"KEEL_CFG__ORDERS__TIMEOUT_S": "4.5", "KEEL_CFG__OTHER__RETRIES": "1"}
    async with center.bind(
        "orders.yaml", Orders, file=local, environ=env, metrics=ConfigMetrics()
    ) as live:
        assert live.value == Orders(timeout_s=4.5, retries=7, region="ap")


def test_env_overrides_nest_and_parse() -> None:
    """Double underscores nest; JSON values are parsed, others stay strings."""
    env = {
        "KEEL_CFG__FEATURE_FLAGS__UI__DARK": "true",
        "KEEL_CFG__FEATURE_FLAGS__NAME": "blue",
        "KEEL_CFG__OTHER__X": "1",
    }
    assert env_overrides("feature-flags.json", env) == {"ui": {"dark": True}, "name": "blue"}


async def test_untyped_binding_and_text(store: Store) -> None:
    """dict and str models bind without a schema."""
    center = ConfigCenter(store)
    await center.publish("flags.json", '{"a": 1}')
    await center.publish("motd.txt", "hello")
    async with (
        center.bind("flags.json", metrics=ConfigMetrics()) as flags,
        center.bind("motd.txt", str, metrics=ConfigMetrics()) as motd,
    ):
        assert flags.value == {"a": 1} and motd.value == "hello"


async def test_first_value_must_validate(store: Store) -> None:
    """Binding to a document that does not validate, with no earlier value, fails clearly."""
    center = ConfigCenter(store)
    await center.publish("orders.yaml", "retries: many\n")
    with pytest.raises(ValidationError, match="does not validate"):
        await center.bind("orders.yaml", Orders, metrics=ConfigMetrics())


async def test_clients_report_their_version(store: Store) -> None:
    """With a session, a binding reports its version and gray state under config-clients/."""
    center = ConfigCenter(store)
    await center.publish("orders.yaml", "timeout_s: 1\n")
    async with (
        Session(store) as session,
        center.bind(
            "orders.yaml", Orders, client_id="c1", session=session, metrics=ConfigMetrics()
        ),
    ):
        kv = await store.get("config-clients/orders.yaml/c1")
        assert kv is not None and b'"version": 1' in kv.value and kv.lease == session.lease_id


def test_properties_parser() -> None:
    """Separators, comments, continuations and escapes of .properties."""
    text = (
        "# c\n! c\na=1\nb : 2\nc 3\nlong = one \\\n    two\nuni=\\u00e9\\tx\nkey\\ with\\ space=v\n"
    )
    assert parse("properties", text) == {
        "a": "1",
        "b": "2",
        "c": "3",
        "long": "one two",
        "uni": "é\tx",
        "key with space": "v",
    }
