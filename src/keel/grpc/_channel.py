"""keel.grpc.Channel: a grpc.aio.Channel that calls a service by name.

grpcio has no pluggable name resolver in Python (grpc/grpc#11685), so the
channel does resolution and balancing itself, above grpc: discovery's
watch-fed cache gives the instances, :mod:`keel.grpc._pool` keeps one grpc.aio
sub-channel per instance, and every call picks one (outlier ejection around
peak-EWMA P2C by default, as :class:`keel.http.Client`) with the resilience
of ``_calls``: the caller's deadline, budgeted safe retries, a breaker per
instance. Generated stubs take it where they take a grpc.aio channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import grpc
from opentelemetry import trace

from keel.balance import Balancer, ConsistentHash, OutlierEjection, PeakEwma
from keel.errors import CircuitOpenError, KeelError, NoInstanceError, ValidationError
from keel.grpc._calls import Spec
from keel.grpc._errors import CircuitOpenRpcError, NoInstanceRpcError, rpc_error
from keel.grpc._metrics import GrpcMetrics, grpc_metrics
from keel.grpc._multi import (
    StreamMultiCallable,
    UnaryStreamMultiCallable,
    UnaryUnaryMultiCallable,
)
from keel.grpc._pick import choose, override_instance
from keel.grpc._pool import Sub, SubChannels
from keel.grpc._settings import ChannelSettings, check_arguments
from keel.observe import ResilienceListener, tracer
from keel.registry import Discovery, Instance
from keel.registry._model import check_service_name
from keel.resilience import BreakerState, RetryBudget
from keel.store import Store

__all__ = ["Channel", "ChannelStatistics"]

log = logging.getLogger("keel.grpc.channel")


@dataclass(frozen=True, slots=True)
class ChannelStatistics:
    """A snapshot of a :class:`Channel`.

    Attributes:
        service: the service called.
        calls: calls started (each call counts once, whatever its attempts).
        failures: calls that ended with a status other than OK.
        retries: attempts after the first (unary calls) and restarted streams.
        instances: usable instances now (scheme ``grpc``, or ``grpcs`` with TLS).
        subchannels: open sub-channels, including those draining after their
            instance left.
        skipped: instances of the service passed over now (another scheme, or
            ``grpcs`` without credentials).
        open_breakers: ids of instances whose breaker is open now.
    """

    service: str
    calls: int
    failures: int
    retries: int
    instances: int
    subchannels: int
    skipped: int
    open_breakers: tuple[str, ...]


class Channel(grpc.aio.Channel):  # type: ignore[misc]  # grpc is untyped
    """A grpc.aio channel to every instance of one service.

    Use it as ``async with Channel(store, "users") as channel:
    stub = UserServiceStub(channel)``. A unary stub method also takes
    ``idempotent=True``, allowing retries after the request was sent.

    Args:
        source: a store (the channel runs its own Discovery), a started
            Discovery the caller owns, or None with ``target_override``.
        service: the service name instances registered under.
        settings: deadlines, retries, breakers, ejection, TLS (:class:`ChannelSettings`).
        balancer: makes the service's balancer (default: ``PeakEwma``, or
            ``ConsistentHash`` with ``hash_key``); outlier ejection wraps it.
        target_override: ``host:port`` to call instead of discovering (tests).
        hash_key: a metadata key whose value picks the instance (affinity).
        listener: resilience metrics hook for the breakers.
        tracer_provider: where client spans go (default: the global provider).
        metrics: the ``keel_grpc_client_*`` series (default: the process-wide
            ones; ``False``: none).

    Raises:
        ValidationError: a bad service name, source or ``target_override``.
    """

    def __init__(
        self,
        source: Store | Discovery | None,
        service: str,
        *,
        settings: ChannelSettings | None = None,
        balancer: Callable[[], Balancer] | None = None,
        target_override: str | None = None,
        hash_key: str | None = None,
        listener: ResilienceListener | None = None,
        tracer_provider: trace.TracerProvider | None = None,
        metrics: GrpcMetrics | bool | None = None,
    ) -> None:
        check_arguments(source, settings, balancer, hash_key)
        self.service = check_service_name(service)
        self.settings = s = settings or ChannelSettings()
        self._fixed = (
            None if target_override is None else (override_instance(service, target_override),)
        )
        if source is None and self._fixed is None:
            raise ValidationError(
                "keel.grpc.Channel needs a store, a Discovery or target_override='host:port'"
            )
        self.discovery = source if isinstance(source, Discovery | None) else Discovery(source)
        self._own_discovery = source is not None and not isinstance(source, Discovery)
        self.hash_key = hash_key
        inner = balancer or (ConsistentHash if hash_key else PeakEwma)
        self.balancer = OutlierEjection(inner(), s.outlier)
        self.budget = RetryBudget(s.budget)
        self.rng = random.Random()
        self._listener = listener
        self._provider = tracer_provider
        self._tracer = tracer(tracer_provider)
        self._metrics = grpc_metrics() if metrics is None or metrics is True else metrics or None
        self._tasks: asyncio.TaskGroup | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._pool = SubChannels(service, s, self._spawn, listener)
        self._calls = self._failures = self._retries = 0
        self._closed = False

    # -- lifetime -------------------------------------------------------

    async def __aenter__(self) -> Self:
        tasks = asyncio.TaskGroup()
        await tasks.__aenter__()
        self._tasks = tasks
        try:
            if self._own_discovery:
                assert self.discovery is not None
                await self.discovery.__aenter__()
            if self._fixed is not None:
                self._pool.sync(self._fixed)
            else:
                await self._load()
                self._spawn(self._follow())
        except BaseException:
            await self.close()
            raise
        return self

    async def _load(self) -> None:
        assert self.discovery is not None
        try:
            self._pool.sync(await self.discovery.instances(self.service))
        except KeelError as exc:  # calls fail fast until discovery recovers
            log.warning(
                "discovery of %r failed at start (%s); calls fail until it loads", self.service, exc
            )

    async def _follow(self) -> None:
        assert self.discovery is not None
        while True:
            try:
                async for instances in self.discovery.subscribe(self.service):
                    self._pool.sync(instances)
            except KeelError as exc:  # not loaded yet (store down at start): retry
                log.debug("following %r: %s", self.service, exc)
            except Exception:  # never take the caller's task group down
                log.exception("following the instances of %r failed; retrying", self.service)
            await asyncio.sleep(0.5)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        if self._tasks is None:
            coro.close()
            return
        task = self._tasks.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self, grace: float | None = None) -> None:
        """Close every sub-channel (after ``grace`` seconds for calls in flight; idempotent)."""
        if self._closed:
            return
        self._closed = True
        if grace:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await asyncio.gather(
                        *(sub.channel.close(grace) for sub in self._pool.subs.values())
                    )
        tasks, self._tasks = self._tasks, None
        for task in list(self._background):
            task.cancel()
        try:
            await self._pool.close()
        finally:
            if tasks is not None:
                await tasks.__aexit__(None, None, None)
            if self._own_discovery and self.discovery is not None:
                await self.discovery.__aexit__(None, None, None)

    # -- what the call objects use ----------------------------------------

    def choose(self, tried: set[str] | None, key: str | None) -> tuple[Instance, Any, Sub]:
        """Pick an instance for one attempt: (instance, breaker ticket, sub-channel).

        Raises:
            grpc.aio.AioRpcError: UNAVAILABLE when no instance is usable
                (:class:`NoInstanceRpcError`) or every breaker is open
                (:class:`CircuitOpenRpcError`).
        """
        if self._closed or self._tasks is None:
            raise rpc_error(
                grpc.StatusCode.UNAVAILABLE,
                f"keel.grpc.Channel to {self.service!r} is not open: use 'async with Channel(...)'",
            )
        if self._fixed is None:
            assert self.discovery is not None
            instances = self._pool.sync(self.discovery.cached(self.service))
        else:
            instances = self._pool.usable
        pool = self._pool
        try:
            instance, gate = choose(
                self.service, instances, tried, self.balancer, pool.breaker, key
            )
        except NoInstanceError:
            raise rpc_error(
                grpc.StatusCode.UNAVAILABLE, self._why_none(), NoInstanceRpcError
            ) from None
        except CircuitOpenError as exc:
            raise rpc_error(grpc.StatusCode.UNAVAILABLE, str(exc), CircuitOpenRpcError) from None
        return instance, gate, pool.subs[instance.id]

    def _why_none(self) -> str:
        if self.discovery is not None and self.discovery.cached(self.service) is None:
            return (
                f"service {self.service!r}: discovery has not loaded its instances "
                f"(is the store reachable?)"
            )
        if self._pool.skipped:
            return (
                f"service {self.service!r} has no usable gRPC instance: "
                f"{self._pool.skipped} skipped, as {self._pool.last_skip} "
                f"(register gRPC instances with scheme 'grpc', or 'grpcs' with credentials)"
            )
        return f"service {self.service!r} has no instance up: start one, or check the store URL"

    def hash_value(self, metadata: Sequence[tuple[str, str | bytes]]) -> str | None:
        """The affinity key of a call: the value of ``hash_key`` in its metadata."""
        if self.hash_key is None:
            return None
        for name, value in metadata:
            if name == self.hash_key:
                return value if isinstance(value, str) else value.decode("latin-1")
        return None

    def start_span(self, method: str) -> trace.Span | None:
        """A CLIENT span for one call, when tracing records anything."""
        if self._provider is None and isinstance(
            trace.get_tracer_provider(), trace.ProxyTracerProvider
        ):
            return None
        service, _, name = method.lstrip("/").partition("/")
        return self._tracer.start_span(
            method.lstrip("/"),
            kind=trace.SpanKind.CLIENT,
            attributes={
                "rpc.system": "grpc",
                "rpc.service": service,
                "rpc.method": name,
                "keel.service": self.service,
            },
        )

    def retried(self) -> None:
        """Count an attempt after the first."""
        self._retries += 1

    def ended(self, code: grpc.StatusCode) -> None:
        """Count a finished call."""
        self._calls += 1
        if code is not grpc.StatusCode.OK:
            self._failures += 1

    def _spec(self, method: str, ser: Any, deser: Any, registered: Any, grpc_type: str) -> Spec:
        series = None if self._metrics is None else self._metrics.client(grpc_type, method)
        unary_request = grpc_type in ("unary", "server_stream")
        return Spec(method, ser, deser, bool(registered), series, unary_request)

    # -- grpc.aio.Channel -------------------------------------------------

    def unary_unary(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: bool | None = False,
    ) -> UnaryUnaryMultiCallable:
        """A callable for the unary method ``method`` (``/pkg.Service/Method``)."""
        spec = self._spec(
            method, request_serializer, response_deserializer, _registered_method, "unary"
        )
        return UnaryUnaryMultiCallable(self, spec)

    def unary_stream(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: bool | None = False,
    ) -> UnaryStreamMultiCallable:
        """A callable for the server-streaming method ``method``."""
        spec = self._spec(
            method, request_serializer, response_deserializer, _registered_method, "server_stream"
        )
        return UnaryStreamMultiCallable(self, spec)

    def stream_unary(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: bool | None = False,
    ) -> StreamMultiCallable:
        """A callable for the client-streaming method ``method``."""
        spec = self._spec(
            method, request_serializer, response_deserializer, _registered_method, "client_stream"
        )
        return StreamMultiCallable(self, spec, "stream_unary")

    def stream_stream(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: bool | None = False,
    ) -> StreamMultiCallable:
        """A callable for the bidirectional-streaming method ``method``."""
        spec = self._spec(
            method, request_serializer, response_deserializer, _registered_method, "bidi_stream"
        )
        return StreamMultiCallable(self, spec, "stream_stream")

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        """The best state of the sub-channels (TRANSIENT_FAILURE without any)."""
        states = {sub.channel.get_state(try_to_connect) for sub in self._pool.subs.values()}
        for state in (
            grpc.ChannelConnectivity.READY,
            grpc.ChannelConnectivity.CONNECTING,
            grpc.ChannelConnectivity.IDLE,
        ):
            if state in states:
                return state
        if self._closed:
            return grpc.ChannelConnectivity.SHUTDOWN
        return grpc.ChannelConnectivity.TRANSIENT_FAILURE

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        """Return once :meth:`get_state` differs from ``last_observed_state`` (polled)."""
        # Sub-channels come and go with discovery: polling their merged state
        # is simpler than re-arming a waiter per sub-channel.
        while True:
            if self.get_state() != last_observed_state:
                return
            await asyncio.sleep(0.05)

    async def channel_ready(self) -> None:
        """Wait until some instance's sub-channel is READY (bound it with asyncio.timeout)."""
        while True:
            if self.get_state(try_to_connect=True) is grpc.ChannelConnectivity.READY:
                return
            await asyncio.sleep(0.02)

    # -- introspection ----------------------------------------------------

    def statistics(self) -> ChannelStatistics:
        """Calls, failures, retries, instances and open breakers now."""
        pool = self._pool
        open_ = tuple(sorted(i for i, b in pool.breakers.items() if b.state is BreakerState.OPEN))
        return ChannelStatistics(
            self.service,
            self._calls,
            self._failures,
            self._retries,
            len(pool.usable),
            len(pool.subs) + len(pool.retiring),
            pool.skipped,
            open_,
        )

    def __repr__(self) -> str:
        s = self.statistics()
        state = "closed" if self._closed else "open" if self._tasks is not None else "new"
        where = f" target={self._fixed[0].url}" if self._fixed else ""
        return (
            f"<keel.grpc.Channel {self.service!r} {state}{where} instances={s.instances} "
            f"calls={s.calls} failures={s.failures} retries={s.retries} "
            f"open_breakers={list(s.open_breakers)}>"
        )
