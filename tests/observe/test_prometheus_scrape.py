"""A real Prometheus scrapes a keel service and a scheduler worker (real processes).

Every series a dashboard panel or a rule reads must be in what Prometheus
collected: no panel queries a series nobody exports. The service runs on
etcd (with a dead first endpoint, so the endpoint and failover series are
live), the worker on sqlite (group commits), so both engines' series are seen.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest

from keel.testing import EtcdCluster, PrometheusServer, free_port
from tests._procs import Children
from tests.observe._promql import used_series

pytestmark = pytest.mark.slow
DOCS = Path(__file__).resolve().parents[2] / "docs"


def scraped_names(prometheus: PrometheusServer) -> set[str]:
    """The keel metric names Prometheus holds now."""
    data = prometheus.query('count by (__name__) ({__name__=~"keel_.+"})')
    return {row["metric"]["__name__"] for row in data["result"]}


async def test_every_series_the_dashboards_and_rules_read_is_scraped(
    prometheus_server: PrometheusServer,
    etcd_cluster: EtcdCluster,
    children: Children,
    tmp_path: Path,
) -> None:
    """Scrape both processes; the PromQL of dashboards and rules finds each series it names."""
    live = etcd_cluster.endpoints[0]
    etcd = f"etcd://127.0.0.1:{free_port()},{live}?root=/scraped-{time.time_ns()}/"
    svc = await children.start("tests.observe._scraped", "service", etcd)
    worker = await children.start(
        "tests.observe._scraped", "worker", f"sqlite:///{tmp_path / 'jobs.db'}"
    )
    (svc_port,) = await svc.expect("READY", timeout_s=60)
    (worker_port,) = await worker.expect("READY", timeout_s=60)
    targets = [f"127.0.0.1:{svc_port}", f"127.0.0.1:{worker_port}"]
    prometheus_server.set_targets(targets)
    wanted = used_series()
    assert len(wanted) > 30
    deadline = time.monotonic() + 30
    missing = wanted
    while time.monotonic() < deadline:
        up = prometheus_server.query('up{job="test"}')["result"]
        missing = wanted - scraped_names(prometheus_server)
        if not missing and len(up) == 2 and all(r["value"][1] == "1" for r in up):
            break
        await asyncio.sleep(0.5)
    assert not missing, f"dashboards or rules read series nobody exports: {sorted(missing)}"
    docs = "".join(p.read_text() for p in DOCS.glob("*.md"))
    undocumented = {
        name
        for name in scraped_names(prometheus_server)
        if re.sub(r"_(bucket|count|sum|created)$", "", name) not in docs
    }
    assert not undocumented, f"series missing from docs/observability.md: {sorted(undocumented)}"
