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
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from dataclasses import dataclass

import httpx

from keel.clock import SYSTEM_CLOCK, Clock
from keel.coord import Election, Leadership, Session
from keel.errors import KeelError
from keel.registry._model import (
    HEALTH,
    SERVICES,
    HealthCheck,
    Instance,
    decode_instance,
    health_key,
)
from keel.store import Compare, Delete, EventType, Put, Store

__all__ = ["CheckState", "HealthChecker", "probe"]

log = logging.getLogger("keel.registry.health")
ELECTION = "registry/health-checker"


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
            scheme = "https" if instance.scheme in ("https", "grpcs") else "http"
            host = f"[{instance.address}]" if ":" in instance.address else instance.address
            response = await client.get(f"{scheme}://{host}:{instance.port}{check.path}")
            if response.status_code < 400:
                return None
            return f"HTTP {response.status_code}"
    except TimeoutError:
        return f"no answer within {check.timeout_s}s"
    except (OSError, httpx.HTTPError) as exc:
        return f"{type(exc).__name__}: {exc}"


class HealthChecker:
    """Campaign for the checker role; while leader, probe every instance with a check.

    Use ``await checker.run()`` (until cancelled) inside ``async with Session(...)``.

    Args:
        session: the session to campaign on.
        node: this checker's name, shown as the leader's value.
        clock: time source for probe intervals.
    """

    def __init__(self, session: Session, *, node: str | None = None, clock: Clock = SYSTEM_CLOCK):
        self.session = session
        self.store: Store = session.store
        self.node = node or f"{socket.gethostname()}-{id(self):x}"
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
        marked = {kv.key for kv in health}
        self._states = {k.removeprefix(HEALTH): CheckState(failing=True) for k in marked}
        probes: dict[str, asyncio.Task[None]] = {}
        async with httpx.AsyncClient() as client, asyncio.TaskGroup() as tasks:

            def start(instance: Instance) -> None:
                if instance.check is None:
                    return
                old = probes.pop(instance.key, None)
                if old is not None:
                    old.cancel()
                probes[instance.key] = tasks.create_task(
                    self._probe_loop(instance, client, leadership)
                )

            for kv in kvs:
                start(decode_instance(kv.key, kv.value))
            async with self.store.watch(
                SERVICES, prefix=True, start_revision=revision + 1
            ) as events:
                async for event in events:
                    task = probes.pop(event.kv.key, None)
                    if task is not None:
                        task.cancel()
                    if event.type is EventType.PUT:
                        with contextlib.suppress(KeelError):
                            start(decode_instance(event.kv.key, event.kv.value))
                    else:
                        await self._clear(event.kv.key.removeprefix(SERVICES), leadership)

    async def _probe_loop(
        self, instance: Instance, client: httpx.AsyncClient, leadership: Leadership
    ) -> None:
        check = instance.check
        assert check is not None
        name = f"{instance.service}/{instance.id}"
        state = self._states.setdefault(name, CheckState())
        while True:
            reason = await probe(instance, check, client)
            self.probes += 1
            if state.record(reason is None, check):
                await self._mark(instance, state.failing, reason, leadership)
            await self._clock.sleep(check.interval_s)

    async def _mark(
        self, instance: Instance, failing: bool, reason: str | None, leadership: Leadership
    ) -> None:
        key = health_key(instance.service, instance.id)
        if failing:
            body = {
                "status": "failing",
                "reason": reason,
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
