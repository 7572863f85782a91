"""Active health checks: one elected checker per cluster probes instances and marks failures.

Passive liveness is the session lease (a dead process's instances vanish).
Active checks catch the live-but-broken: every instance that declares a
``check`` is probed on its interval (HTTP GET, healthy on 2xx/3xx; or a TCP
connect). ``fall`` consecutive failures mark it failing in
``health/<service>/<instance-id>``; ``rise`` consecutive successes clear the
mark. Only the leader of the ``registry/health-checker`` election probes, and
each mark is written with the leadership's guard, so a deposed checker cannot
write stale marks. Marks are not leased: a checker's death leaves them in
place until the next leader re-probes.

The records it reads are untrusted (anyone who can write ``services/`` wrote
them): each goes through the registry's decoder, malformed ones are skipped
and counted, no instance is probed more than once a second
(:data:`~keel.registry.MIN_CHECK_INTERVAL_S`), and probes go only to the
instance's own registered address and port unless the operator starts the
checker with ``allow_other_targets=True``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TypeVar
from urllib.parse import urlsplit

import httpx
from opentelemetry.trace import SpanKind

from keel._records import Rejected, decode, report
from keel.clock import SYSTEM_CLOCK, Clock
from keel.coord import Election, Leadership, Session
from keel.errors import KeelError
from keel.observe._component_metrics import component_metrics
from keel.observe.spans import end_span, start_span
from keel.registry._decode import (
    HEALTH_AREA,
    REGISTRY_AREA,
    decode_health_mark,
    decode_instance,
    warn_limited,
)
from keel.registry._model import (
    HEALTH,
    MIN_CHECK_INTERVAL_S,
    SERVICES,
    HealthCheck,
    Instance,
    health_key,
    show,
)
from keel.store import Compare, Delete, EventType, KeyValue, Put, Store

__all__ = ["CheckState", "HealthChecker", "is_own_target", "probe", "probe_url"]

log = logging.getLogger("keel.registry.health")
ELECTION = "registry/health-checker"
_REASON_MAX = 500
T = TypeVar("T")


@dataclass(slots=True)
class CheckState:
    """Rise/fall bookkeeping of one instance (pure).

    Attributes:
        failing: whether the instance is marked failing.
        successes: consecutive successes so far.
        failures: consecutive failures so far.
    """

    failing: bool = False
    successes: int = 0
    failures: int = 0

    def record(self, ok: bool, check: HealthCheck) -> bool:
        """Fold one probe result in; return True when the failing mark flips."""
        if ok:
            self.successes += 1
            self.failures = 0
            if self.failing and self.successes >= check.rise:
                self.failing = False
                return True
        else:
            self.failures += 1
            self.successes = 0
            if not self.failing and self.failures >= check.fall:
                self.failing = True
                return True
        return False


def probe_url(instance: Instance, check: HealthCheck) -> str:
    """The URL an HTTP check GETs: the check's path on the instance's own address and port."""
    if not check.path.startswith("/"):
        return check.path
    scheme = "https" if instance.scheme in ("https", "grpcs") else "http"
    host = f"[{instance.address}]" if ":" in instance.address else instance.address
    return f"{scheme}://{host}:{instance.port}{check.path}"


def is_own_target(instance: Instance, check: HealthCheck) -> bool:
    """True when the check probes only the instance's own registered address and port."""
    if check.type == "tcp" or check.path.startswith("/"):
        return True
    url = urlsplit(check.path)
    port = url.port or (443 if url.scheme == "https" else 80)
    return url.hostname == instance.address.lower().strip("[]") and port == instance.port


async def probe(instance: Instance, check: HealthCheck, client: httpx.AsyncClient) -> str | None:
    """Probe once; return None when healthy, else the reason."""
    try:
        async with asyncio.timeout(check.timeout_s):
            if check.type == "tcp":
                _, writer = await asyncio.open_connection(instance.address, instance.port)
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
                return None
            response = await client.get(probe_url(instance, check))
            if response.status_code < 400:
                return None
            return f"HTTP {response.status_code}"
    except TimeoutError:
        return f"no answer within {check.timeout_s}s"
    except (OSError, ValueError, httpx.HTTPError, httpx.InvalidURL) as exc:
        return f"{type(exc).__name__}: {exc}"[:_REASON_MAX]


async def _observed_probe(
    instance: Instance, check: HealthCheck, client: httpx.AsyncClient
) -> str | None:
    """:func:`probe`, counted in the probe series and traced (one span per probe)."""
    span = start_span(
        f"health probe {check.type}",
        {
            "keel.service": instance.service,
            "keel.instance": instance.id,
            "server.address": instance.address,
            "server.port": instance.port,
            "keel.check.type": check.type,
        },
        kind=SpanKind.CLIENT,
        root=True,
    )
    started = time.perf_counter()
    reason = await probe(instance, check, client)
    component_metrics().probed(check.type, reason is None, time.perf_counter() - started)
    if span is not None:
        span.set_attribute("keel.check.healthy", reason is None)
        if reason is not None:
            span.set_attribute("error.type", reason.split(":", 1)[0][:100])
    end_span(span)
    return reason


class HealthChecker:
    """Campaign for the checker role; while leader, probe every instance with a check.

    Use ``await checker.run()`` (until cancelled) inside ``async with Session(...)``.
    Records under ``services/`` are untrusted: malformed ones are skipped and
    counted, and an HTTP check is sent only to the instance's own registered
    address and port unless ``allow_other_targets`` is set.

    Args:
        session: the session to campaign on.
        node: this checker's name, shown as the leader's value.
        clock: time source for probe intervals.
        allow_other_targets: also probe checks whose ``path`` is a full URL
            naming another host or port (anyone who can write ``services/``
            could then make the checker send GETs anywhere it can reach).
    """

    def __init__(
        self,
        session: Session,
        *,
        node: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
        allow_other_targets: bool = False,
    ):
        self.session = session
        self.store: Store = session.store
        self.node = node or f"{socket.gethostname()}-{id(self):x}"
        self.allow_other_targets = allow_other_targets
        self._clock = clock
        self._states: dict[str, CheckState] = {}
        self.probes = 0

    async def run(self) -> None:
        """Lead and check; campaign again after losing leadership; stop when cancelled."""
        election = Election(self.session, ELECTION)
        while not self.session.lost.is_set():
            async with election.campaign(self.node) as leadership:
                log.info("health checker %s leads (token %s)", self.node, leadership.fencing_token)
                work = asyncio.ensure_future(self._check_all(leadership))
                lost = asyncio.ensure_future(leadership.lost.wait())
                try:
                    await asyncio.wait([work, lost], return_when=asyncio.FIRST_COMPLETED)
                finally:
                    work.cancel()
                    lost.cancel()
                    with contextlib.suppress(asyncio.CancelledError, KeelError):
                        await work

    async def _check_all(self, leadership: Leadership) -> None:
        kvs, revision = await self.store.range(SERVICES)
        health, _ = await self.store.range(HEALTH)
        marks = (self._decode(kv, HEALTH_AREA, decode_health_mark) for kv in health)
        self._states = {
            f"{m.service}/{m.instance_id}": CheckState(failing=True)
            for m in marks
            if m is not None and m.failing
        }
        probes: dict[str, asyncio.Task[None]] = {}
        client = httpx.AsyncClient(trust_env=False, follow_redirects=False)
        async with client, asyncio.TaskGroup() as tasks:

            def start(kv: KeyValue) -> None:
                instance = self._decode(kv, REGISTRY_AREA, decode_instance)
                if instance is not None and self._may_probe(instance):
                    loop = self._probe_loop(instance, client, leadership)
                    probes[kv.key] = tasks.create_task(loop)

            for kv in kvs:
                start(kv)
            async with self.store.watch(
                SERVICES, prefix=True, start_revision=revision + 1
            ) as events:
                async for event in events:
                    task = probes.pop(event.kv.key, None)
                    if task is not None:
                        task.cancel()
                    if event.type is EventType.PUT:
                        start(event.kv)
                    else:
                        await self._clear(event.kv.key.removeprefix(SERVICES), leadership)

    @staticmethod
    def _decode(kv: KeyValue, area: str, decoder: Callable[[str, bytes], T]) -> T | None:
        """Decode one record through the shared boundary; report and skip a malformed one."""
        decoded = decode(area, kv.key, kv.value, partial(decoder, kv.key))
        if isinstance(decoded, Rejected):
            report(decoded)
            return None
        return decoded

    def _may_probe(self, instance: Instance) -> bool:
        check = instance.check
        if check is None:
            return False
        if self.allow_other_targets or is_own_target(instance, check):
            return True
        warn_limited(
            f"target {instance.key}",
            "not probing %s: its check targets %s, not the instance's own address and port "
            "(start the checker with allow_other_targets=True to allow other targets)",
            instance.key,
            show(check.path),
        )
        return False

    async def _probe_loop(
        self, instance: Instance, client: httpx.AsyncClient, leadership: Leadership
    ) -> None:
        check = instance.check
        assert check is not None
        name = f"{instance.service}/{instance.id}"
        state = self._states.setdefault(name, CheckState())
        while True:
            reason = await _observed_probe(instance, check, client)
            self.probes += 1
            if state.record(reason is None, check):
                try:
                    await self._mark(instance, state.failing, reason, leadership)
                except KeelError as exc:  # the store is away: write the mark on a later probe
                    log.warning("health mark of %s not written (%s)", name, exc)
                    state.failing = not state.failing
            await self._clock.sleep(max(check.interval_s, MIN_CHECK_INTERVAL_S))

    async def _mark(
        self, instance: Instance, failing: bool, reason: str | None, leadership: Leadership
    ) -> None:
        key = health_key(instance.service, instance.id)
        if failing:
            body = {
                "status": "failing",
                "reason": (reason or "")[:_REASON_MAX],
                "since": time.time(),
                "checker": self.node,
            }
            op: Put | Delete = Put(key, json.dumps(body).encode())
        else:
            op = Delete(key)
        result = await self.store.txn(
            [leadership.guard(), Compare.version(instance.key, ">", 0)], [op]
        )
        if result.succeeded:
            log.info(
                "%s/%s is %s (%s)",
                instance.service,
                instance.id,
                "failing" if failing else "healthy again",
                reason or "ok",
            )

    async def _clear(self, name: str, leadership: Leadership) -> None:
        """An instance left: drop its state and its mark."""
        self._states.pop(name, None)
        await self.store.txn([leadership.guard()], [Delete(f"{HEALTH}{name}")])

    def __repr__(self) -> str:
        failing = sum(s.failing for s in self._states.values())
        return f"<HealthChecker {self.node} tracked={len(self._states)} failing={failing}>"
