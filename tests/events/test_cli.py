"""``keel events ...`` as a real process, on a SQLite store and on Redis."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from pathlib import Path

import pytest

import keel.events
from keel.resilience import RetrySettings
from tests.events._helpers import FAST, settled

KEEL = [sys.executable, "-m", "keel.cli"]
ENV = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
pytestmark = pytest.mark.slow


async def keel_cmd(*args: str) -> tuple[int, str, str]:
    """Run ``keel args...``: exit code, stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(
        *KEEL, *args, env=ENV, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.parametrize("engine", ["sqlite", "redis"])
async def test_events_commands(engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """publish, topics, lag, tail, dead and replay work; bad input exits 2 with one line."""
    if engine == "redis":
        server = request.getfixturevalue("redis_server")
        url = f"{server.url}?prefix=t-{uuid.uuid4().hex[:10]}:"
        where = ["events", "--events", url]
    else:
        url = f"sqlite:///{tmp_path / 'keel.db'}"
        where = ["--store", url, "events"]
    bus = await keel.events.connect(url)
    try:
        quick = RetrySettings(base_delay_s=0.01, max_delay_s=0.01)
        async with bus.subscribe(
            "orders", group="billing", max_attempts=1, retry=quick, **FAST
        ) as sub:
            await settled(sub)
            code, out, _ = await keel_cmd(*where, "publish", "orders", '{"id": 7}', "--key", "o7")
            assert code == 0
            event_id = out.strip()
            async with asyncio.timeout(20):
                event = await sub.next()
                await event.nack(RuntimeError("card declined"))
        assert event.id == event_id and event.payload == {"id": 7}

        code, out, _ = await keel_cmd(*where, "topics", "-o", "json")
        assert code == 0
        assert {"topic": "orders", "partitions": 4, "groups": ["billing"]} in json.loads(out)
        code, out, _ = await keel_cmd(*where, "lag", "-o", "json")
        assert code == 0
        (billing,) = [r for r in json.loads(out) if r["topic"] == "orders"]
        assert (billing["group"], billing["pending"], billing["undelivered"]) == ("billing", 0, 0)
        code, out, _ = await keel_cmd(*where, "tail", "orders", "-o", "json")
        assert code == 0 and json.loads(out)[0]["payload"] == {"id": 7}
        code, out, _ = await keel_cmd(*where, "dead", "orders", "-o", "json")
        assert code == 0
        (dead,) = json.loads(out)
        assert dead["headers"]["keel-dead-error"] == "RuntimeError: card declined"
        code, out, _ = await keel_cmd(*where, "dead", "orders")
        assert code == 0 and "card declined" in out
        code, _, _ = await keel_cmd(
            *where, "replay", "orders", "--group", "billing", "--from-id", event_id
        )
        assert code == 0
        assert (await bus.lag("orders", "billing"))[0].undelivered == 1
        code, _, _ = await keel_cmd(
            *where, "replay", "orders", "-g", "billing", "--from-time", "2020-01-01T00:00:00"
        )
        assert code == 0

        if engine == "redis":
            return  # the bad-input paths do not depend on the engine: checked once, on sqlite
        for args, exit_code in (
            (["publish", "orders", "{not json"], 2),
            (["publish", "bad topic", "{}"], 2),
            (["replay", "orders", "--group", "billing"], 2),
            (["replay", "orders", "-g", "billing", "--from-time", "yesterday"], 2),
            (["replay", "orders", "-g", "nobody", "--from-time", "2020-01-01"], 1),
            (["groups", "missing"], 1),
        ):
            code, out, err = await keel_cmd(*where, *args)
            assert code == exit_code, (args, err)
            assert len(err.strip().splitlines()) == 1 and err.startswith("keel: error:"), err
    finally:
        await bus.aclose()
