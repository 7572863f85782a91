"""Resilience, balancer, probe, scheduler and etcd endpoint series; store and lock spans."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY, CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import keel
from keel.backends.memory import MemoryStore
from keel.balance import OutlierEjection, OutlierSettings, RoundRobin
from keel.coord import Lock, Session
from keel.observe import HttpMetrics, PrometheusListener
from keel.observe._capability_metrics import CapabilityMetrics
from keel.observe.spans import fire_context, use_tracer_provider
from keel.registry import HealthCheck, Instance
from keel.registry._health import _observed_probe
from keel.resilience import (
    BreakerSettings,
    CircuitBreaker,
    Retry,
    RetryBudget,
    RetryBudgetSettings,
    RetrySettings,
)
from keel.schedule import JobContext, Scheduler
from keel.service import KeelMiddleware, Probe
from keel.store import Store
from keel.testing import EtcdCluster, free_port
from tests._util import eventually


def value(metric: str, **labels: str) -> float:
    """The current value of a sample (0 when absent)."""
    return REGISTRY.get_sample_value(metric, labels) or 0.0


def test_ten_thousand_jobs_stay_a_bounded_number_of_series() -> None:
    """Job names past the first 100 are counted as job="other"."""
    metrics = CapabilityMetrics(CollectorRegistry())
    for i in range(10_000):
        metrics.run_finished(f"job-{i}", "default", "succeeded", 0.01, 0.02)
    samples = [
        s
        for family in metrics.registry.collect()
        if family.name == "keel_schedule_runs"
        for s in family.samples
        if s.name == "keel_schedule_runs_total"
    ]
    assert len(samples) == 101
    other = next(s for s in samples if s.labels["job"] == "other")
    assert other.value == 10_000 - 100


async def test_policies_without_a_listener_report_state_rejections_and_retries() -> None:
    """A breaker trips and refuses; a retry retries and runs out of budget: all in the series."""
    name = "metrics-breaker"
    breaker = CircuitBreaker(
        BreakerSettings(minimum_calls=2, window_size=2, open_duration_s=60), name=name
    )

    async def boom() -> None:
        raise ValueError("down")

    for _ in range(2):
        with pytest.raises(ValueError):
            await breaker.call(boom)
    assert value("keel_resilience_state", policy="breaker", name=name) == 2.0
    assert (
        value("keel_resilience_transitions_total", policy="breaker", name=name, state="open") == 1
    )
    with pytest.raises(keel.errors.CircuitOpenError):
        await breaker.call(boom)
    assert (
        value("keel_resilience_rejections_total", policy="breaker", name=name, reason="open") == 1
    )

    def always(exc: BaseException) -> bool:
        return True

    settings = RetrySettings(max_attempts=3, base_delay_s=0.001, max_delay_s=0.001)
    labels = {"policy": "retry", "name": "metrics-retry"}
    with pytest.raises(ValueError):
        await Retry(settings, name="metrics-retry", retry_on=always).run(boom)
    assert value("keel_resilience_calls_total", **labels, outcome="retried") == 2
    assert value("keel_resilience_rejections_total", **labels, reason="gave_up") == 1
    broke = Retry(
        settings,
        name="metrics-retry",
        retry_on=always,
        budget=RetryBudget(RetryBudgetSettings(ratio=0.0, min_retries_per_s=0.0)),
    )
    with pytest.raises(ValueError):
        await broke.run(boom)
    assert value("keel_resilience_rejections_total", **labels, reason="budget") == 1


def test_balancer_picks_and_ejections_are_series() -> None:
    """Picks are read from live balancers at scrape time; ejections are counted."""

    class Host:
        def __init__(self, id: str) -> None:
            self.id, self.weight, self.zone = id, 100, ""

    hosts = [Host(str(i)) for i in range(10)]
    picks = value("keel_balancer_picks_total", balancer="RoundRobin")
    balancer = RoundRobin()
    for _ in range(7):
        balancer.pick(hosts)
    assert value("keel_balancer_picks_total", balancer="RoundRobin") == picks + 7
    ejections = value("keel_balancer_ejections_total", balancer="OutlierEjection")
    outlier = OutlierEjection(
        RoundRobin(), OutlierSettings(consecutive_failures=2, max_ejection_percent=50)
    )
    for _ in range(2):
        outlier.observe(hosts[0], 0.01, False)
    assert value("keel_balancer_ejections_total", balancer="OutlierEjection") == ejections + 1
    assert value("keel_balancer_ejected", balancer="OutlierEjection") >= 1


async def test_health_probes_are_counted_by_result() -> None:
    """A TCP probe of a listening port is healthy; of a closed one, unhealthy."""
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    check = HealthCheck(type="tcp", interval_s=1, timeout_s=1)
    up = Instance(service="probed", address="127.0.0.1", port=port, check=check)
    down = Instance(service="probed", address="127.0.0.1", port=free_port(), check=check)
    healthy = value("keel_health_probes_total", check="tcp", result="healthy")
    unhealthy = value("keel_health_probes_total", check="tcp", result="unhealthy")
    async with httpx.AsyncClient() as client:
        assert await _observed_probe(up, check, client) is None
        assert await _observed_probe(down, check, client) is not None
    server.close()
    assert value("keel_health_probes_total", check="tcp", result="healthy") == healthy + 1
    assert value("keel_health_probes_total", check="tcp", result="unhealthy") == unhealthy + 1
    assert value("keel_health_probe_duration_seconds_count", check="tcp") >= 2


async def test_sqlite_group_commits_are_measured(tmp_path: object) -> None:
    """Each sqlite commit observes its group size and commit time."""
    before = value("keel_store_commit_group_size_count", store="sqlite")
    async with keel.connect(f"sqlite:///{tmp_path}/commits.db") as store:
        await asyncio.gather(*(store.put(f"c/{i}", b"v") for i in range(20)))
    assert value("keel_store_commit_group_size_count", store="sqlite") > before
    assert value("keel_store_commit_group_size_sum", store="sqlite") >= 20


async def test_etcd_failover_and_endpoint_in_use(etcd_cluster: EtcdCluster) -> None:
    """A dead first endpoint: the connection moves on, counts the failover, names the member."""
    live = etcd_cluster.endpoints[0]
    dead = f"127.0.0.1:{free_port()}"
    failovers = value("keel_store_failovers_total", store="etcd")
    async with keel.connect(f"etcd://{dead},{live}?root=/metrics-failover/") as store:
        await store.put("failover", b"v")
    assert value("keel_store_failovers_total", store="etcd") >= failovers + 1
    assert value("keel_store_endpoint", store="etcd", endpoint=live) == 1


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """keel's spans recorded in memory for the test."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    use_tracer_provider(provider)
    try:
        yield exporter
    finally:
        use_tracer_provider(None)


async def test_request_trace_holds_lock_and_store_spans(
    store: Store, spans: InMemorySpanExporter
) -> None:
    """An HTTP request that takes a lock and writes: lock and store spans under the request."""
    from keel.observe.spans import _provider

    async with Session(store) as session:

        async def write(request: Request) -> PlainTextResponse:
            async with await Lock(session, "orders").acquire():
                await store.put("orders/1", b"paid")
            return PlainTextResponse("ok")

        app = KeelMiddleware(
            Starlette(routes=[Route("/write", write, methods=["POST"])]),
            service="traced",
            probe=Probe(),
            metrics=HttpMetrics(CollectorRegistry()),
            registry=CollectorRegistry(),
            tracer_provider=_provider,
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://traced") as http:
            assert (await http.post("/write")).status_code == 200
    finished = spans.get_finished_spans()
    request = next(s for s in finished if s.kind.name == "SERVER")
    trace_id = request.context.trace_id
    in_trace = [s for s in finished if s.context.trace_id == trace_id]
    by_id = {s.context.span_id: s for s in in_trace}
    acquire = next(s for s in in_trace if s.name == "lock acquire")
    assert acquire.parent is not None and acquire.parent.span_id == request.context.span_id
    put = next(
        s
        for s in in_trace
        if s.name == "store put" and dict(s.attributes or {}).get("keel.store.key") == "orders/1"
    )
    assert put.parent is not None and put.parent.span_id == request.context.span_id
    assert dict(put.attributes or {})["db.system.name"] == store.backend
    under_acquire = [
        s for s in in_trace if s.parent and s.parent.span_id == acquire.context.span_id
    ]
    assert any(s.name.startswith("store ") for s in under_acquire)
    hold = next(s for s in in_trace if s.name == "lock hold")
    assert hold.parent is not None
    assert by_id[hold.parent.span_id] in (request, acquire)


async def test_store_spans_only_inside_a_recording_span(spans: InMemorySpanExporter) -> None:
    """A store call outside any span records nothing (the parent decides)."""
    store = await MemoryStore().start()
    for i in range(40):
        await store.put(f"quiet/{i}", b"v")
    await store.close()
    assert not [s for s in spans.get_finished_spans() if s.name.startswith("store ")]


async def test_job_run_is_one_trace_linked_to_its_fire(
    store: Store, spans: InMemorySpanExporter
) -> None:
    """Each run is a root span whose store calls nest under it, linked to the planner's fire."""
    scheduler = Scheduler(store, ttl_s=5, group="traced")
    done = asyncio.Event()

    @scheduler.job("traced.job", interval_s=1)
    async def job(ctx: JobContext) -> None:
        await ctx.store.put("traced/out", b"x")
        done.set()

    task = asyncio.ensure_future(scheduler.run(handle_sigterm=False))
    try:
        async with asyncio.timeout(20):
            await done.wait()
        await eventually(lambda: any(s.name == "job run" for s in spans.get_finished_spans()), 10)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    finished = spans.get_finished_spans()
    run = next(s for s in finished if s.name == "job run")
    attributes = dict(run.attributes or {})
    assert run.parent is None and attributes["keel.job"] == "traced.job"
    assert attributes["keel.job.outcome"] == "SUCCEEDED"
    assert run.kind.name == "CONSUMER"
    put = next(
        s
        for s in finished
        if s.name == "store put" and dict(s.attributes or {}).get("keel.store.key") == "traced/out"
    )
    assert put.parent is not None and put.parent.span_id == run.context.span_id
    fire = fire_context("traced.job", float(attributes["keel.job.fire"]))  # type: ignore[arg-type]
    assert [link.context.trace_id for link in run.links] == [fire.trace_id]
    fires = [s for s in finished if s.name == "job fire" and s.context.trace_id == fire.trace_id]
    assert fires and dict(fires[0].attributes or {})["keel.job.group"] == "traced"


def test_per_instance_policy_names_are_capped() -> None:
    """Breakers named per instance: past max_names, further names share name="other"."""
    listener = PrometheusListener(CollectorRegistry(), max_names=10)
    for i in range(10_000):
        listener.on_state_change("breaker", f"http:orders/{i}", "open")
    states = [
        s
        for family in listener.registry.collect()
        if family.name == "keel_resilience_state"
        for s in family.samples
    ]
    assert len(states) == 11
    assert {s.labels["name"] for s in states} >= {"other"}
