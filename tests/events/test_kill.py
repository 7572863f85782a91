"""10,000 events, 2 groups of 3 consumer processes, one consumer kill -9'd every few seconds."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import defaultdict
from pathlib import Path

import pytest

import keel.events
from keel.events import Bus, Message
from tests._procs import Child, Children

EVENTS = 10_000
KEYS = 100
GROUPS = ("billing", "email")
CONSUMERS = 3
KILL_EVERY_S = 2.5
PUBLISH_PACE_S = 0.25  # 200 events per pace: publishing spans ~12 s, so kills hit a live stream
DEADLINE_S = 100.0


def _read_logs(tmp_path: Path, group: str) -> list[tuple[int, str, int]]:
    """Every handling of ``group``: (time ns, key, seq), across all its consumers' logs."""
    lines = []
    for log in tmp_path.glob(f"{group}-*.log"):
        for line in log.read_text().splitlines():
            key, seq, ns = line.split()
            lines.append((int(ns), key, int(seq)))
    return sorted(lines)


def _check_group(lines: list[tuple[int, str, int]]) -> tuple[int, int]:
    """Assert every event handled and per-key order kept; return (handled, duplicates)."""
    seen: dict[str, set[int]] = defaultdict(set)
    for _, key, seq in lines:
        # order: when seq is handled, every earlier seq of its key was handled already
        assert seq == 0 or (seq - 1) in seen[key], f"{key}: {seq} before {seq - 1}"
        seen[key].add(seq)
    per_key = EVENTS // KEYS
    missing = [
        (k, s) for k in (f"k{i}" for i in range(KEYS)) for s in range(per_key) if s not in seen[k]
    ]
    assert not missing, f"{len(missing)} events never handled, e.g. {missing[:5]}"
    return len(lines), len(lines) - EVENTS


async def _start(children: Children, url: str, group: str, tmp_path: Path) -> Child:
    name = f"{group}-{uuid.uuid4().hex[:6]}"
    child = await children.start(
        "tests.events._consumer_child", url, group, name, tmp_path / f"{name}.log"
    )
    await child.expect("READY", timeout_s=60)
    return child


async def _done(bus: Bus, tmp_path: Path) -> bool:
    for group in GROUPS:
        if len({(k, s) for _, k, s in _read_logs(tmp_path, group)}) < EVENTS:
            return False
        stats = (await bus.lag("load", group))[0]
        if stats.pending or stats.undelivered:
            return False
    return True


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["sqlite", "redis"])
async def test_10000_events_survive_consumer_kills(
    engine: str, tmp_path: Path, children: Children, request: pytest.FixtureRequest
) -> None:
    """Every event is acked by each group at least once, in key order, with few duplicates.

    Events are published in batches of 200 over about 12 s while a consumer
    is kill -9'd every 2.5 s and replaced; its partitions come back
    after its member TTL (2 s). Duplicates (an event handled again because its
    consumer died before the ack) are counted and printed.
    """
    if engine == "redis":
        server = request.getfixturevalue("redis_server")
        url = f"{server.url}?prefix=t-{uuid.uuid4().hex[:10]}:"
    else:
        url = f"sqlite:///{tmp_path / 'keel.db'}"
    bus = await keel.events.connect(url, partitions=6)
    rng = random.Random(7)
    kills = 0
    try:
        await bus.ensure_topic("load")
        consumers = {
            group: [await _start(children, url, group, tmp_path) for _ in range(CONSUMERS)]
            for group in GROUPS
        }
        messages = [Message({"s": i // KEYS}, f"k{i % KEYS}") for i in range(EVENTS)]
        loop = asyncio.get_running_loop()
        began = next_kill = loop.time()
        published = 0
        async with asyncio.timeout(DEADLINE_S):
            while published < EVENTS or not await _done(bus, tmp_path):
                if published < EVENTS:
                    await bus.publish_many("load", messages[published : published + 200])
                    published += 200
                    await asyncio.sleep(PUBLISH_PACE_S)
                else:
                    await asyncio.sleep(0.5)
                if loop.time() >= next_kill and loop.time() - began < 30:
                    group = rng.choice(GROUPS)
                    victim = consumers[group].pop(rng.randrange(CONSUMERS))
                    victim.kill9()
                    await victim.wait()
                    kills += 1
                    consumers[group].append(await _start(children, url, group, tmp_path))
                    next_kill = loop.time() + KILL_EVERY_S
    except TimeoutError:
        for group in GROUPS:  # say where it stuck before failing
            handled = {(k, s) for _, k, s in _read_logs(tmp_path, group)}
            print(group, len(handled), "handled;", await bus.lag("load", group))
        raise
    finally:
        await bus.aclose()
    for group in GROUPS:
        handled, duplicates = _check_group(_read_logs(tmp_path, group))
        print(f"{engine} {group}: {handled} handled, {duplicates} duplicates, {kills} kills")
    assert kills >= 3
