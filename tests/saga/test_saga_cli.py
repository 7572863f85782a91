"""``keel sagas`` as a real process on a SQLite file a coordinator writes."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

import keel
from keel.resilience import RetrySettings
from keel.saga import Coordinator, Outcome, Saga, SagaContext, Step
from tests.saga._helpers import Log

KEEL = [sys.executable, "-m", "keel.cli"]
ENV = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
pytestmark = pytest.mark.slow


async def keel_cmd(url: str, *args: str) -> tuple[int, str, str]:
    """Run ``keel --store URL args...``: exit code, stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(
        *KEEL,
        "--store",
        url,
        *args,
        env=ENV,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_ls_show_retry_abort(tmp_path: Path) -> None:
    """ls filters by status, show prints JSON, retry revives a FAILED saga, errors are one line."""
    url = f"sqlite:///{tmp_path / 'sagas.db'}"
    broken = [True]

    async def refund(ctx: SagaContext) -> None:
        if broken[0]:
            raise RuntimeError("payments down")

    fast = RetrySettings(max_attempts=2, base_delay_s=0.001, max_delay_s=0.01)
    saga = Saga(
        "order",
        [
            Step("charge", action=Log().ok(), compensate=refund, compensate_retry=fast),
            Step("ship", action=Log().fail()),
        ],
    )
    async with keel.connect(url) as store, Coordinator(store, [saga], ttl_s=5) as coord:
        saga_id = await coord.start("order", {"n": 1})
        assert await coord.wait(saga_id, timeout=20) is Outcome.FAILED

        code, out, _ = await keel_cmd(url, "sagas", "ls", "--status", "failed")
        assert code == 0 and saga_id in out and "failed" in out
        code, out, _ = await keel_cmd(url, "sagas", "--status", "committed")
        assert code == 0 and saga_id not in out
        code, out, _ = await keel_cmd(url, "sagas", "show", saga_id)
        assert code == 0 and json.loads(out)["status"] == "failed"
        code, out, _ = await keel_cmd(url, "sagas", "ls", "-o", "json")
        assert code == 0 and [r["saga_id"] for r in json.loads(out)] == [saga_id]
        code, out, _ = await keel_cmd(url, "sagas", "show", saga_id, "-o", "table")
        assert code == 0 and "payments down" in out and "charge" in out

        broken[0] = False
        code, out, err = await keel_cmd(url, "sagas", "retry", saga_id)
        assert code == 0, err
        assert await coord.wait(saga_id, timeout=20) is Outcome.COMPENSATED

        code, _, err = await keel_cmd(url, "sagas", "abort", saga_id)
        assert code == 2 and "has ended" in err and len(err.strip().splitlines()) == 1
        code, _, err = await keel_cmd(url, "sagas", "show", "order/nope")
        assert code == 1 and "no saga" in err
        code, _, err = await keel_cmd(url, "sagas", "show", "not-an-id")
        assert code == 2 and "is not valid" in err
        code, _, err = await keel_cmd(url, "sagas", "ls", "--status", "bogus")
        assert code == 2 and "unknown status" in err


async def test_abort_a_running_saga_from_the_cli(tmp_path: Path) -> None:
    """keel sagas abort makes a running saga compensate."""
    url = f"sqlite:///{tmp_path / 'sagas.db'}"
    started = asyncio.Event()
    gate = asyncio.Event()
    log = Log()

    async def hold(ctx: SagaContext) -> None:
        started.set()
        await gate.wait()

    saga = Saga(
        "order",
        [
            Step("one", action=log.ok(), compensate=log.ok()),
            Step("two", action=hold),
            Step("three", action=log.ok()),
        ],
    )
    async with keel.connect(url) as store, Coordinator(store, [saga], ttl_s=5) as coord:
        saga_id = await coord.start("order")
        async with asyncio.timeout(20):
            await started.wait()
        code, out, err = await keel_cmd(url, "sagas", "abort", saga_id)
        assert code == 0 and "abort asked" in out, err
        gate.set()
        assert await coord.wait(saga_id, timeout=20) is Outcome.COMPENSATED
    assert ("one", "compensate") in log.calls and ("three", "action") not in log.calls
