"""Registration: an instance's record kept in the store for as long as it runs.

Every registration of a process hangs on one session lease, so one keepalive
serves them all and a crashed process's instances vanish after the TTL. When
the session is lost (the lease expired during an outage), the registry opens
a new session by itself and puts every live registration again on the new
lease; a put on the new lease also detaches the key from the old one, so no
ghost entry is left behind. Each step is reported as an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

from keel._aio import Opening
from keel.coord import Session
from keel.errors import KeelError, StoreClosedError, ValidationError
from keel.observe import capability_metrics
from keel.registry._model import DRAINING, UP, Instance, Status, encode_instance
from keel.store import Compare, Delete, Store

__all__ = [
    "InstanceDeregistered",
    "InstanceRegistered",
    "InstanceReregistered",
    "InstanceUpdated",
    "Registration",
    "Registry",
    "RegistryEvent",
]

log = logging.getLogger("keel.registry")
_RETRY_S = 0.5


@dataclass(frozen=True, slots=True)
class InstanceRegistered:
    """An instance was put in the store."""

    instance: Instance


@dataclass(frozen=True, slots=True)
class InstanceUpdated:
    """A registered instance changed (status, metadata, weight...)."""

    instance: Instance


@dataclass(frozen=True, slots=True)
class InstanceReregistered:
    """The session was lost and the instance was put again on a new lease."""

    instance: Instance
    reason: str


@dataclass(frozen=True, slots=True)
class InstanceDeregistered:
    """An instance was removed from the store."""

    instance: Instance


RegistryEvent = InstanceRegistered | InstanceUpdated | InstanceReregistered | InstanceDeregistered


class Registration:
    """A live registration: change it with :meth:`set_status` and :meth:`update`.

    Attributes:
        instance: the record as last written.
    """

    def __init__(self, registry: Registry, instance: Instance) -> None:
        self.instance = instance
        self._registry = registry
        self._active = False

    async def set_status(self, status: Status) -> None:
        """Mark the instance ``UP`` or ``DRAINING`` (draining instances get no new traffic)."""
        if status not in (UP, DRAINING):
            raise ValidationError(f"status {status!r}: use 'UP' or 'DRAINING'")
        await self.update(status=status)

    async def update(self, **changes: Any) -> None:
        """Change fields of the record (``metadata=``, ``weight=``, ``tags=``, ``version=``...).

        Raises:
            ValidationError: a changed field is invalid, or the id/service/address/port
                would change (deregister and register anew instead); nothing is written.
        """
        fixed = {"id", "service", "address", "port", "registered_at"} & set(changes)
        if fixed:
            raise ValidationError(
                f"cannot change {', '.join(sorted(fixed))} of a registration: "
                f"deregister and register a new instance instead"
            )
        updated = self.instance.with_changes(**changes)
        await self._registry._write(updated)
        self.instance = updated
        self._registry._emit(InstanceUpdated(updated))

    async def deregister(self) -> None:
        """Remove the instance from the store at once (idempotent)."""
        if not self._active:
            return
        self._active = False
        self._registry._registrations.pop(self.instance.key, None)
        await self._registry._remove(self.instance)
        self._registry._emit(InstanceDeregistered(self.instance))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.deregister()

    def __repr__(self) -> str:
        state = "active" if self._active else "deregistered"
        i = self.instance
        return f"<Registration {i.service}/{i.id} {i.status} {state}>"


class Registry:
    """Registers this process's instances; use as ``async with Registry(store) as registry``.

    Args:
        store: the store.
        session: the process's session to attach instances to; when None (or
            once it is lost) the registry keeps a session of its own.
        ttl_s: TTL of the registry's own sessions.
    """

    def __init__(self, store: Store, *, session: Session | None = None, ttl_s: int = 10) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self._session = session
        self._registrations: dict[str, Registration] = {}
        self._listeners: list[Callable[[RegistryEvent], object]] = []
        self._ready = asyncio.Event()
        self._closing = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None

    @property
    def session(self) -> Session:
        """The session registrations are attached to now."""
        if self._session is None:
            raise StoreClosedError("the registry is not started: use 'async with Registry(...)'")
        return self._session

    def on_event(self, listener: Callable[[RegistryEvent], object]) -> None:
        """Call ``listener(event)`` for every registration event."""
        self._listeners.append(listener)

    def _emit(self, event: RegistryEvent) -> None:
        name = type(event).__name__.removeprefix("Instance").lower()
        capability_metrics().registry_event(event.instance.service, name)
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:  # a listener must not break registration
                log.exception("registry event listener failed")

    def register(self, instance: Instance) -> Opening[Registration]:
        """Register ``instance`` (await it, or ``async with`` to deregister on exit).

        Raises:
            ValidationError: ``instance`` is not an :class:`Instance`, or is
                registered already by this process.
            StoreClosedError: the registry is not inside its ``async with``.
        """
        if not isinstance(instance, Instance):
            raise ValidationError("register() takes a keel.registry.Instance")
        return Opening(lambda: self._register(instance), lambda reg: reg.deregister())

    def _check_started(self) -> None:
        if self._supervisor is None or self._supervisor.done() or self._closing.is_set():
            raise StoreClosedError(
                "the registry is not started: register inside "
                "'async with Registry(store) as registry:'"
            )

    async def _register(self, instance: Instance) -> Registration:
        self._check_started()
        if instance.key in self._registrations:
            raise ValidationError(
                f"instance {instance.service}/{instance.id} is already registered by this "
                f"process: update the existing registration instead"
            )
        if instance.registered_at is None:
            instance = instance.with_changes(registered_at=datetime.now(UTC))
        await self._write(instance)
        registration = Registration(self, instance)
        registration._active = True
        self._registrations[instance.key] = registration
        self._emit(InstanceRegistered(instance))
        return registration

    async def _write(self, instance: Instance) -> None:
        self._check_started()
        await self._ready.wait()
        await self.store.put(instance.key, encode_instance(instance), lease=self.session.lease_id)

    async def _remove(self, instance: Instance) -> None:
        with contextlib.suppress(StoreClosedError):
            await self.store.txn([Compare.version(instance.key, ">", 0)], [Delete(instance.key)])

    async def __aenter__(self) -> Self:
        self._supervisor = asyncio.ensure_future(self._supervise())
        await asyncio.wait(
            [self._supervisor, asyncio.ensure_future(self._ready.wait())],
            return_when=asyncio.FIRST_COMPLETED,
        )
        if self._supervisor.done():
            self._supervisor.result()  # raise what failed
        return self

    async def _supervise(self) -> None:
        """Own replacement sessions; re-register everything when a session is lost."""
        async with contextlib.AsyncExitStack() as stack:
            if self._session is None:
                self._session = await stack.enter_async_context(
                    Session(self.store, ttl_s=self.ttl_s)
                )
            self._ready.set()
            while True:
                lost = asyncio.ensure_future(self._session.lost.wait())
                closing = asyncio.ensure_future(self._closing.wait())
                await asyncio.wait([lost, closing], return_when=asyncio.FIRST_COMPLETED)
                lost.cancel()
                closing.cancel()
                if self._closing.is_set():
                    return
                reason = self._session.lost.reason or "session lost"
                self._ready.clear()
                self._session = await self._new_session(stack)
                self._ready.set()
                await self._reregister_all(reason)

    async def _new_session(self, stack: contextlib.AsyncExitStack) -> Session:
        while True:
            try:
                return await stack.enter_async_context(Session(self.store, ttl_s=self.ttl_s))
            except KeelError as exc:
                log.warning("registry: cannot open a new session yet (%s); retrying", exc)
                await asyncio.sleep(_RETRY_S)

    async def _reregister_all(self, reason: str) -> None:
        for registration in list(self._registrations.values()):
            while registration._active:
                try:
                    await self._write(registration.instance)
                except KeelError as exc:
                    log.warning("registry: re-register %s failed (%s); retrying", registration, exc)
                    await asyncio.sleep(_RETRY_S)
                    continue
                self._emit(InstanceReregistered(registration.instance, reason))
                break

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for registration in list(self._registrations.values()):
            with contextlib.suppress(KeelError):
                await registration.deregister()
        self._closing.set()
        if self._supervisor is not None:
            await self._supervisor

    def registrations(self) -> list[Registration]:
        """The live registrations of this process."""
        return list(self._registrations.values())

    def __repr__(self) -> str:
        return f"<Registry registrations={len(self._registrations)} session={self._session!r}>"
