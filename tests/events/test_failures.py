"""Failures on every engine: retries with backoff, dead letters, bad input, malformed records."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from keel.errors import ValidationError, ValueTooLargeError
from keel.events import Bus, Event, Message
from keel.resilience import RetrySettings
from tests.events._helpers import FAST, settled, take

QUICK = RetrySettings(base_delay_s=0.05, max_delay_s=0.2, jitter="none")


async def test_a_failing_event_is_retried_with_backoff_then_succeeds(bus: Bus) -> None:
    """raise = retry: attempts 1, 2, 3 with growing delays, then the return acks it."""
    seen: list[tuple[int, float]] = []
    done = asyncio.Event()

    @bus.handler("payments", group="g", max_attempts=5, retry=QUICK, **FAST)
    async def handle(event: Event) -> None:
        seen.append((event.attempt, asyncio.get_running_loop().time()))
        if event.attempt < 3:
            raise RuntimeError("gateway down")
        done.set()

    runner = asyncio.create_task(bus.run())
    try:
        await asyncio.sleep(0.5)
        await bus.publish("payments", {"n": 1}, key="p1")
        async with asyncio.timeout(20):
            await done.wait()
            while (await bus.lag("payments", "g"))[0].pending:  # noqa: ASYNC110  # the ack follows
                await asyncio.sleep(0.02)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    assert [a for a, _ in seen] == [1, 2, 3]
    gaps = [b - a for (_, a), (_, b) in itertools.pairwise(seen)]
    assert gaps[0] >= 0.04 and gaps[1] >= 0.09  # 0.05 s then 0.1 s (no jitter)
    labels = {"topic": "payments", "group": "g"}
    assert bus.metrics.registry.get_sample_value("keel_events_retried_total", labels) == 2


async def test_after_max_attempts_the_event_is_dead_lettered_and_the_key_moves_on(bus: Bus) -> None:
    """The last failure goes to '<topic>.dead' with the error; the next event of the key runs."""
    async with bus.subscribe("mail", group="g", max_attempts=3, retry=QUICK, **FAST) as sub:
        await settled(sub)
        await bus.publish("mail", {"n": 1}, key="u1", headers={"h": "1"})
        await bus.publish("mail", {"n": 2}, key="u1")
        attempts = []
        async with asyncio.timeout(20):
            while len(attempts) < 3:
                event = await sub.next()
                assert event.payload == {"n": 1}
                attempts.append(event.attempt)
                await event.nack(ValueError("bad address"))
        (second,) = await take(sub, 1)
    assert attempts == [1, 2, 3]
    assert second.payload == {"n": 2}
    (dead,) = await bus.read("mail.dead")
    assert dead.payload == {"n": 1} and dead.key == "u1"
    assert dead.headers["keel-dead-error"] == "ValueError: bad address"
    assert dead.headers["keel-dead-attempts"] == "3"
    assert dead.headers["keel-dead-group"] == "g"
    assert dead.headers["h"] == "1"
    labels = {"topic": "mail", "group": "g"}
    assert bus.metrics.registry.get_sample_value("keel_events_dead_lettered_total", labels) == 1


async def test_a_retrying_key_does_not_block_other_keys(bus: Bus) -> None:
    """While one key waits for its retry, events of other keys are handed out."""
    slow = RetrySettings(base_delay_s=1.0, max_delay_s=1.0, jitter="none")
    async with bus.subscribe("jobs", group="g", max_attempts=2, retry=slow, **FAST) as sub:
        await settled(sub)
        await bus.publish("jobs", {"n": 0}, key="stuck")
        (first,) = await take(sub, 1, ack=False)
        await first.nack("try later")
        await bus.publish_many("jobs", [Message({"n": n}, f"k{n}") for n in range(1, 4)])
        others = await take(sub, 3, timeout_s=0.9)
        (again,) = await take(sub, 1)
    assert sorted(e.payload["n"] for e in others) == [1, 2, 3]
    assert (again.payload, again.attempt) == ({"n": 0}, 2)


async def test_bad_input_is_refused_before_anything_is_published(bus: Bus) -> None:
    """Oversized payloads, bad names, keys, headers and payloads raise one clear error."""
    small = Bus(bus.engine, max_event_bytes=1000)
    with pytest.raises(ValueTooLargeError, match="over the limit of 1000"):
        await small.publish("big", "x" * 2000)
    with pytest.raises(ValueTooLargeError):
        await bus.publish("big", "x" * 1_100_000)
    for topic in ("", "has space", "a/b", "{tag}", ".dot", "x" * 300, 7):
        with pytest.raises(ValidationError, match="topic name"):
            await bus.publish(topic, {})  # type: ignore[arg-type]
    for group in ("", "a b", "g/1", "x" * 200):
        with pytest.raises(ValidationError, match="group name"):
            bus.subscribe("ok", group=group)
    with pytest.raises(ValidationError, match="key"):
        await bus.publish("ok", {}, key="")
    with pytest.raises(ValidationError, match="headers"):
        await bus.publish("ok", {}, headers={"n": 1})  # type: ignore[dict-item]
    with pytest.raises(ValidationError, match="JSON"):
        await bus.publish("ok", {"when": object()})
    with pytest.raises(ValidationError):
        bus.subscribe("ok", group="g", concurrency=0)
    assert await bus.topics() == []


async def test_a_malformed_record_is_skipped_dead_lettered_and_consumption_goes_on(
    bus: Bus,
) -> None:
    """Garbage written straight into a stream goes to '.dead'; the next good event arrives."""
    async with bus.subscribe("mixed", group="g", **FAST) as sub:
        await settled(sub)
        partitions = await bus.ensure_topic("mixed")
        for partition in range(partitions):
            await bus.engine.append("mixed", partition, [b"\xffnot json", b'{"topic": 5}'])
        await bus.publish("mixed", {"n": "good"})
        (event,) = await take(sub, 1)
        assert event.payload == {"n": "good"}
        async with asyncio.timeout(10):
            while len(await bus.read("mixed.dead", limit=100)) < 2 * partitions:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    dead = await bus.read("mixed.dead", limit=100)
    assert all(d.payload in (b"\xffnot json", b'{"topic": 5}') for d in dead)
    assert all(d.headers["keel-dead-error"] for d in dead)
    assert (await bus.lag("mixed", "g"))[0].pending == 0


async def test_an_event_whose_consumers_keep_dying_is_dead_lettered(bus: Bus) -> None:
    """An event re-delivered more than max_attempts times is dead-lettered, not handed out."""
    first = bus.subscribe("poison", group="g", max_attempts=1, **FAST)
    async with first:
        await settled(first)
        await bus.publish("poison", {"n": 1}, key="p")
        await take(first, 1, ack=False)  # then "dies": closes without acking
    async with bus.subscribe("poison", group="g", max_attempts=1, **FAST) as second:
        async with asyncio.timeout(20):
            while "poison.dead" not in await bus.topics():  # noqa: ASYNC110  # no event to await
                await asyncio.sleep(0.05)
        await bus.publish("poison", {"n": 2}, key="p")
        (after,) = await take(second, 1)
    (dead,) = await bus.read("poison.dead")
    assert dead.payload == {"n": 1}
    assert dead.headers["keel-dead-error"].startswith("delivered 2 times")
    assert after.payload == {"n": 2}
