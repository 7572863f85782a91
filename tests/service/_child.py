"""A Service in a child process: ``python -m tests.service._child NAME STORE_URL [PORT]``.

Prints ``READY <port> <instance-id>`` once registered and ``STOPPED`` when
serve() returned. ``KEEL_SERVICE_*`` variables tune it (``KEEL_SERVICE_WORKERS=2``
serves ``tests.service._apps:app`` from two worker processes); a
``READY_FILE`` variable adds a readiness check that passes once that file exists.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from keel.service import Service
from tests.service._apps import make_app


async def main(name: str, url: str, port: int) -> None:
    checks = {}
    ready_file = os.environ.get("READY_FILE")
    if ready_file:
        checks["ready-file"] = lambda: Path(ready_file).exists()
    if os.environ.get("KEEL_SERVICE_WORKERS", "1") != "1":
        service = Service(name, "tests.service._apps:app", store=url, port=port)
    else:
        service = Service(name, make_app(name), store=url, port=port, checks=checks)

    async def announce() -> None:
        await service.ready.wait()
        print("READY", service.port, service.instance_id, flush=True)

    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(announce())
        await service.serve()
    print("STOPPED", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 0))
