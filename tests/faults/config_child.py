"""A child process for the config fault tests; reports over stdout.

python -m tests.faults.config_child publish URL ROUNDS
python -m tests.faults.config_child bind URL NAME SNAPSHOT_DIR
"""

from __future__ import annotations

import asyncio
import json
import sys

from pydantic import BaseModel

import keel
from keel.config import ConfigCenter, Source
from keel.observe import ConfigMetrics


class Orders(BaseModel):
    """The model the binding processes use."""

    timeout_s: float = 1.0
    retries: int = 3


def say(*parts: object) -> None:
    print(*parts, flush=True)


async def publish(url: str, rounds: int) -> None:
    """Publish to five configs in turn, printing each acknowledged version."""
    async with keel.connect(url) as store:
        center = ConfigCenter(store, retention=5)
        for i in range(rounds):
            name = f"c{i % 5}.yaml"
            doc = await center.publish(name, f"timeout_s: {i}\n")
            say("ACK", name, doc.version)


async def bind(url: str, name: str, snapshot_dir: str) -> None:
    """Bind and print every value and every refused version until stdin closes."""
    store = await keel.connect(url)
    center = ConfigCenter(store)
    live = await center.bind(name, Orders, snapshot_dir=snapshot_dir, metrics=ConfigMetrics())

    def show(_: object = None, __: object = None) -> None:
        say(
            "VALUE",
            json.dumps(live.value.model_dump(), separators=(",", ":")),
            live.source.version,
            int(live.source.from_snapshot),
        )

    def refused(exc: Exception, source: Source) -> None:
        say("INVALID", source.version)

    live.on_change(show)
    live.on_invalid(refused)
    show()
    await asyncio.to_thread(sys.stdin.readline)
    await live.close()
    await store.close()


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[0] == "publish":
        asyncio.run(publish(args[1], int(args[2])))
    else:
        asyncio.run(bind(args[1], args[2], args[3]))
