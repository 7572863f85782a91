"""ConfigCenter on every backend: publish, CAS, history, diff, rollback, retention, gray."""

from __future__ import annotations

import pytest

from keel.config import ConfigCenter, GrayRule
from keel.errors import ConflictError, NotFoundError, ValidationError
from keel.store import Store


async def test_publish_get_and_history(store: Store) -> None:
    """Each publish is the next version; current and history agree."""
    center = ConfigCenter(store)
    first = await center.publish("orders.yaml", "timeout_s: 1\n", author="ann", comment="init")
    second = await center.publish("orders.yaml", "timeout_s: 2\n", author="bob")
    assert (first.version, second.version) == (1, 2)
    current = await center.get("orders.yaml")
    assert current is not None and current.content == "timeout_s: 2\n" and current.author == "bob"
    assert current.format == "yaml" and current.md5 == second.md5
    history = await center.history("orders.yaml")
    assert [(d.version, d.comment) for d in history] == [(1, "init"), (2, "")]
    listed = await center.list()
    assert [(s.name, s.version, s.gray) for s in listed] == [("orders.yaml", 2, False)]


async def test_history_keys_are_readable(store: Store) -> None:
    """The documented layout: config/<name> and config-history/<name>/<zero-padded version>."""
    center = ConfigCenter(store)
    await center.publish("flags.json", '{"new_ui": true}')
    keys = [kv.key for kv in (await store.range(""))[0]]
    assert keys == ["config-history/flags.json/0000000001", "config/flags.json"]


async def test_compare_and_swap(store: Store) -> None:
    """A publish with a stale expected_version is refused and names the current one."""
    center = ConfigCenter(store)
    await center.publish("a.json", "{}", expected_version=0)
    with pytest.raises(ConflictError, match="version 1, not 0"):
        await center.publish("a.json", '{"x": 1}', expected_version=0)
    await center.publish("a.json", '{"x": 1}', expected_version=1)
    current = await center.get("a.json")
    assert current is not None and current.version == 2


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.yaml", "a: [1, 2\nb: 3\n", "line 2, column"),
        ("bad.json", '{"a": 1,\n "b": }', "line 2, column 7"),
        ("bad.toml", "a = \n", "toml"),
        ("bad.properties", "=value\n", "no key"),
        ("evil.yaml", "!!python/object/apply:os.system ['echo pwned']\n", "no language-specific"),
        ("bad name.yaml", "a: 1", "not valid"),
    ],
)
async def test_invalid_documents_are_refused_and_nothing_is_written(
    store: Store, name: str, content: str, message: str
) -> None:
    """A document that does not parse is refused with its position; nothing is written."""
    center = ConfigCenter(store)
    with pytest.raises(ValidationError, match=message):
        await center.publish(name, content)
    assert (await store.range(""))[0] == []


async def test_size_limit(store: Store) -> None:
    """A document over max_bytes is refused naming the limit."""
    center = ConfigCenter(store, max_bytes=100)
    with pytest.raises(ValidationError, match="over the limit of 100"):
        await center.publish("big.txt", "x" * 101)


async def test_diff_and_rollback(store: Store) -> None:
    """diff shows a unified diff; rollback publishes the old content as a new version."""
    center = ConfigCenter(store)
    await center.publish("app.yaml", "a: 1\nb: 2\n")
    await center.publish("app.yaml", "a: 1\nb: 3\n")
    diff = await center.diff("app.yaml", 1, 2)
    assert "-b: 2" in diff and "+b: 3" in diff and "--- app.yaml@1" in diff
    back = await center.rollback("app.yaml", 1, author="ops")
    assert back.version == 3 and back.content == "a: 1\nb: 2\n"
    assert back.comment == "rollback to version 1"
    with pytest.raises(NotFoundError, match="no version 9"):
        await center.diff("app.yaml", 1, 9)


async def test_retention_keeps_the_last_n(store: Store) -> None:
    """Only the last `retention` versions stay in history."""
    center = ConfigCenter(store, retention=3)
    for i in range(6):
        await center.publish("r.txt", f"v{i}")
    assert [d.version for d in await center.history("r.txt")] == [4, 5, 6]


async def test_delete_keeps_history_and_versions_continue(store: Store) -> None:
    """Deleting removes the current record; history stays; a new publish continues the count."""
    center = ConfigCenter(store)
    await center.publish("d.txt", "one")
    assert await center.delete("d.txt")
    assert await center.get("d.txt") is None
    assert [d.version for d in await center.history("d.txt")] == [1]
    again = await center.publish("d.txt", "two", expected_version=0)
    assert again.version == 2


async def test_gray_publish_promote_abort(store: Store) -> None:
    """At most one gray; promote makes it the next version and ends it; abort ends it."""
    center = ConfigCenter(store)
    with pytest.raises(NotFoundError):
        await center.publish_gray("g.yaml", "a: 2", GrayRule(ids=("i-1",)))
    await center.publish("g.yaml", "a: 1")
    gray = await center.publish_gray("g.yaml", "a: 2", GrayRule(ids=("i-1",)))
    assert gray.base_version == 1
    with pytest.raises(ConflictError, match="already has a gray"):
        await center.publish_gray("g.yaml", "a: 3", GrayRule(percent=10))
    with pytest.raises(ValidationError, match="yaml"):
        await center.publish_gray("g.yaml", "a: [", GrayRule(percent=10), replace=True)
    promoted = await center.promote("g.yaml")
    assert promoted.version == 2 and promoted.content == "a: 2"
    assert await center.gray("g.yaml") is None
    await center.publish_gray("g.yaml", "a: 3", GrayRule(percent=50))
    assert await center.abort_gray("g.yaml")
    current = await center.get("g.yaml")
    assert current is not None and current.content == "a: 2"


def test_gray_rules_by_id_label_and_stable_percentage() -> None:
    """Ids always match; labels are globs that must all match; percentages are stable."""
    rule = GrayRule(ids=("special",), labels={"zone": "a", "version": "2.*"})
    assert rule.matches("c", "special", {})
    assert rule.matches("c", "x", {"zone": "a", "version": "2.4"})
    assert not rule.matches("c", "x", {"zone": "b", "version": "2.4"})
    assert not rule.matches("c", "x", {"zone": "a"})
    half = GrayRule(percent=50)
    clients = [f"client-{i}" for i in range(2000)]
    chosen = {c for c in clients if half.matches("cfg", c, {})}
    assert 850 < len(chosen) < 1150
    assert chosen == {c for c in clients if half.matches("cfg", c, {})}  # stable
    widened = {c for c in clients if GrayRule(percent=80).matches("cfg", c, {})}
    assert chosen <= widened  # raising the percentage only adds clients
    with pytest.raises(ValidationError, match="needs ids, labels or a percent"):
        GrayRule()
    assert GrayRule.parse_labels("zone=a, version=2.*") == {"zone": "a", "version": "2.*"}
