"""keel.http.Client against real in-process services: balancing, retries, deadlines, traces."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import Counter
from collections.abc import AsyncIterator

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

import keel
from keel.balance import RoundRobin
from keel.errors import DeadlineExceededError, NoInstanceError, ValidationError
from keel.http import Client, ClientSettings
from keel.observe import HttpMetrics
from keel.service import Service, ServiceSettings
from keel.store import Store
from tests.service._apps import make_app

FAST = ServiceSettings(drain_delay_s=0.05, grace_s=1.0)


@pytest.fixture
async def mem() -> AsyncIterator[Store]:
    """A memory store shared by the services and the client."""
    async with keel.connect("memory://") as store:
        yield store


def new_service(
    store: Store,
    name: str,
    client: Client | None = None,
    provider: TracerProvider | None = None,
    port: int = 0,
) -> Service:
    registry = CollectorRegistry()
    return Service(
        name,
        make_app(name, client),
        store=store,
        settings=FAST,
        metrics=HttpMetrics(registry),
        registry=registry,
        tracer_provider=provider,
        port=port,
    )


class _StateListener:
    """Records breaker state changes (the resilience metrics hook)."""

    def __init__(self, states: list[tuple[str, str]]) -> None:
        self.states = states

    def on_call(self, policy: str, name: str, outcome: str) -> None:
        """Ignored."""

    def on_rejected(self, policy: str, name: str, reason: str) -> None:
        """Ignored."""

    def on_state_change(self, policy: str, name: str, state: str) -> None:
        """Record it."""
        self.states.append((name, state))

    def on_wait(self, policy: str, name: str, seconds: float) -> None:
        """Ignored."""


def new_client(store: Store, **kwargs: object) -> Client:
    return Client(store, metrics=HttpMetrics(CollectorRegistry()), **kwargs)  # type: ignore[arg-type]


async def test_balances_over_instances_and_passes_plain_hosts(mem: Store) -> None:
    """Concurrent calls by name spread over both instances; a URL with a port passes through."""
    async with contextlib.AsyncExitStack() as stack:
        a = await stack.enter_async_context(new_service(mem, "echo"))
        b = await stack.enter_async_context(new_service(mem, "echo", port=0))
        client = await stack.enter_async_context(new_client(mem))
        seen: Counter[int] = Counter()

        async def loop() -> None:
            for _ in range(10):
                answer = await client.get("http://echo/echo")
                assert answer.status_code == 200
                seen[answer.request.url.port or 0] += 1

        async with asyncio.TaskGroup() as tasks:
            for _ in range(6):
                tasks.create_task(loop())
        assert set(seen) == {a.port, b.port} and min(seen.values()) >= 5
        plain = await client.get(f"http://127.0.0.1:{a.port}/healthz")
        assert plain.text == "ok\n"
        stats = client.statistics()
        assert (stats.calls, stats.passthrough) == (60, 1)


async def test_unknown_service_has_no_instance(mem: Store) -> None:
    """A name with no instance raises NoInstanceError naming the service."""
    async with new_client(mem) as client:
        with pytest.raises(NoInstanceError, match="nothing"):
            await client.get("http://nothing/x")


async def test_dead_instance_retried_elsewhere_breaker_opens_ejection_returns(mem: Store) -> None:
    """GETs to a dead instance go to the live one; its breaker opens; it returns when back."""
    settings = ClientSettings(
        retry=keel.resilience.RetrySettings(max_attempts=3, base_delay_s=0.001, max_delay_s=0.01),
        budget=keel.resilience.RetryBudgetSettings(ratio=1.0, min_retries_per_s=100),
        breaker=keel.resilience.BreakerSettings(
            window_size=4, minimum_calls=2, open_duration_s=0.3, half_open_max_calls=1
        ),
        outlier=keel.balance.OutlierSettings(
            consecutive_failures=2, base_ejection_s=0.3, max_ejection_s=0.3, max_ejection_percent=50
        ),
    )
    async with contextlib.AsyncExitStack() as stack:
        live = await stack.enter_async_context(new_service(mem, "echo"))
        dead = new_service(mem, "echo")
        await dead.__aenter__()
        port = dead.port
        states: list[tuple[str, str]] = []
        listener = _StateListener(states)
        client = await stack.enter_async_context(
            new_client(mem, settings=settings, balancer=RoundRobin, listener=listener)
        )
        # Kill the server but keep its registration: a crashed process before its TTL.
        assert dead._server is not None
        dead._server.should_exit = True
        assert dead._serving is not None
        await dead._serving
        for _ in range(40):
            answer = await client.get("http://echo/echo")
            assert answer.status_code == 200 and answer.request.url.port == live.port
        assert client.statistics().retries >= 1
        assert (f"http:echo/{dead.instance_id}", "open") in states
        # The instance comes back on the same port: after the ejection it gets traffic again.
        back = new_service(mem, "echo", port=port)
        await stack.enter_async_context(back)
        ports: Counter[int] = Counter()
        async with asyncio.timeout(10):
            while ports[port] < 3:
                await asyncio.sleep(0.05)
                ports[(await client.get("http://echo/echo")).request.url.port or 0] += 1
        assert dead.registration is not None
        await dead.registration.deregister()


async def test_post_is_not_retried_once_sent(mem: Store) -> None:
    """A POST whose connection drops after sending fails instead of running twice."""

    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)  # the request arrived; hang up without answering
        writer.close()

    server = await asyncio.start_server(drop, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    registry = keel.registry.Registry(mem)
    async with (
        server,
        registry,
        registry.register(keel.registry.Instance(service="pay", address="127.0.0.1", port=port)),
        new_client(mem) as client,
    ):
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post("http://pay/post", json={"x": 1})
        assert client.statistics().retries == 0
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get("http://pay/echo")
        assert client.statistics().retries == 2  # idempotent: retried, same failure


async def test_deadline_shrinks_across_two_hops_and_slow_hop_fails(mem: Store) -> None:
    """front→back: each hop sees less time left; a slow back end yields DeadlineExceeded."""
    async with contextlib.AsyncExitStack() as stack:
        inner = await stack.enter_async_context(new_client(mem))
        await stack.enter_async_context(new_service(mem, "back"))
        await stack.enter_async_context(new_service(mem, "front", inner))
        client = await stack.enter_async_context(
            new_client(mem, settings=ClientSettings(timeout_s=2.0))
        )
        answer = (await client.get("http://front/call?to=back")).json()
        first, second = float(answer["deadline"]), float(answer["downstream"]["deadline"])
        assert 0 < second < first <= 2.0
        slow = new_client(mem, settings=ClientSettings(timeout_s=0.5))
        async with slow:
            with pytest.raises(DeadlineExceededError):
                await slow.get("http://front/call?to=back&path=/slow%3Fs%3D5")


async def test_trace_context_crosses_two_hops(mem: Store) -> None:
    """One trace: client span → front server span → front client span → back server span."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with contextlib.AsyncExitStack() as stack:
        inner = await stack.enter_async_context(new_client(mem, tracer_provider=provider))
        await stack.enter_async_context(new_service(mem, "back", provider=provider))
        await stack.enter_async_context(new_service(mem, "front", inner, provider=provider))
        client = await stack.enter_async_context(new_client(mem, tracer_provider=provider))
        answer = await client.get("http://front/call?to=back")
        assert answer.status_code == 200
    spans = exporter.get_finished_spans()
    assert len(spans) == 4
    assert len({s.context.trace_id for s in spans}) == 1
    by_name = {(s.kind.name, s.attributes["keel.service"]): s for s in spans}
    chain = [
        by_name[("CLIENT", "front")],
        by_name[("SERVER", "front")],
        by_name[("CLIENT", "back")],
        by_name[("SERVER", "back")],
    ]
    for parent, child in itertools.pairwise(chain):
        assert child.parent is not None and child.parent.span_id == parent.context.span_id


def test_client_needs_exactly_one_source() -> None:
    """Client() without a store or discovery is refused with the fix."""
    with pytest.raises(ValidationError, match="store"):
        Client()
