"""Large bodies stream through the proxy both ways in bounded memory (peak RSS measured)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests._procs import Children
from tests.gateway import _proxy_gateway
from tests.gateway._upstream_app import start_child

pytestmark = pytest.mark.slow

SIZE = 1024 * 1024 * 1024  # 1 GiB each way (about 1 MiB of peak RSS growth measured)
BOUND = 100 * 1024 * 1024  # the gateway's peak RSS may grow by less than this


def peak_rss(pid: int) -> int:
    """The process's peak resident set size so far (VmHWM), bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/<pid>/status")


async def chunks(total: int, size: int = 256 * 1024) -> AsyncIterator[bytes]:
    block = b"z" * size
    left = total
    while left > 0:
        part = block if left >= size else block[:left]
        left -= len(part)
        yield part


async def test_large_upload_and_download_in_bounded_memory(
    children: Children, tmp_path: Path
) -> None:
    """1 GiB up (length unknown: chunked) and 1 GiB down; the gateway's peak RSS grows < 100 MiB."""
    url = f"sqlite:///{tmp_path}/keel.db"
    await start_child(children, "files", url)
    gateway, port = await _proxy_gateway.start(children, url, "files", timeout_s=120)
    async with (
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client,
        asyncio.timeout(90),
    ):
        warm = await client.post("/warm", content=b"w" * 1024 * 1024)
        assert warm.json()["body_bytes"] == 1024 * 1024
        baseline = peak_rss(gateway.proc.pid)

        up = await client.post("/upload", content=chunks(SIZE))
        assert up.status_code == 200
        assert up.json()["body_bytes"] == SIZE

        received = 0
        async with client.stream("GET", f"/stream/{SIZE}") as down:
            assert down.status_code == 200
            async for part in down.aiter_raw():
                received += len(part)
        assert received == SIZE
        growth = peak_rss(gateway.proc.pid) - baseline
    assert growth < BOUND, f"gateway peak RSS grew by {growth / 2**20:.1f} MiB"
