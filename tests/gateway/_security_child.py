"""A gateway in a child process, for the security and limits end-to-end tests.

``python -m tests.gateway._security_child STORE_URL [--redis URL] [--config NAME]``
runs :class:`keel.gateway.Gateway` on a free port of 127.0.0.1, prints
``READY <port>`` once it serves, ``STOPPED`` after a clean drain on SIGTERM.

:func:`start_gateway` starts one and returns ``(child, base URL)``;
:func:`publish_routes` publishes a route document (YAML text of a dict).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from keel.config import ConfigCenter
from keel.gateway._gateway import Gateway
from keel.service import ServiceSettings
from keel.store import Store
from tests._procs import Child, Children


async def publish_routes(store: Store, document: dict[str, Any], name: str = "gateway.yaml") -> int:
    """Publish ``document`` as the route document; return its version."""
    # JSON is YAML: one dump serves both and keeps the test free of a YAML writer
    published = await ConfigCenter(store).publish(name, json.dumps(document))
    return published.version


async def start_gateway(
    children: Children, store_url: str, *, redis_url: str | None = None
) -> tuple[Child, str]:
    """A gateway child process; returns it and its ``http://127.0.0.1:port`` once ready."""
    args: list[object] = [store_url]
    if redis_url is not None:
        args += ["--redis", redis_url]
    child = await children.start("tests.gateway._security_child", *args)
    fields = await child.expect("READY", 60)
    return child, f"http://127.0.0.1:{fields[0]}"


async def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("store_url")
    parser.add_argument("--redis", default=None)
    parser.add_argument("--config", default="gateway.yaml")
    args = parser.parse_args()
    gateway = Gateway(
        args.store_url,
        config=args.config,
        port=0,
        redis_url=args.redis,
        access_log=False,
        settings=ServiceSettings(port=0, drain_delay_s=0.1, grace_s=3.0),
    )

    async def announce() -> None:
        for _ in range(6000):  # serve() creates the service first thing
            if gateway.service is not None:
                break
            await asyncio.sleep(0.01)
        assert gateway.service is not None
        await gateway.service.ready.wait()
        print("READY", gateway.port, flush=True)

    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(announce())
        await gateway.serve()
    print("STOPPED", flush=True)


if __name__ == "__main__":
    asyncio.run(_main())
