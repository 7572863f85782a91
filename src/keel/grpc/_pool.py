"""One grpc.aio sub-channel per instance, kept in step with the discovery cache.

Resolver and balancer are split as in grpc-go: discovery gives the addresses,
this pool turns them into sub-channels, the call loop picks one per call.
:meth:`SubChannels.sync` runs whenever the cached list changes (the tuple
from ``Discovery.cached`` is the same object until then, so the per-call check
is one identity comparison). A sub-channel of an instance that left is not
closed at once: calls already on it (a draining server finishes them) get
``close_grace_s`` before grpc cancels them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import grpc

from keel.grpc._pick import skip_reason, target_of
from keel.grpc._settings import ChannelSettings
from keel.observe import ResilienceListener
from keel.registry import Instance
from keel.resilience import CircuitBreaker

__all__ = ["Sub", "SubChannels"]

log = logging.getLogger("keel.grpc.channel")
_WARN_EVERY_S = 60.0


class Sub:
    """The sub-channel of one instance, with its multicallables cached per method."""

    __slots__ = ("_callables", "channel", "closing", "instance", "target")

    def __init__(self, instance: Instance, channel: Any, target: str) -> None:
        self.instance = instance
        self.channel = channel
        self.target = target
        self.closing = False
        self._callables: dict[tuple[str, str], Any] = {}

    def callable(self, kind: str, method: str, ser: Any, deser: Any, registered: bool) -> Any:
        """The grpc multicallable of ``kind`` (``unary_unary``...) for ``method``."""
        found = self._callables.get((kind, method))
        if found is None:
            factory = getattr(self.channel, kind)
            found = self._callables[(kind, method)] = factory(
                method,
                request_serializer=ser,
                response_deserializer=deser,
                _registered_method=registered,
            )
        return found

    def __repr__(self) -> str:
        return f"<Sub {self.instance.id} {self.target} closing={self.closing}>"


class SubChannels:
    """The sub-channels of one service.

    Args:
        service: the service name (for logs and breaker names).
        settings: credentials, channel options, breaker settings.
        spawn: runs a coroutine in the owner's task group (closing with grace).
        listener: resilience metrics hook for the breakers.
    """

    def __init__(
        self,
        service: str,
        settings: ChannelSettings,
        spawn: Callable[[Coroutine[Any, Any, None]], object],
        listener: ResilienceListener | None = None,
    ) -> None:
        self.service = service
        self.settings = settings
        self._spawn = spawn
        self._listener = listener
        self.subs: dict[str, Sub] = {}
        self.usable: tuple[Instance, ...] = ()
        self.breakers: dict[str, CircuitBreaker] = {}
        self.skipped = 0
        self.last_skip = ""
        self.retiring: set[Sub] = set()
        self._seen: object = None
        self._warned: dict[tuple[str, str], float] = {}

    def sync(self, instances: tuple[Instance, ...] | None) -> tuple[Instance, ...]:
        """Bring the sub-channels in line with ``instances``; return the usable ones."""
        if instances is self._seen:
            return self.usable
        self._seen = instances
        usable: list[Instance] = []
        tls = self.settings.credentials is not None
        self.skipped, self.last_skip = 0, ""
        for instance in instances or ():
            reason = skip_reason(instance, tls=tls)
            if reason is None:
                usable.append(instance)
            else:
                self._skip(instance, reason)
        fresh: dict[str, Sub] = {}
        for instance in usable:
            old = self.subs.pop(instance.id, None)
            if old is not None and old.target == target_of(instance):
                old.instance = instance
                fresh[instance.id] = old
                continue
            if old is not None:
                self._retire(old)
            fresh[instance.id] = self._open(instance)
        for old in self.subs.values():
            self._retire(old)
        self.subs = fresh
        self.usable = tuple(usable)
        if len(self.breakers) > 2 * len(fresh) + 16:
            self.breakers = {k: v for k, v in self.breakers.items() if k in fresh}
        return self.usable

    def breaker(self, instance: Instance) -> CircuitBreaker:
        """The circuit breaker of ``instance`` (kept across sub-channel changes)."""
        found = self.breakers.get(instance.id)
        if found is None:
            found = self.breakers[instance.id] = CircuitBreaker(
                self.settings.breaker,
                name=f"grpc:{self.service}/{instance.id}",
                listener=self._listener,
            )
        return found

    def _open(self, instance: Instance) -> Sub:
        target = target_of(instance)
        options = self.settings.channel_options()
        if instance.scheme == "grpcs":
            channel = grpc.aio.secure_channel(target, self.settings.credentials, options=options)
        else:
            channel = grpc.aio.insecure_channel(target, options=options)
        return Sub(instance, channel, target)

    def _retire(self, sub: Sub) -> None:
        sub.closing = True
        self.retiring.add(sub)
        self._spawn(self._close(sub))

    async def _close(self, sub: Sub) -> None:
        try:
            await sub.channel.close(self.settings.close_grace_s)
        finally:
            self.retiring.discard(sub)

    def _skip(self, instance: Instance, reason: str) -> None:
        self.skipped += 1
        self.last_skip = reason
        now = time.monotonic()
        slot = (instance.id, reason)
        last = self._warned.get(slot)
        if last is not None and now - last < _WARN_EVERY_S:
            return
        if len(self._warned) > 1024:
            self._warned.clear()
        self._warned[slot] = now
        log.warning(
            "skipping instance %s of %r: %s",
            instance.id,
            self.service,
            reason,
        )

    async def close(self) -> None:
        """Close every sub-channel now (calls still on them are cancelled)."""
        subs = [*self.subs.values(), *self.retiring]
        self.subs, self.usable, self._seen = {}, (), None
        self.retiring.clear()
        for sub in subs:
            sub.closing = True
            await sub.channel.close(None)
