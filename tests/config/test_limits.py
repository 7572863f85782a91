"""Documents refused at publish and never expanded by a binding: depth, size, alias bombs."""

from __future__ import annotations

import asyncio
import time

import pytest
from pydantic import BaseModel, JsonValue

from keel.config import ConfigCenter, ConfigDocument, parse
from keel.errors import ValidationError
from keel.observe import ConfigMetrics
from keel.store import Store


class Settings(BaseModel):
    """A model with a free-form field, the kind a bomb would be bound to."""

    timeout_s: float = 1.0
    a6: JsonValue = None


def alias_bomb(levels: int = 9, width: int = 10) -> str:
    """The "billion laughs" YAML: each level lists the previous one ``width`` times."""
    lines = ["a0: &a0 [lol]"]
    for i in range(1, levels + 1):
        refs = ", ".join([f"*a{i - 1}"] * width)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "\n".join(lines) + "\n"


def nested(fmt: str, depth: int) -> str:
    """A document nested ``depth`` lists deep in ``fmt``."""
    body = "[" * depth + "1" + "]" * depth
    return {"yaml": f"a: {body}\n", "json": f'{{"a": {body}}}', "toml": f"a = {body}\n"}[fmt]


REFUSED = [
    ("bomb.yaml", alias_bomb(), "expand"),
    ("merge.yaml", alias_bomb().replace("[lol]", "{k: v}"), "expand"),
    ("self.yaml", "a: &a [*a]\n", "refers to itself"),
    ("deep.yaml", nested("yaml", 20_000), "deeper than 64"),
    ("deep65.yaml", nested("yaml", 65), "deeper than 64"),
    ("deep.json", nested("json", 20_000), "deeper than 64"),
    ("deep65.json", nested("json", 65), "deeper than 64"),
    ("deep.toml", nested("toml", 20_000), "deeper than 64"),
    ("wide.json", "[" + ",".join(["0"] * 100_001) + "]", "100000"),
    ("bigint.json", '{"a": ' + "1" * 5000 + "}", "not valid json"),
    ("bigint.yaml", "a: " + "1" * 5000 + "\n", "not valid yaml"),
]


@pytest.mark.parametrize(("name", "content", "reason"), REFUSED, ids=[r[0] for r in REFUSED])
async def test_hostile_documents_are_refused_at_publish(
    store: Store, name: str, content: str, reason: str
) -> None:
    """Deep, oversized, self-referencing and alias-bomb documents are refused; nothing written."""
    center = ConfigCenter(store, max_bytes=1024 * 1024)
    _, before = await store.range("")
    started = time.monotonic()
    with pytest.raises(ValidationError, match=reason):
        await center.publish(name, content)
    assert time.monotonic() - started < 5
    assert (await store.range(""))[1] == before


def test_documents_at_the_limits_parse() -> None:
    """64 levels and a few shared aliases are fine."""
    assert parse("json", nested("json", 63), name="x.json") is not None
    assert parse("yaml", nested("yaml", 63), name="x.yaml") is not None
    assert parse("yaml", alias_bomb(levels=2), name="x.yaml")["a2"][0] == [["lol"]] * 10


async def test_binding_never_expands_a_bomb_written_past_publish(store: Store) -> None:
    """A bomb put straight into the store is refused by the binding, fast, keeping its value."""
    center = ConfigCenter(store)
    await center.publish("s.yaml", "timeout_s: 2\n")
    async with center.bind("s.yaml", Settings, metrics=ConfigMetrics()) as live:
        bomb = ConfigDocument(
            name="s.yaml", content=alias_bomb(levels=6), format="yaml", version=2, md5=""
        )
        refused = asyncio.Event()
        live.on_invalid(lambda exc, source: refused.set())
        await store.put("config/s.yaml", bomb.encode())
        async with asyncio.timeout(5):
            await refused.wait()
        assert live.value.timeout_s == 2 and live.invalid == 1
