"""The group committer: each submitter gets the outcome it would have had alone (every backend)."""

from __future__ import annotations

import asyncio

from keel.schedule._batch import Batcher
from keel.store import Compare, Get, KeyValue, Put, Range, Store


async def _with_batcher(store: Store) -> tuple[Batcher, asyncio.Task[None]]:
    batcher = Batcher(store)
    return batcher, asyncio.create_task(batcher.run())


async def test_concurrent_claims_share_transactions(store: Store) -> None:
    """Forty independent create-if-absent writes go out as a few combined transactions."""
    batcher, task = await _with_batcher(store)
    try:
        results = await asyncio.gather(
            *(batcher.submit([Compare.absent(f"k/{i}")], [Put(f"k/{i}", b"v")]) for i in range(40))
        )
    finally:
        task.cancel()
    assert all(r.succeeded for r in results)
    assert batcher.combined == 40 and batcher.batches < 40
    kvs, _ = await store.range("k/")
    assert len(kvs) == 40


async def test_a_conflict_is_answered_from_one_read(store: Store) -> None:
    """One failing compare among many: it gets its own failure result; the rest still commit."""
    await store.put("k/7", b"taken")
    batcher, task = await _with_batcher(store)
    try:
        results = await asyncio.gather(
            *(
                batcher.submit(
                    [Compare.absent(f"k/{i}")], [Put(f"k/{i}", b"mine")], [Get(f"k/{i}")]
                )
                for i in range(20)
            )
        )
    finally:
        task.cancel()
    lost = results[7]
    assert not lost.succeeded
    (held,) = lost.results
    assert isinstance(held, KeyValue) and held.value == b"taken"
    assert all(r.succeeded for i, r in enumerate(results) if i != 7)
    assert batcher.fallbacks >= 1
    kvs, _ = await store.range("k/")
    assert {kv.key: kv.value for kv in kvs}["k/7"] == b"taken" and len(kvs) == 20


async def test_a_failure_branch_it_cannot_answer_is_sent_alone(store: Store) -> None:
    """A failed request whose failure ops are not plain Gets of compared keys runs by itself."""
    await store.put("a/x", b"1")
    await store.put("a/y", b"2")
    batcher, task = await _with_batcher(store)
    try:
        doomed, fine = await asyncio.gather(
            batcher.submit([Compare.absent("a/x")], [Put("a/x", b"9")], [Range("a/")]),
            batcher.submit([Compare.absent("b/z")], [Put("b/z", b"3")]),
        )
    finally:
        task.cancel()
    assert not doomed.succeeded and fine.succeeded
    (listed,) = doomed.results
    assert isinstance(listed, list) and [kv.key for kv in listed] == ["a/x", "a/y"]
    kept = await store.get("a/x")
    assert kept is not None and kept.value == b"1"


async def test_stopping_the_batcher_cancels_what_it_has_not_answered(store: Store) -> None:
    """Submissions queued or in flight when the batcher stops are cancelled, not left waiting."""
    batcher = Batcher(store, in_flight=1)
    waiting = [
        asyncio.ensure_future(batcher.submit([Compare.absent(f"s/{i}")], [Put(f"s/{i}", b"v")]))
        for i in range(1000)
    ]
    task = asyncio.create_task(batcher.run())
    await asyncio.sleep(0)  # the first batches go out; most are still queued
    task.cancel()
    async with asyncio.timeout(5):
        done = await asyncio.gather(*waiting, return_exceptions=True)
    cancelled = [r for r in done if isinstance(r, asyncio.CancelledError)]
    answered = [r for r in done if not isinstance(r, BaseException)]
    assert cancelled, "queued submissions were cancelled"
    assert len(cancelled) + len(answered) == 1000
    kvs, _ = await store.range("s/")
    assert len(kvs) >= sum(r.succeeded for r in answered)
