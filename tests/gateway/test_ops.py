"""Operations: probes, registration, metrics, access log fields, request ids, spans, drain."""

from __future__ import annotations

import asyncio
import io
import json
import signal
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

import keel
from keel.gateway import AccessLog, GatewayMetrics
from keel.gateway._logs import AccessRecord
from keel.store import Store
from keel.testing import free_port
from tests._procs import Children
from tests.gateway._gw import gateway, publish
from tests.gateway._upstream_app import start_child, upstream

DOC: dict[str, Any] = {
    "routes": [
        {"id": "users", "match": {"path": "/users"}, "forward": {"service": "users"}},
        {
            "id": "limited",
            "match": {"path": "/limited"},
            "respond": {"body": "ok"},
            "limits": {"rate": {"requests": 1, "per_s": 60, "by": "client"}},
        },
    ]
}


@pytest.fixture
async def mem() -> AsyncIterator[Store]:
    """A memory store."""
    async with keel.connect("memory://") as store:
        yield store


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def test_probes_metrics_and_registration(mem: Store) -> None:
    """Probes answer, the gateway is a registered service, and its series are exposed."""
    await publish(mem, DOC)
    async with (
        upstream(mem, "users"),
        gateway(mem) as gw,
        httpx.AsyncClient(base_url=gw.url) as http,
    ):
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/readyz")).json() == {"ready": True, "failing": []}
        kvs, _ = await mem.range("services/gateway/")
        assert len(kvs) == 1
        for _ in range(3):
            assert (await http.get("/users")).status_code == 200
        assert (await http.get("/limited")).status_code == 200
        limited = await http.get("/limited")
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert limited.json()["error"] == "limited"
        await http.get("/missing")
        samples = _samples((await http.get("/metrics")).text)
    assert samples[("keel_gateway_requests_total", (("route", "users"), ("status", "200")))] == 3
    assert samples[("keel_gateway_request_duration_seconds_count", (("route", "users"),))] == 3
    assert (
        samples[
            (
                "keel_gateway_upstream_requests_total",
                (("route", "users"), ("status", "200"), ("upstream", "users")),
            )
        ]
        == 3
    )
    assert (
        samples[("keel_gateway_limited_total", (("reason", "client"), ("route", "limited")))] == 1
    )
    assert samples[("keel_gateway_errors_total", (("kind", "not_found"), ("route", "-")))] == 1
    assert samples[("keel_gateway_routes", ())] == 2
    assert samples[("keel_gateway_config_version", ())] == 1
    assert (
        "keel_gateway_upstream_retries_total",
        (("route", "users"), ("upstream", "users")),
    ) in samples


async def test_access_log_fields_and_request_ids(mem: Store) -> None:
    """One access line per request with the fields operators filter on; ids kept or made."""
    await publish(mem, DOC)
    async with (
        upstream(mem, "users"),
        gateway(mem) as gw,
        httpx.AsyncClient(base_url=gw.url) as http,
    ):
        with capture_logs() as logs:
            mine = await http.get("/users?token=secret", headers={"x-request-id": "trace-me"})
            made = await http.get("/missing")
    lines = [line for line in logs if line["event"] == "request"]
    assert len(lines) == 2
    first, second = lines
    assert mine.headers["x-request-id"] == "trace-me" and first["request_id"] == "trace-me"
    assert {k: first[k] for k in ("route", "method", "path", "status", "upstream", "client")} == {
        "route": "users",
        "method": "GET",
        "path": "/users",
        "status": 200,
        "upstream": "users",
        "client": "127.0.0.1",
    }
    assert first["bytes_out"] == len(mine.content) and first["duration_ms"] > 0
    assert "consumer" in first and "bytes_in" in first
    assert "secret" not in str(first)
    assert second["request_id"] == made.headers["x-request-id"] and second["reason"] == "not_found"


def test_access_log_stream_lines() -> None:
    """With a stream, each access line is one JSON object with the log's usual fields."""
    out = io.StringIO()
    log = AccessLog(stream=out, service="edge")
    record = AccessRecord("r-1", "POST", "/x")
    record.route, record.status, record.reason = "x", 429, "limited"
    log.write(record, 0.0015)
    line = json.loads(out.getvalue())
    assert line["event"] == "request" and line["service"] == "edge" and line["level"] == "info"
    assert (line["request_id"], line["status"], line["reason"]) == ("r-1", 429, "limited")
    assert line["duration_ms"] == 1.5 and line["timestamp"].endswith("Z")
    AccessLog(enabled=False, stream=out).write(record, 0.1)
    assert len(out.getvalue().splitlines()) == 1


async def test_server_span_names_the_route(mem: Store) -> None:
    """With a tracer provider, each request's server span carries the route id."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    await publish(mem, DOC)
    async with (
        upstream(mem, "users"),
        gateway(mem, tracer_provider=provider) as gw,
        httpx.AsyncClient(base_url=gw.url) as http,
    ):
        await http.get("/users")
    spans = [
        s for s in exporter.get_finished_spans() if (s.attributes or {}).get("keel.gateway.route")
    ]
    assert [s.name for s in spans] == ["GET users"]


async def test_cli_gateway_drains_on_sigterm(tmp_path: Any, children: Children) -> None:
    """``keel gateway`` in its own process: serves, and on SIGTERM finishes an in-flight request."""
    url = f"sqlite:///{tmp_path / 'keel.db'}"
    async with keel.connect(url) as store:
        await publish(
            store,
            {"routes": [{"id": "all", "match": {"path": "/"}, "forward": {"service": "users"}}]},
        )
    await start_child(children, "users", url)
    port = free_port()
    env = {"KEEL_SERVICE_DRAIN_DELAY_S": "0.2"}
    gw = await children.start("keel.cli", "--store", url, "gateway", "--port", port, env=env)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
        async with asyncio.timeout(30):
            while True:
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        slow = asyncio.ensure_future(http.get("/slow?s=1"))
        await asyncio.sleep(0.3)
        gw.signal(signal.SIGTERM)
        answer = await slow
        assert answer.status_code == 200 and answer.json()["path"] == "/slow"
        assert await gw.wait(20) == 0
    assert gw.proc.stdout is not None
    lines = [json.loads(line) for line in (await gw.proc.stdout.read()).splitlines()]
    slow_line = next(line for line in lines if line["path"] == "/slow")
    assert slow_line["route"] == "all" and slow_line["status"] == 200
    assert slow_line["logger"] == "keel.gateway.access" and slow_line["service"] == "gateway"


def test_metric_labels_are_bounded() -> None:
    """Past max_routes route labels fold into 'other'; breaker series are capped too."""
    metrics = GatewayMetrics(CollectorRegistry(), max_routes=2, max_instances=1)
    assert metrics.route("a") is metrics.route("a")
    metrics.route("b")
    assert metrics.route("c") is metrics.route("d") is metrics.route("other")
    assert metrics.route("-") is not metrics.route("other")  # unmatched requests keep their label
    metrics.breaker_state("users", "i1", "open")
    metrics.breaker_state("users", "i2", "half_open")
    samples = _samples(generate_latest(metrics.registry).decode())
    assert samples[("keel_gateway_breaker_state", (("instance", "i1"), ("upstream", "users")))] == 2
    assert (
        samples[("keel_gateway_breaker_state", (("instance", "other"), ("upstream", "users")))] == 1
    )
    metrics.forget_instance("users", "i1")
    assert "i1" not in generate_latest(metrics.registry).decode()
