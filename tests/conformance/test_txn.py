"""Transactions: compares, branches, atomicity and results, on every backend."""

from __future__ import annotations

import pytest

from keel.errors import LeaseNotFoundError, ValidationError
from keel.store import Compare, Delete, Get, Put, Range, Store


async def test_create_if_absent(store: Store) -> None:
    """The classic create-if-absent: only the first of two txns wins."""
    first = await store.txn([Compare.absent("lock")], [Put("lock", b"me")])
    second = await store.txn([Compare.absent("lock")], [Put("lock", b"you")], [Get("lock")])
    assert first.succeeded and not second.succeeded
    holder = second.results[0]
    assert holder is not None and not isinstance(holder, int | list)
    assert holder.value == b"me"


@pytest.mark.parametrize(
    ("compare", "expected"),
    [
        (Compare.version("k", "==", 2), True),
        (Compare.version("k", "!=", 2), False),
        (Compare.version("k", ">", 1), True),
        (Compare.version("k", "<", 2), False),
        (Compare.value("k", "==", b"v2"), True),
        (Compare.value("k", "<", b"v3"), True),
        (Compare.value("k", ">", b"v3"), False),
        (Compare.value("missing", "==", b""), False),
        (Compare.version("missing", "==", 0), True),
        (Compare.create_revision("missing", "==", 0), True),
        (Compare.mod_revision("missing", "<", 1), True),
        (Compare.lease("k", "==", 0), True),
        (Compare.lease("missing", "==", 0), True),
    ],
)
async def test_compare_semantics(store: Store, compare: Compare, expected: bool) -> None:
    """Each target and operator compares as etcd does, missing keys included."""
    await store.put("k", b"v1")
    await store.put("k", b"v2")
    result = await store.txn([compare], [Put("hit", b"1")], [Put("miss", b"1")])
    assert result.succeeded is expected


async def test_revision_compares(store: Store) -> None:
    """create_revision and mod_revision compare against the key's real revisions."""
    r1 = await store.put("k", b"1")
    r2 = await store.put("k", b"2")
    ok = await store.txn(
        [Compare.create_revision("k", "==", r1), Compare.mod_revision("k", "==", r2)], [Get("k")]
    )
    assert ok.succeeded
    stale = await store.txn([Compare.mod_revision("k", "==", r1)], [Put("k", b"x")])
    assert not stale.succeeded
    kv = await store.get("k")
    assert kv is not None and kv.value == b"2"


async def test_all_compares_must_hold(store: Store) -> None:
    """One false compare among several sends the txn to its failure branch."""
    await store.put("a", b"1")
    result = await store.txn(
        [Compare.value("a", "==", b"1"), Compare.version("b", ">", 0)],
        [Put("won", b"1")],
        [Put("lost", b"1")],
    )
    assert not result.succeeded
    assert await store.get("won") is None
    assert await store.get("lost") is not None


async def test_writes_share_one_revision(store: Store) -> None:
    """Every write in one txn gets the same new revision, one more than before."""
    before = await store.put("seed", b"0")
    await store.put("gone", b"x")
    result = await store.txn([], [Put("a", b"1"), Put("b", b"2"), Delete("gone")])
    assert result.revision == before + 2
    kvs, _ = await store.range("")
    assert {kv.key: kv.mod_revision for kv in kvs} == {
        "a": result.revision,
        "b": result.revision,
        "seed": before,
    }


async def test_read_only_txn_does_not_advance_the_revision(store: Store) -> None:
    """A txn that writes nothing leaves the revision where it was."""
    rev = await store.put("a", b"1")
    result = await store.txn([Compare.version("a", "==", 1)], [Get("a"), Range("")])
    assert result.succeeded and result.revision == rev


async def test_results_per_op(store: Store) -> None:
    """Put yields None, Get a record or None, Range a list, Delete a count."""
    await store.put("p/1", b"1")
    await store.put("p/2", b"2")
    result = await store.txn(
        [],
        [Get("p/1"), Get("absent"), Range("p/", limit=1), Delete("p/2"), Put("q", b"q")],
    )
    got, absent, ranged, deleted, put = result.results
    assert got is not None and not isinstance(got, int | list) and got.value == b"1"
    assert absent is None
    assert isinstance(ranged, list) and [kv.key for kv in ranged] == ["p/1"]
    assert deleted == 1
    assert put is None


async def test_later_ops_see_earlier_writes(store: Store) -> None:
    """Within a txn, a Get after a Put reads the new value (ops apply in order)."""
    result = await store.txn([], [Put("k", b"new"), Get("k")])
    got = result.results[1]
    assert got is not None and not isinstance(got, int | list) and got.value == b"new"


async def test_unknown_lease_fails_the_whole_txn(store: Store) -> None:
    """A Put on a missing lease aborts the txn: none of its other writes happen."""
    _, before = await store.range("")
    with pytest.raises(LeaseNotFoundError):
        await store.txn([], [Put("a", b"1"), Put("b", b"2", lease=123456789)])
    kvs, after = await store.range("")
    assert kvs == [] and after == before


async def test_writing_a_key_twice_is_refused(store: Store) -> None:
    """Two writes to one key in one branch are bad input; nothing is written."""
    with pytest.raises(ValidationError, match="more than once"):
        await store.txn([], [Put("a", b"1"), Put("a", b"2")])
    with pytest.raises(ValidationError, match="more than once"):
        await store.txn([], [Delete("a/", prefix=True), Put("a/x", b"2")])
    assert await store.get("a") is None


async def test_too_many_compares_or_ops_are_refused(store: Store) -> None:
    """Over 128 compares or ops per branch (etcd's --max-txn-ops) is bad input; nothing written."""
    many = [Compare.version(f"k{i}", "==", 0) for i in range(129)]
    with pytest.raises(ValidationError, match="129 compares, over the limit of 128"):
        await store.txn(many, [Put("a", b"1")])
    with pytest.raises(ValidationError, match="129 ops, over the limit of 128"):
        await store.txn([], [Put(f"k{i}", b"1") for i in range(129)])
    assert await store.get("a") is None
    result = await store.txn(many[:128], [Put(f"k{i}", b"1") for i in range(128)])
    assert result.succeeded
