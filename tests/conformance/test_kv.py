"""The store contract's key-value rules, on every backend."""

from __future__ import annotations

import pytest

import keel
from keel.errors import CompactedError, InvalidKeyError, ValidationError, ValueTooLargeError
from keel.store import Store


async def test_put_then_get_returns_the_record(store: Store) -> None:
    """A put is readable at once with version 1 and create == mod == the put's revision."""
    rev = await store.put("a", b"1")
    kv = await store.get("a")
    assert kv is not None
    assert (kv.key, kv.value, kv.version, kv.lease) == ("a", b"1", 1, 0)
    assert kv.create_revision == kv.mod_revision == rev


async def test_each_put_advances_the_revision_by_one(store: Store) -> None:
    """Revisions are global, monotonic, and each write adds exactly one."""
    r1 = await store.put("a", b"1")
    r2 = await store.put("b", b"2")
    r3 = await store.put("a", b"3")
    assert (r2, r3) == (r1 + 1, r1 + 2)
    kv = await store.get("a")
    assert kv is not None
    assert (kv.version, kv.create_revision, kv.mod_revision) == (2, r1, r3)


async def test_get_of_a_missing_key_is_none(store: Store) -> None:
    """A key never written reads as None."""
    assert await store.get("nope") is None


async def test_delete_resets_version_and_create_revision(store: Store) -> None:
    """Deleting ends a key's incarnation: a new put starts at version 1 again."""
    await store.put("a", b"1")
    await store.put("a", b"2")
    assert await store.delete("a") == 1
    assert await store.get("a") is None
    rev = await store.put("a", b"3")
    kv = await store.get("a")
    assert kv is not None
    assert (kv.version, kv.create_revision) == (1, rev)


async def test_delete_of_a_missing_key_changes_nothing(store: Store) -> None:
    """Deleting nothing returns 0 and does not advance the revision."""
    rev = await store.put("a", b"1")
    assert await store.delete("b") == 0
    _, now = await store.range("")
    assert now == rev


async def test_delete_prefix_removes_only_the_prefix(store: Store) -> None:
    """A prefix delete removes every key under it, in one revision, and nothing else."""
    for key in ("x/1", "x/2", "x/3/deep", "xy", "y"):
        await store.put(key, b"v")
    assert await store.delete("x/", prefix=True) == 3
    kvs, _ = await store.range("")
    assert [kv.key for kv in kvs] == ["xy", "y"]


async def test_values_are_bytes_and_round_trip(store: Store) -> None:
    """Binary and empty values come back byte for byte."""
    blob = bytes(range(256)) * 4
    await store.put("bin", blob)
    await store.put("empty", b"")
    got_bin, got_empty = await store.get("bin"), await store.get("empty")
    assert got_bin is not None and got_bin.value == blob
    assert got_empty is not None and got_empty.value == b""


async def test_range_is_sorted_and_respects_prefix_and_limit(store: Store) -> None:
    """Range returns keys in byte order under the prefix, at most `limit` of them."""
    keys = ["b/2", "a", "b/1", "b/10", "ba", "c"]
    for key in keys:
        await store.put(key, key.encode())
    kvs, _ = await store.range("b/")
    assert [kv.key for kv in kvs] == ["b/1", "b/10", "b/2"]
    kvs, _ = await store.range("b")
    assert [kv.key for kv in kvs] == ["b/1", "b/10", "b/2", "ba"]
    kvs, _ = await store.range("", limit=2)
    assert [kv.key for kv in kvs] == ["a", "b/1"]
    kvs, _ = await store.range("b/1", prefix=False)
    assert [kv.key for kv in kvs] == ["b/1"]


async def test_empty_prefix_lists_everything_under_the_root(store: Store) -> None:
    """The empty prefix is the whole namespace of this connection."""
    for key in ("one", "two/2", "three"):
        await store.put(key, b"v")
    kvs, rev = await store.range("")
    assert [kv.key for kv in kvs] == ["one", "three", "two/2"]
    assert rev == max(kv.mod_revision for kv in kvs)


async def test_unicode_and_slash_keys(store: Store) -> None:
    """Keys are any UTF-8 text; prefixes work on their encoded bytes."""
    keys = ["配置/订单", "配置/库存", "naïve/é", "a/b/c/d", "emoji/🚀"]
    for key in keys:
        await store.put(key, key.encode())
    kvs, _ = await store.range("配置/")
    assert [kv.key for kv in kvs] == sorted(["配置/订单", "配置/库存"], key=str.encode)
    got = await store.get("emoji/🚀")
    assert got is not None and got.value == "emoji/🚀".encode()


async def test_range_at_a_past_revision(store: Store) -> None:
    """Reads at an old revision see the store as it was then."""
    r1 = await store.put("k", b"1")
    r2 = await store.put("k", b"2")
    await store.put("other", b"x")
    await store.delete("k")
    kvs, _ = await store.range("k", prefix=False, revision=r1)
    assert [kv.value for kv in kvs] == [b"1"]
    kvs, _ = await store.range("", revision=r2)
    assert [(kv.key, kv.value, kv.version) for kv in kvs] == [("k", b"2", 2)]
    kvs, _ = await store.range("")
    assert [kv.key for kv in kvs] == ["other"]


async def test_range_at_a_future_revision_is_refused(store: Store) -> None:
    """A revision after the current one is bad input."""
    rev = await store.put("k", b"1")
    with pytest.raises(ValidationError):
        await store.range("", revision=rev + 100)


async def test_compacted_revisions_raise_compacted(store: Store) -> None:
    """After compact(r), reads below r raise Compacted naming the compaction point."""
    r1 = await store.put("k", b"1")
    await store.put("k", b"2")
    r3 = await store.put("k", b"3")
    await store.compact(r3)
    with pytest.raises(CompactedError) as info:
        await store.range("k", revision=r1)
    assert info.value.compact_revision >= r3
    kvs, _ = await store.range("k", revision=r3)
    assert [kv.value for kv in kvs] == [b"3"]
    with pytest.raises(CompactedError):
        await store.compact(r1)


async def test_bad_keys_are_refused_and_change_nothing(store: Store) -> None:
    """Absolute, empty and non-str keys get a clear error; nothing is written."""
    _, before = await store.range("")
    with pytest.raises(InvalidKeyError, match="outside the store's root"):
        await store.put("/keel/abs", b"v")
    with pytest.raises(InvalidKeyError, match="empty"):
        await store.put("", b"v")
    with pytest.raises(InvalidKeyError, match="str"):
        await store.put(b"bytes-key", b"v")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="bytes"):
        await store.put("k", "text")  # type: ignore[arg-type]
    kvs, after = await store.range("")
    assert kvs == [] and after == before


async def test_values_over_the_limit_are_refused(store_url: str) -> None:
    """A value over max_value_bytes raises ValueTooLarge naming the limit; nothing is written."""
    sep = "&" if "?" in store_url else "?"
    async with keel.connect(f"{store_url}{sep}max_value_bytes=1000") as small:
        await small.put("ok", b"x" * 1000)
        with pytest.raises(ValueTooLargeError, match="1000 bytes"):
            await small.put("big", b"x" * 1001)
        assert await small.get("big") is None


async def test_default_limit_is_one_mebibyte(store: Store) -> None:
    """The default limit accepts 1 MiB and refuses one byte more."""
    await store.put("mib", b"m" * (1024 * 1024))
    with pytest.raises(ValueTooLargeError):
        await store.put("over", b"m" * (1024 * 1024 + 1))


async def test_roots_isolate_namespaces(store_url: str, backend: str) -> None:
    """Two connections with different roots on one store do not see each other's keys."""
    base = "memory://" if backend == "memory" else store_url.split("?")[0]
    async with keel.connect(f"{base}?root=/ns-a/") as a, keel.connect(f"{base}?root=/ns-b/") as b:
        await a.put("shared-name", b"a")
        assert await b.get("shared-name") is None
        await b.put("shared-name", b"b")
        got = await a.get("shared-name")
        assert got is not None and got.value == b"a"
        await a.delete("", prefix=True)
        got_b = await b.get("shared-name")
        assert got_b is not None and got_b.value == b"b"
        await b.delete("", prefix=True)


async def test_status_reports_revision_and_keys(store: Store, backend: str) -> None:
    """status() names the backend and counts the keys under the root."""
    await store.put("a", b"1")
    rev = await store.put("b", b"2")
    status = await store.status()
    assert status.backend == backend
    assert status.keys == 2
    assert status.revision >= rev
