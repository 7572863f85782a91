"""Shared fixtures: real engines on loopback and a ``store`` over every backend."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import keel
from keel.store import Store
from keel.testing import EtcdCluster, PostgresServer, PrometheusServer, RedisCluster, RedisServer
from tests._procs import Children

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

BACKENDS = ("memory", "sqlite", "etcd")


@pytest.fixture(scope="session")
def etcd_cluster() -> Iterator[EtcdCluster]:
    """One real etcd member for the whole run (tests isolate by root prefix)."""
    with EtcdCluster(1) as cluster:
        yield cluster


@pytest.fixture
async def children() -> AsyncIterator[Children]:
    """Child processes of one test, killed and reaped at teardown."""
    spawned = Children()
    try:
        yield spawned
    finally:
        await spawned.close()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server for the whole run."""
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """One real 3-master Redis Cluster for the whole run."""
    with RedisCluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the whole run (tests isolate by table or database)."""
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="session")
def prometheus_server() -> Iterator[PrometheusServer]:
    """One real Prometheus for the whole run (tests point it at their targets)."""
    with PrometheusServer() as server:
        yield server


def make_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store URL for ``backend`` isolated to one test."""
    if backend == "memory":
        return "memory://"
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'keel.db'}"
    cluster: EtcdCluster = request.getfixturevalue("etcd_cluster")
    return f"{cluster.url}?root=/t-{uuid.uuid4().hex[:12]}/"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The name of the backend under test."""
    name: str = request.param
    return name


@pytest.fixture
def store_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL for a store of ``backend`` that only this test uses."""
    return make_url(backend, request, tmp_path)


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    """An open store of each backend, empty under its root."""
    async with keel.connect(store_url) as opened:
        yield opened


@pytest.fixture
def traced() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    """An SDK provider keel records its spans on (installed for keel), spans kept in memory."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from keel.observe.spans import use_tracer_provider

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    use_tracer_provider(provider)
    try:
        yield provider, exporter
    finally:
        use_tracer_provider(None)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests that run on etcd so `-m "not etcd"` can leave them out."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("backend") == "etcd":
            item.add_marker(pytest.mark.etcd)
