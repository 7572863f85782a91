"""Schemas on every backend: failing documents are refused at publish, gray, rollback, promote."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from keel.config import ConfigCenter, GrayRule, SchemaViolationError, schema_of
from keel.errors import NotFoundError, ValidationError
from keel.store import Store

KEEL = [sys.executable, "-m", "keel.cli"]


class Orders(BaseModel):
    """The model whose schema is set below."""

    timeout_s: float = Field(gt=0)
    retries: int = 3


async def test_publish_of_a_failing_document_is_refused(store: Store) -> None:
    """A document failing the schema is refused with path and message; nothing changes."""
    center = ConfigCenter(store)
    await center.publish("orders.yaml", "timeout_s: 1\n")
    record = await center.set_schema("orders.yaml", Orders, author="ops")
    assert record.version == 1 and record.schema["required"] == ["timeout_s"]
    before, _ = await store.range("")
    with pytest.raises(SchemaViolationError) as caught:
        await center.publish("orders.yaml", "timeout_s: -1\nretries: many\n")
    paths = [v.path for v in caught.value.violations]
    assert paths == ["$.retries", "$.timeout_s"]
    assert "$.timeout_s" in str(caught.value) and "minimum of 0" in str(caught.value)
    after, _ = await store.range("")
    assert after == before
    assert (await center.publish("orders.yaml", "timeout_s: 2\n")).version == 2


async def test_gray_rollback_and_promote_are_checked(store: Store) -> None:
    """Gray and rollback of a failing document are refused; a schema tightened later blocks
    the promote of a gray that no longer fits it."""
    center = ConfigCenter(store)
    await center.publish("orders.yaml", "timeout_s: 0\n")  # valid before any schema
    await center.publish("orders.yaml", "timeout_s: 1\n")
    await center.set_schema("orders.yaml", Orders)
    with pytest.raises(SchemaViolationError):
        await center.publish_gray("orders.yaml", "retries: 1\n", GrayRule(ids=("a",)))
    assert await center.gray("orders.yaml") is None
    with pytest.raises(SchemaViolationError):
        await center.rollback("orders.yaml", 1)
    assert (await center.get("orders.yaml")).version == 2  # type: ignore[union-attr]
    await center.publish_gray("orders.yaml", "timeout_s: 5\n", GrayRule(ids=("a",)))
    strict = schema_of(Orders)
    strict["properties"]["timeout_s"]["maximum"] = 3
    assert (await center.set_schema("orders.yaml", strict)).version == 2
    with pytest.raises(SchemaViolationError):
        await center.promote("orders.yaml")
    assert await center.gray("orders.yaml") is not None
    assert [s.version for s in await center.schema_history("orders.yaml")] == [1, 2]


async def test_schema_versions_validate_and_remove(store: Store) -> None:
    """validate() checks without writing; a bad schema is refused; rm stops checking."""
    center = ConfigCenter(store)
    with pytest.raises(NotFoundError):
        await center.validate("orders.yaml", "timeout_s: 1\n")
    with pytest.raises(ValidationError, match="not a valid JSON Schema"):
        await center.set_schema("orders.yaml", {"type": "nonsense"})
    await center.set_schema("orders.yaml", {"type": "object", "required": ["timeout_s"]})
    await center.validate("orders.yaml", "timeout_s: 1\n")
    with pytest.raises(SchemaViolationError, match=r"\$: 'timeout_s' is a required"):
        await center.validate("orders.yaml", "retries: 1\n")
    assert await center.get("orders.yaml") is None
    assert await center.delete_schema("orders.yaml")
    assert await center.schema("orders.yaml") is None
    assert (await center.publish("orders.yaml", "retries: 1\n")).version == 1


def run_cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``keel --store URL config args...`` as a real process."""
    return subprocess.run(
        [*KEEL, "--store", url, "config", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_cli_validate_and_schema_commands(store_url: str, tmp_path: Path) -> None:
    """`keel config validate` exits 0/2 offline (--schema) and against the store's schema."""
    schema = tmp_path / "schema.json"
    schema.write_text('{"type": "object", "properties": {"timeout_s": {"type": "number"}}}')
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text("timeout_s: 2\n")
    bad.write_text("timeout_s: soon\n")
    offline = run_cli("sqlite:///nowhere/at/all.db", "validate", "o.yaml", str(bad), "--schema")
    assert offline.returncode == 2  # --schema needs a value: usage error, exit 2
    result = run_cli(store_url, "validate", "o.yaml", str(bad), "--schema", str(schema))
    assert result.returncode == 2 and "$.timeout_s" in result.stderr
    assert result.stderr.count("\n") == 1
    result = run_cli(store_url, "validate", "o.yaml", str(good), "--schema", str(schema))
    assert result.returncode == 0, result.stderr
    assert run_cli(store_url, "schema", "set", "o.yaml", str(schema)).returncode == 0
    assert run_cli(store_url, "validate", "o.yaml", str(good)).returncode == 0
    refused = run_cli(store_url, "publish", "o.yaml", str(bad))
    assert refused.returncode == 2 and "$.timeout_s" in refused.stderr
    assert run_cli(store_url, "get", "o.yaml").returncode == 1
    assert run_cli(store_url, "schema", "rm", "o.yaml").returncode == 0
    assert run_cli(store_url, "validate", "o.yaml", str(good)).returncode == 1
