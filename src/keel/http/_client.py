"""keel.http.Client: an ``httpx.AsyncClient`` that calls services by name."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

import httpx
from opentelemetry import trace

from keel.balance import Balancer, PeakEwma
from keel.errors import StoreClosedError, ValidationError
from keel.http._settings import ClientSettings
from keel.http._transport import DiscoveryTransport, TransportStatistics
from keel.observe import HttpMetrics, ResilienceListener, http_metrics
from keel.registry import Discovery
from keel.store import Store

__all__ = ["Client"]


class Client(httpx.AsyncClient):
    """An httpx client whose ``http://<service>/path`` URLs go to live instances.

    Use it as ``async with Client(store) as client: await client.get("http://orders/x")``.
    Everything of ``httpx.AsyncClient`` works; plain hosts pass through.

    Args:
        store: the store to discover services in (the client starts its own
            Discovery); or pass ``discovery=``.
        discovery: a Discovery the caller has started and owns.
        settings: timeouts, retries, breakers and ejection (:class:`ClientSettings`).
        metrics: HTTP client series (default: the process-wide ones; ``False``: none).
        listener: resilience metrics hook for the retry policy and the breakers.
        tracer_provider: where client spans go (default: the global provider).
        balancer: makes each service's balancer (default: ``PeakEwma``), wrapped
            in outlier ejection.
        **kwargs: passed to ``httpx.AsyncClient`` (``headers=``, ``timeout=``...);
            the default httpx timeout is off apart from connecting, since
            ``settings.timeout_s`` bounds each call.

    Raises:
        ValidationError: neither or both of ``store`` and ``discovery`` given,
            or ``transport=`` passed.
    """

    def __init__(
        self,
        store: Store | None = None,
        *,
        discovery: Discovery | None = None,
        settings: ClientSettings | None = None,
        metrics: HttpMetrics | bool | None = None,
        listener: ResilienceListener | None = None,
        tracer_provider: trace.TracerProvider | None = None,
        balancer: Callable[[], Balancer] = PeakEwma,
        **kwargs: Any,
    ) -> None:
        if (store is None) == (discovery is None):
            raise ValidationError("keel.http.Client needs a store or a discovery= (exactly one)")
        if "transport" in kwargs:
            raise ValidationError("keel.http.Client builds its own transport; pass settings=")
        settings = settings or ClientSettings()
        self._own_discovery = discovery is None
        self.discovery = discovery if discovery is not None else Discovery(store)  # type: ignore[arg-type]
        chosen = http_metrics() if metrics is None or metrics is True else metrics or None
        self.keel_transport = DiscoveryTransport(
            self.discovery,
            settings=settings,
            metrics=chosen,
            listener=listener,
            tracer_provider=tracer_provider,
            balancer=balancer,
        )
        kwargs.setdefault("timeout", httpx.Timeout(None, connect=settings.connect_timeout_s))
        kwargs.setdefault("trust_env", False)
        super().__init__(transport=self.keel_transport, **kwargs)

    async def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        """Send like httpx; a client used outside ``async with`` says so by name."""
        try:
            return await super().send(request, **kwargs)
        except StoreClosedError as exc:
            if self._own_discovery and not self.discovery.started:
                raise StoreClosedError(
                    "keel.http.Client is not started: use "
                    "'async with keel.http.Client(store) as client:'"
                ) from exc
            raise

    def statistics(self) -> TransportStatistics:
        """Calls, retries and open breakers so far."""
        return self.keel_transport.statistics()

    async def __aenter__(self) -> Self:
        if self._own_discovery:
            await self.discovery.__aenter__()
        try:
            await super().__aenter__()
        except BaseException:
            if self._own_discovery:
                await self.discovery.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> None:
        try:
            await super().__aexit__(exc_type, exc, tb)
        finally:
            if self._own_discovery:
                await self.discovery.__aexit__(exc_type, exc, tb)

    def __repr__(self) -> str:
        return f"<keel.http.Client {self.statistics()!r}>"
