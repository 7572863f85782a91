"""Service in process: probes, registration after readiness, metrics, deadlines, draining."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

import keel
from keel.errors import KeelError, ValidationError
from keel.observe import HttpMetrics
from keel.registry import decode_instance
from keel.service import Service, ServiceSettings, parse_deadline
from keel.service._asgi import KeelMiddleware, Probe
from keel.store import EventType, Store
from tests._util import eventually
from tests.service._apps import make_app

FAST = ServiceSettings(drain_delay_s=0.05, grace_s=2.0)


@pytest.fixture
async def mem() -> Store:
    """A memory store (the service logic is the same on every backend)."""
    async with keel.connect("memory://") as store:
        yield store


def service(store: Store, name: str = "echo", **kwargs: object) -> Service:
    registry = CollectorRegistry()
    return Service(
        name,
        make_app(name),
        store=store,
        settings=FAST,
        metrics=HttpMetrics(registry),
        registry=registry,
        **kwargs,  # type: ignore[arg-type]
    )


async def test_probes_and_app_routes(mem: Store) -> None:
    """/healthz and /readyz answer, other paths reach the app, the instance is registered."""
    async with service(mem) as svc, httpx.AsyncClient(base_url=svc.url) as http:
        assert (await http.get("/healthz")).text == "ok\n"
        ready = await http.get("/readyz")
        assert ready.status_code == 200 and ready.json() == {"ready": True, "failing": []}
        assert (await http.get("/echo")).json()["name"] == "echo"
        kvs, _ = await mem.range("services/echo/")
        instance = decode_instance(kvs[0].key, kvs[0].value)
        assert (instance.address, instance.port, instance.status) == ("127.0.0.1", svc.port, "UP")
        assert "serving" in repr(svc)
    assert (await mem.range("services/echo/"))[0] == []


async def test_registers_only_after_readiness(mem: Store) -> None:
    """A failing readiness check keeps the instance out of the registry until it passes."""
    ready = asyncio.Event()
    svc = service(mem, checks={"warm-cache": ready.is_set})
    async with asyncio.TaskGroup() as tasks:
        entering = tasks.create_task(svc.__aenter__())
        await eventually(lambda: bool(svc.port and svc.probe.started), 5)
        async with httpx.AsyncClient() as http:
            answer = await http.get(f"{svc.url}/readyz")
        assert answer.status_code == 503 and answer.json()["failing"] == ["warm-cache"]
        assert (await mem.range("services/echo/"))[0] == []
        ready.set()
        async with asyncio.timeout(5):
            await entering
    assert len((await mem.range("services/echo/"))[0]) == 1
    await svc.__aexit__(None, None, None)


async def test_shutdown_drains_then_deregisters_before_closing(mem: Store) -> None:
    """DRAINING first, the deletion next, and the in-flight request still completes."""
    events: list[tuple[EventType, str]] = []
    svc = service(mem)
    await svc.__aenter__()
    watch = mem.watch("services/echo/", prefix=True)

    async def follow() -> None:
        async for event in watch:
            status = (
                ""
                if event.type is EventType.DELETE
                else decode_instance(event.kv.key, event.kv.value).status
            )
            events.append((event.type, status))
            if event.type is EventType.DELETE:
                return

    async with httpx.AsyncClient() as http, asyncio.TaskGroup() as tasks:
        follower = tasks.create_task(follow())
        slow = tasks.create_task(http.get(f"{svc.url}/slow?s=0.5"))
        await asyncio.sleep(0.1)
        await svc.__aexit__(None, None, None)
        assert (await slow).status_code == 200
        async with asyncio.timeout(5):
            await follower
    assert events == [(EventType.PUT, "DRAINING"), (EventType.DELETE, "")]
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as http:
            await http.get(f"{svc.url}/healthz")


async def test_metrics_parse_and_carry_red_series(mem: Store) -> None:
    """/metrics parses with prometheus_client's parser and has the documented series."""
    async with service(mem) as svc, httpx.AsyncClient(base_url=svc.url) as http:
        for _ in range(3):
            await http.get("/echo")
        await http.get("/fail")
        text = (await http.get("/metrics")).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in (
        "keel_http_server_requests",
        "keel_http_server_request_duration_seconds",
        "keel_http_server_in_flight",
        "keel_http_client_requests",
        "keel_http_client_request_duration_seconds",
    ):
        assert name in families, name
    samples = {
        (s.labels["route"], s.labels["status"]): s.value
        for s in families["keel_http_server_requests"].samples
        if s.name.endswith("_total")
    }
    assert samples[("/echo", "200")] == 3
    assert samples[("/fail", "500")] == 1


async def test_metrics_from_an_exposition_hook_and_503_when_it_fails() -> None:
    """A worker's /metrics body comes from its supervisor; no answer is a 503, not a guess."""
    answers: list[bytes | Exception] = [b"# TYPE up gauge\nup 1.0\n", KeelError("no answer")]

    async def exposition() -> bytes:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    middleware = KeelMiddleware(
        make_app("hook"),
        service="hook",
        probe=Probe(),
        metrics=HttpMetrics(CollectorRegistry()),
        registry=CollectorRegistry(),
        exposition=exposition,
    )
    transport = httpx.ASGITransport(app=middleware)
    async with httpx.AsyncClient(transport=transport, base_url="http://hook") as http:
        first = await http.get("/metrics")
        assert first.status_code == 200 and first.text == "# TYPE up gauge\nup 1.0\n"
        second = await http.get("/metrics")
        assert second.status_code == 503 and "no answer" in second.text


async def test_deadline_header_bounds_the_handler(mem: Store) -> None:
    """A request whose keel-deadline passes gets 504 with keel-error: deadline-exceeded."""
    async with service(mem) as svc, httpx.AsyncClient(base_url=svc.url) as http:
        answer = await http.get("/slow?s=5", headers={"keel-deadline": "0.2"})
        assert answer.status_code == 504
        assert answer.headers["keel-error"] == "deadline-exceeded"
        quick = await http.get("/echo", headers={"keel-deadline": "1.5"})
        assert float(quick.json()["deadline"]) == 1.5


def test_parse_deadline_refuses_garbage() -> None:
    """Malformed deadline headers are ignored, not trusted."""
    assert parse_deadline(b"1.25") == 1.25
    assert parse_deadline(b"soon") is None
    assert parse_deadline(b"nan") is None
    assert parse_deadline(b"inf") is None


def test_bad_settings_name_the_fix() -> None:
    """Bad settings and names raise ValidationError naming the fix."""
    with pytest.raises(ValidationError, match="port"):
        ServiceSettings(port=70000)
    with pytest.raises(ValidationError, match="not a number"):
        ServiceSettings.from_env({"KEEL_SERVICE_GRACE_S": "soon"})
    with pytest.raises(ValidationError, match="service name"):
        Service("Bad Name", make_app("x"))
    with pytest.raises(ValidationError, match="ASGI"):
        Service("ok", None)  # type: ignore[arg-type]
    env = ServiceSettings.from_env(
        {"KEEL_SERVICE_PORT": "8080", "KEEL_SERVICE_TAGS": "a,b", "KEEL_SERVICE_METADATA": "k=v"}
    )
    assert (env.port, env.tags, dict(env.metadata)) == (8080, ("a", "b"), {"k": "v"})


async def test_port_in_use_is_a_validation_error(mem: Store) -> None:
    """Binding a taken port fails with a message naming the fix."""
    async with service(mem) as first:
        with pytest.raises(ValidationError, match="port=0"):
            async with service(mem, "other", port=first.port):
                pass


async def test_live_config_is_bound(mem: Store) -> None:
    """config= binds a live config the app can read, hot-reloaded on publish."""
    center = keel.config.ConfigCenter(mem)
    await center.publish("echo.json", '{"greeting": "hi"}')
    async with service(mem, config="echo.json") as svc:
        assert svc.config is not None and svc.config.value["greeting"] == "hi"
        await center.publish("echo.json", '{"greeting": "hello"}')
        config = svc.config
        await eventually(lambda: config.value["greeting"] == "hello", 5)


def test_workers_refuse_a_target_that_is_not_module_attribute(mem: Store) -> None:
    """The form of the import string is checked at once; the supervisor imports nothing."""
    with pytest.raises(ValidationError, match="write module:attribute"):
        Service("echo", "no-colon", store=mem, workers=2)


async def test_a_worker_that_cannot_import_the_app_fails_serve_with_its_reason(
    mem: Store,
) -> None:
    """serve() raises the KeelError itself (not a group), naming the worker and the cause."""
    svc = Service("echo", "tests.service.no_such_module:app", store=mem, workers=2, settings=FAST)
    with pytest.raises(KeelError, match=r"worker 0: .*cannot import 'tests.service.no_such"):
        async with asyncio.timeout(60):
            await svc.serve()
    assert (await mem.range("services/echo/"))[0] == []
