"""PromQL analysis against a real Prometheus scraping a test service: a rising error rate
aborts the canary (every backend)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from keel.config import Analysis, CanaryController, ConfigCenter, GrayRule, PromQuery, Step
from keel.coord import Session
from keel.observe import ConfigMetrics
from keel.store import Store
from keel.testing import PrometheusServer, free_port
from tests._procs import ROOT
from tests.config._canary_util import canary_until

pytestmark = pytest.mark.slow

NAME = "orders.yaml"
RATE = "sum(rate(canary_errors_total[3s]))"


@pytest.fixture(scope="module")
def errors_service(prometheus_server: PrometheusServer) -> Iterator[subprocess.Popen[str]]:
    """The test service (a real process), scraped by the Prometheus of the session."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.config._errors_service", str(port)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "READY"
        prometheus_server.set_targets([f"127.0.0.1:{port}"])
        yield proc
    finally:
        proc.kill()
        proc.communicate(timeout=10)


def steer(service: subprocess.Popen[str], command: str) -> None:
    """Send ``rise`` or ``calm`` to the service."""
    assert service.stdin is not None
    service.stdin.write(command + "\n")
    service.stdin.flush()


async def rate_settles(prometheus: PrometheusServer, below: float) -> None:
    """Wait (bounded) until Prometheus has the counter and its rate is under ``below``."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        result = (await asyncio.to_thread(prometheus.query, RATE))["result"]
        if result and float(result[0]["value"][1]) < below:
            return
        await asyncio.sleep(0.3)
    raise AssertionError("the error rate did not settle")


async def test_rising_error_rate_aborts_the_canary(
    store: Store, prometheus_server: PrometheusServer, errors_service: subprocess.Popen[str]
) -> None:
    """While the rate is flat the canary holds its step; once it rises past the threshold the
    controller rolls back, with the PromQL value in the evidence."""
    steer(errors_service, "calm")
    await rate_settles(prometheus_server, 1)
    center = ConfigCenter(store)
    await center.publish(NAME, "timeout_s: 1\n")
    query = PromQuery(url=prometheus_server.url, query=RATE, max_value=5)
    plan = Analysis(
        steps=(Step(percent=10, duration_s=60), Step(percent=100)), interval_s=0.3, prometheus=query
    )
    async with (
        Session(store, ttl_s=5) as session,
        center.bind(
            NAME, client_id="c0", session=session, health=lambda: True, metrics=ConfigMetrics()
        ),
    ):
        controller = CanaryController(session, node="ctl", tick_s=0.1)
        runner = asyncio.ensure_future(controller.run())
        try:
            await center.publish_gray(NAME, "timeout_s: 2\n", GrayRule(ids=("c0",)), analysis=plan)
            await canary_until(center, NAME, lambda c: any(e.kind == "pass" for e in c.evaluations))
            steer(errors_service, "rise")
            canary = await canary_until(center, NAME, lambda c: c.status != "running")
        finally:
            steer(errors_service, "calm")
            runner.cancel()
            with pytest.raises(asyncio.CancelledError):
                await runner
    assert canary.status == "aborted"
    last = canary.decisions[-1]
    assert "PromQL value" in last.reasons[0] and last.evidence["prometheus"]["value"] > 5
    assert await center.gray(NAME) is None
