"""Events benchmark: keel.events on Redis Streams beside raw redis-py, the store engine, dramatiq.

    python bench/events.py                      # ~1.5 min: 3 rounds of 3,000 events
    python bench/events.py --events 2000 --repeats 1
    python bench/events.py --only redis         # or --only store

One fresh redis-server serves everything Redis. For 1 and 8 consumers of one
group (a topic of as many partitions), with 8 publisher tasks:

- *publish/s*: the publishers alone, one event per call;
- *e2e/s*: consumers running while the publishers go as fast as they can:
  events over the time from the first publish to the last ack, with the p99
  of publish -> ack latency at that saturation, and the client CPU time per
  event (publishing and consuming are in this process; CPU time is the
  figure load from other processes barely moves) and, on Redis, the
  commands the server ran per event (publish, read and ack included: the
  ideal is a little over 1, one ``XADD`` each, with reads and acks batched);
- *p99 @ rate*: publish -> ack latency when one publisher offers a steady
  rate well under saturation (1,000/s on Redis, 100/s on the store).

Systems:

- **keel bus**: ``Bus(RedisEngine)``: ``publish(topic, payload, key=...)``,
  ``async for event in subscription: await event.ack()`` (event codec,
  partition ownership, per-key dispatch included). Partitions go to members
  by rendezvous hashing, so with 8 consumers on 8 partitions some consumers
  own two and some none.
- **keel engine**: the ``RedisEngine`` alone (``append`` / ``read_group`` /
  ``ack``), in the same loop as raw redis-py.
- **raw redis-py**: ``XADD`` / ``XREADGROUP BLOCK`` / ``XACK``, one loop per
  partition, each reading up to 100 entries and acking them.
- **store sqlite / etcd**: the same bus on keel's store engine (one-member etcd).
- **dramatiq**: its Redis broker doing the same fan-in work: 8 threads
  ``send`` messages to one queue, a worker with 1 or 8 threads runs an actor
  that records the latency: tasks/s.

Redis figures are medians of ``--repeats`` rounds, the systems interleaved
round by round; the store and dramatiq run once. Target: keel >= 0.7x raw
redis-py. A measurement, not a test: it prints a table and one JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import struct
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PUBLISHERS = 8
BATCH = 100
BLOCK_S = 0.2
MEMBER_TTL_S = 3.0  # members tick every ttl/3: partitions settle within a few seconds
CONSUMERS = (1, 8)
REDIS_PACE = (1000.0, 1000)  # events/s, events
STORE_PACE = (100.0, 100)
STAMP = struct.Struct("d")
PAD = b"x" * 92  # ~100-byte events


@dataclass
class Tally:
    """Progress of one measured phase (reset between phases; consumers keep running)."""

    expected: int = 0
    acked: int = 0
    latencies: list[float] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    last: float = 0.0
    stop: bool = False

    def reset(self, expected: int) -> None:
        self.expected, self.acked, self.last = expected, 0, 0.0
        self.latencies = []
        self.done.clear()

    def record(self, stamps: list[bytes]) -> None:
        now = time.perf_counter()
        self.latencies.extend(now - STAMP.unpack_from(d)[0] for d in stamps)
        self.acked += len(stamps)
        self.last = now
        if self.acked >= self.expected:
            self.done.set()


@dataclass
class System:
    """One system on a fresh topic: publish event ``i``, and run consumers while inside."""

    publish: Callable[[int, bytes], Awaitable[Any]]
    consuming: Callable[[Tally], contextlib.AbstractAsyncContextManager[None]]
    calls: Callable[[], Awaitable[int]] | None = None
    """Commands the server has run so far (Redis: ``INFO commandstats``), if known."""


def stamp() -> bytes:
    return STAMP.pack(time.perf_counter()) + PAD


def p99(samples: list[float]) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


async def publish_all(system: System, n: int) -> float:
    """``n`` publishes from :data:`PUBLISHERS` tasks; return the seconds taken."""
    start = time.perf_counter()

    async def publisher(first: int) -> None:
        for i in range(first, n, PUBLISHERS):
            await system.publish(i, stamp())

    async with asyncio.TaskGroup() as group:
        for k in range(PUBLISHERS):
            group.create_task(publisher(k))
    return time.perf_counter() - start


async def publish_paced(system: System, n: int, rate: float) -> None:
    """One publisher offering ``rate`` events/s."""
    start = time.perf_counter()
    for i in range(n):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await system.publish(i, stamp())


async def phase(system: System, tally: Tally, n: int, pace: float | None) -> dict[str, float]:
    """Publish ``n`` events (as fast as possible, or paced) and wait for their acks."""
    tally.reset(n)
    calls = await system.calls() if system.calls else 0
    start, cpu = time.perf_counter(), time.process_time()
    with contextlib.suppress(TimeoutError):  # report what was acked within the limit
        async with asyncio.timeout(30):
            if pace is None:
                await publish_all(system, n)
            else:
                await publish_paced(system, n, pace)
            await tally.done.wait()
    took = (tally.last or time.perf_counter()) - start
    cpu_us = (time.process_time() - cpu) / max(1, tally.acked) * 1e6
    per_event = float("nan")
    if system.calls:
        per_event = (await system.calls() - calls) / max(1, tally.acked)
    return {
        "rate": tally.acked / took,
        "p99_ms": p99(tally.latencies),
        "cpu_us": cpu_us,
        "calls": per_event,
    }


async def measure(make: Callable[[], Awaitable[System]], n: int, pace: tuple[float, int]) -> Any:
    """Publish rate on one topic, then saturated and paced e2e on another, with consumers."""
    took = await publish_all(await make(), n)
    system = await make()
    tally = Tally()
    async with system.consuming(tally):
        saturated = await phase(system, tally, n, None)
        steady = await phase(system, tally, pace[1], pace[0])
    return {
        "publish": n / took,
        "e2e": saturated["rate"],
        "p99_saturated_ms": saturated["p99_ms"],
        "cpu_us_per_event": saturated["cpu_us"],
        "calls_per_event": saturated["calls"],
        "p99_paced_ms": steady["p99_ms"],
    }


# -- systems -------------------------------------------------------------------


def loop_system(
    partitions: int,
    publish: Callable[[int, bytes], Awaitable[Any]],
    read: Callable[[int, str], Awaitable[list[tuple[Any, bytes]]]],
    ack: Callable[[int, list[Any]], Awaitable[Any]],
) -> System:
    """A read -> ack loop per partition (raw redis-py and the bare engine)."""

    async def consume(partition: int, tally: Tally) -> None:
        while not tally.stop:
            entries = await read(partition, f"c{partition}")
            if entries:
                await ack(partition, [i for i, _ in entries])
                tally.record([d for _, d in entries])

    @contextlib.asynccontextmanager
    async def consuming(tally: Tally) -> AsyncIterator[None]:
        async with asyncio.TaskGroup() as group:
            for p in range(partitions):
                group.create_task(consume(p, tally))
            try:
                yield
            finally:
                # A flag, not cancel(): redis-py on Python 3.11 can lose a cancellation.
                tally.stop = True

    return System(publish, consuming)


async def raw_system(client: Any, partitions: int) -> System:
    """Raw redis-py on a fresh set of streams."""
    topic = uuid.uuid4().hex[:8]
    keys = [f"raw:{{{topic}:{p}}}" for p in range(partitions)]
    for key in keys:
        await client.xgroup_create(key, "g", "0", mkstream=True)
    block_ms = int(BLOCK_S * 1000)

    async def publish(i: int, data: bytes) -> Any:
        return await client.xadd(keys[i % partitions], {"d": data})

    async def read(p: int, consumer: str) -> list[tuple[Any, bytes]]:
        got = await client.xreadgroup("g", consumer, {keys[p]: ">"}, count=BATCH, block=block_ms)
        return [(i, f[b"d"]) for i, f in got[0][1]] if got else []

    async def ack(p: int, ids: list[Any]) -> Any:
        return await client.xack(keys[p], "g", *ids)

    return loop_system(partitions, publish, read, ack)


async def engine_system(engine: Any, partitions: int) -> System:
    """keel's RedisEngine alone, in the raw loop."""
    topic = f"bench.{uuid.uuid4().hex[:8]}"
    await engine.create_topic(topic, partitions)
    await engine.create_group(topic, "g", "0")

    async def publish(i: int, data: bytes) -> Any:
        return await engine.append(topic, i % partitions, [data])

    async def read(p: int, consumer: str) -> list[tuple[Any, bytes]]:
        got = await engine.read_group(topic, p, "g", consumer, BATCH, BLOCK_S)
        return [(e.id, e.data) for e in got]

    async def ack(p: int, ids: list[Any]) -> Any:
        return await engine.ack(topic, p, "g", ids)

    return loop_system(partitions, publish, read, ack)


async def bus_system(bus: Any, consumers: int) -> System:
    """The keel Bus: keyed publish, ``consumers`` subscriptions of one group."""
    topic = f"bench.{uuid.uuid4().hex[:8]}"
    await bus.ensure_topic(topic, consumers)

    async def publish(i: int, data: bytes) -> Any:
        return await bus.publish(topic, data, key=f"k{i % 64}")

    async def consume(sub: Any, tally: Tally) -> None:
        async for event in sub:
            await event.ack()
            tally.record([event.payload])

    @contextlib.asynccontextmanager
    async def consuming(tally: Tally) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            subs = [
                await stack.enter_async_context(
                    bus.subscribe(
                        topic,
                        group="g",
                        start="earliest",
                        block_s=BLOCK_S,
                        member_ttl_s=MEMBER_TTL_S,
                    )
                )
                for _ in range(consumers)
            ]
            await settled(subs, consumers)
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(consume(sub, tally)) for sub in subs]
                try:
                    yield
                finally:
                    for task in tasks:
                        task.cancel()

    return System(publish, consuming)


async def settled(subs: list[Any], partitions: int, timeout_s: float = 20.0) -> None:
    """Wait until every partition has one owner and the assignment held for a membership tick."""
    held_s = MEMBER_TTL_S / 3 * 1.2 if len(subs) > 1 else 0.0
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            last, since = None, time.monotonic()
            while True:
                now = [tuple(s.owned) for s in subs]
                if now != last:
                    last, since = now, time.monotonic()
                elif sum(map(len, now)) == partitions and time.monotonic() - since > held_s:
                    return
                await asyncio.sleep(0.05)


async def redis_round(url: str, system: str, consumers: int, n: int) -> dict[str, float]:
    """One round of one Redis system."""
    import redis.asyncio as aredis

    from keel.events import Bus
    from keel.events.redis import RedisEngine

    client = aredis.Redis.from_url(url)
    engine = RedisEngine(client)
    bus = Bus(engine, partitions=consumers)

    async def calls() -> int:
        stats = await client.info("commandstats")
        return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")

    async def make() -> System:
        if system == "keel bus":
            made = await bus_system(bus, consumers)
        elif system == "keel engine":
            made = await engine_system(engine, consumers)
        else:
            made = await raw_system(client, consumers)
        made.calls = calls
        return made

    try:
        return dict(await measure(make, n, REDIS_PACE))
    finally:
        await bus.aclose()
        await client.aclose()


async def store_round(url: str, consumers: int, n: int) -> dict[str, float]:
    """One round of the bus on keel's store engine."""
    import keel
    from keel.events import Bus

    async with keel.connect(url) as store:
        bus = Bus(store, partitions=consumers)
        try:
            return dict(await measure(lambda: bus_system(bus, consumers), n, STORE_PACE))
        finally:
            await bus.aclose()


def dramatiq_round(url: str, threads: int, n: int) -> dict[str, float]:
    """Dramatiq's Redis broker: ``n`` messages sent by 8 threads, a worker of ``threads``."""
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker

    broker = RedisBroker(url=url, namespace=f"bench-{uuid.uuid4().hex[:6]}")  # type: ignore[no-untyped-call]  # dramatiq is untyped
    dramatiq.set_broker(broker)
    lock = threading.Lock()
    latencies: list[float] = []
    finished = threading.Event()

    @dramatiq.actor(broker=broker, queue_name="fanin", max_retries=0)
    def handle(sent: float) -> None:
        with lock:
            latencies.append(time.perf_counter() - sent)
            if len(latencies) >= n:
                finished.set()

    def send(first: int) -> None:
        for _ in range(first, n, PUBLISHERS):
            handle.send(time.perf_counter())

    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=100)
    worker.start()
    try:
        start = time.perf_counter()
        senders = [threading.Thread(target=send, args=(k,)) for k in range(PUBLISHERS)]
        for t in senders:
            t.start()
        for t in senders:
            t.join()
        sent = time.perf_counter() - start
        finished.wait(timeout=60)
        took = time.perf_counter() - start
    finally:
        worker.stop()
        broker.close()
    return {"publish": n / sent, "e2e": len(latencies) / took, "p99_saturated_ms": p99(latencies)}


# -- report ----------------------------------------------------------------------

REDIS_SYSTEMS = ("keel bus", "keel engine", "raw redis-py")
COLUMNS = (
    ("publish/s", "publish", ",.0f"),
    ("e2e/s", "e2e", ",.0f"),
    ("p99 sat ms", "p99_saturated_ms", ".1f"),
    ("cpu us/ev", "cpu_us_per_event", ".0f"),
    ("calls/ev", "calls_per_event", ".2f"),
    ("p99 paced ms", "p99_paced_ms", ".1f"),
)


def redis_section(url: str, n: int, repeats: int) -> dict[str, dict[str, float]]:
    """Every Redis system, interleaved round by round; medians."""
    out: dict[str, dict[str, float]] = {}
    for consumers in CONSUMERS:
        rounds: dict[str, list[dict[str, float]]] = {s: [] for s in REDIS_SYSTEMS}
        for _ in range(repeats):
            for system in REDIS_SYSTEMS:
                rounds[system].append(asyncio.run(redis_round(url, system, consumers, n)))
        for system, got in rounds.items():
            out[f"{system} x{consumers}"] = {
                k: statistics.median(r[k] for r in got) for k in got[0]
            }
    return out


def print_table(rows: dict[str, dict[str, float]]) -> None:
    print(f"{'system':<22}" + "".join(f"{title:>14}" for title, _, _ in COLUMNS))
    for name, row in rows.items():
        cells = [format(row.get(key, float("nan")), fmt) for _, key, fmt in COLUMNS]
        print(f"{name:<22}" + "".join(f"{c:>14}" for c in cells))


def ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--events", type=int, default=3000, help="events per Redis round")
    parser.add_argument("--store-events", type=int, default=300, help="events per store round")
    parser.add_argument("--repeats", type=int, default=3, help="Redis rounds (median)")
    parser.add_argument(
        "--only",
        choices=("all", "redis", "store"),
        default="all",
        help="run only the Redis systems (no dramatiq) or only the store engine",
    )
    args = parser.parse_args()

    from keel.testing import RedisServer

    rows: dict[str, dict[str, float]] = {}
    started = time.perf_counter()
    if args.only in ("all", "redis"):
        with RedisServer() as server:
            rows.update(redis_section(server.url, args.events, args.repeats))
            for threads in CONSUMERS if args.only == "all" else ():
                rows[f"dramatiq x{threads}"] = dramatiq_round(server.url, threads, args.events)
    if args.only in ("all", "store"):
        store_section(rows, args.store_events)
    print_table(rows)
    if args.only in ("all", "redis"):
        print_ratios(rows)
    print(f"(whole run {time.perf_counter() - started:.0f} s)")
    doc = {
        "bench": "events",
        "events_per_redis_round": args.events,
        "events_per_store_round": args.store_events,
        "repeats": args.repeats,
        "rows": {
            k: {m: round(v, 1) for m, v in r.items() if v == v}  # NaN: not measured
            for k, r in rows.items()
        },
        "over_raw_redis_py": ratios(rows) if args.only in ("all", "redis") else {},
    }
    print(json.dumps(doc))


def store_section(rows: dict[str, dict[str, float]], n: int) -> None:
    """The bus on the store engine: sqlite and a one-member etcd."""
    from keel.testing import EtcdCluster

    with tempfile.TemporaryDirectory() as tmp, EtcdCluster(1) as etcd:
        urls = {"store sqlite": f"sqlite:///{Path(tmp) / 'keel.db'}", "store etcd": etcd.url}
        for name, url in urls.items():
            for consumers in CONSUMERS:
                rows[f"{name} x{consumers}"] = asyncio.run(store_round(url, consumers, n))


def ratios(rows: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Each keel system over raw redis-py: publish, e2e and CPU per event."""
    keys = ("publish", "e2e", "cpu_us_per_event")
    return {
        f"{system} x{c}": {
            k: ratio(rows[f"{system} x{c}"][k], rows[f"raw redis-py x{c}"][k]) for k in keys
        }
        for system in REDIS_SYSTEMS[:2]
        for c in CONSUMERS
    }


def print_ratios(rows: dict[str, dict[str, float]]) -> None:
    for name, r in ratios(rows).items():
        print(
            f"{name} / raw redis-py: publish {r['publish']:.2f}x, e2e {r['e2e']:.2f}x, "
            f"CPU per event {r['cpu_us_per_event']:.2f}x"
        )


if __name__ == "__main__":
    main()
