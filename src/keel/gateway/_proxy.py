"""Forwarding to upstream instances: pick, breaker, retry, deadline, streaming.

:class:`Upstreams` is the gateway's one upstream client. Per request:

1. one pass over the (already cleaned) request headers builds the upstream
   head and reads the incoming ``keel-deadline`` (``_wire.py``);
2. the budget is the earliest of the route's ``timeout_s``, the incoming
   ``keel-deadline`` and any enclosing keel deadline; it bounds everything up
   to the response head (an SSE stream or a download may run longer: after
   the head the body only has ``body_idle_timeout_s`` between chunks);
3. an instance is picked among ``Discovery.cached(service)`` (no store I/O),
   filtered by version and labels, by outlier ejection around peak-EWMA P2C,
   skipping instances whose circuit breaker refuses and those already tried;
4. the request goes out on a kept-alive HTTP/1.1 connection (``_h1.py``,
   ``_pool.py``) with the seconds left in ``keel-deadline``; a body that came
   whole in the first ASGI message is written with the head, a longer one is
   streamed from ``receive`` as it arrives (chunked when its length is unknown);
5. retries (another instance, within a shared :class:`~keel.resilience.RetryBudget`)
   happen when the request was never sent (connect failure: any method), or
   for idempotent methods whose body is still whole in hand, on a reset or a
   502/503; a streamed body is never buffered for a retry;
6. the response is streamed to ``send`` chunk by chunk; once its head has
   been sent, an upstream failure raises :class:`ResponseAbortedError` so the
   server drops the client connection instead of sending a second response.

Answers of its own: 502 (no instance, connect failure, reset, bad response),
503 (every breaker open), 504 (deadline), each with a short JSON body.
Instance choice (balancers, breakers, filters) lives in ``_pick.py``;
the exchange itself (attempts, body streams) in ``_exchange.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from types import TracebackType
from typing import Any, Self

from keel.clock import SYSTEM_CLOCK, Clock
from keel.errors import DeadlineExceededError
from keel.gateway._exchange import Exchange, Tally, UpstreamError
from keel.gateway._pick import Picker, Target
from keel.gateway._pool import Pool
from keel.gateway._settings import (
    ResponseAbortedError,
    UpstreamMetrics,
    UpstreamSettings,
    UpstreamStatistics,
)
from keel.gateway._wire import json_error, request_head
from keel.registry import Discovery
from keel.resilience import RetryBudget, Timeout, deadline

__all__ = [
    "ResponseAbortedError",
    "Target",
    "UpstreamMetrics",
    "UpstreamStatistics",
    "Upstreams",
]

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class Upstreams:
    """The gateway's upstream client; ``async with Upstreams(discovery) as upstreams``.

    Args:
        discovery: a started :class:`~keel.registry.Discovery`.
        metrics: where request, retry and breaker series go (None: nowhere).
        settings: pool, breaker, ejection, retry budget (defaults: :class:`UpstreamSettings`).
        clock: time source of breakers, balancers and the retry budget.
    """

    def __init__(
        self,
        discovery: Discovery,
        *,
        metrics: UpstreamMetrics | None = None,
        settings: UpstreamSettings | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.discovery = discovery
        self.metrics = metrics
        self.settings = s = settings or UpstreamSettings()
        self._clock = clock or SYSTEM_CLOCK
        self.pool = Pool(
            max_per_instance=s.max_connections_per_instance,
            max_idle_per_instance=s.max_idle_per_instance,
            idle_timeout_s=s.idle_timeout_s,
            connect_timeout_s=s.connect_timeout_s,
        )
        self.budget = RetryBudget(s.budget, clock=self._clock)
        self.picker = Picker(discovery, s, self._clock, metrics)
        self._timeouts: dict[float, Timeout] = {}  # per route timeout: keel's cheapest deadline
        self.counts = dict.fromkeys(
            ("requests", "websockets", "retries", "failed", "unavailable", "timed_out", "aborted"),
            0,
        )

    def _timeout(self, seconds: float) -> Timeout:
        found = self._timeouts.get(seconds)
        if found is None:
            if len(self._timeouts) > 256:
                self._timeouts.clear()
            found = self._timeouts[seconds] = Timeout(seconds, clock=self._clock)
        return found

    # -- forwarding ----------------------------------------------------------------

    async def forward(
        self,
        target: Target,
        method: str,
        path_qs: bytes,
        headers: list[tuple[bytes, bytes]],
        receive: Receive,
        send: Send,
        *,
        body: bool = True,
        extra: Sequence[tuple[bytes, bytes]] = (),
        tally: Tally | None = None,
    ) -> int:
        """Forward one request to an instance of ``target`` and stream the answer back.

        Args:
            target: the route's upstream and policies.
            method: the request method.
            path_qs: the upstream path with its query string (``/users/7?x=1``).
            headers: the final upstream request headers, names lowercase
                (hop-by-hop ones already removed by the caller).
            receive: the ASGI receive of the client request (its body is streamed).
            send: the ASGI send of the client response.
            body: False when the request has no body (neither ``content-length``
                nor ``transfer-encoding``): ``receive`` is then not asked for one.
            extra: headers added to every response sent (the upstream's or the proxy's).
            tally: its ``status`` is set to the status sent, and ``bytes_out``
                counts the body bytes sent.

        Returns:
            the status sent to the client (the upstream's, or 502/503/504).

        Raises:
            ResponseAbortedError: the upstream failed after the head was sent.
        """
        self.counts["requests"] += 1
        start = time.perf_counter()
        if target.url is not None:
            path_qs = self.picker.fixed(target.url).base_path + path_qs
        head = request_head(method, path_qs, headers)
        budget = target.timeout_s
        if head.deadline_s is not None and head.deadline_s < budget:
            budget = head.deadline_s
        upstream = target.service or target.url or "?"
        if budget <= 0:
            return await self._answer(
                target, upstream, 504, "the deadline had passed", start, send, extra, tally
            )
        exchange = Exchange(self, target, method, head, receive)
        try:
            if body:
                await exchange.open()
            if budget == target.timeout_s:
                await self._timeout(budget).run(exchange.attempts)
            else:
                async with deadline(budget):
                    await exchange.attempts()
        except DeadlineExceededError:
            exchange.abandon(timed_out=True)
            detail = f"no response from {upstream!r} within {budget:g} s"
            return await self._answer(target, upstream, 504, detail, start, send, extra, tally)
        except UpstreamError as exc:
            exchange.abandon(timed_out=False)
            return await self._answer(
                target, upstream, exc.status, exc.detail, start, send, extra, tally
            )
        except BaseException:
            exchange.abandon(timed_out=False)
            raise
        status = exchange.status
        try:
            await exchange.respond(send, self.settings.body_idle_timeout_s, extra, tally)
        except ResponseAbortedError:
            self.counts["aborted"] += 1
            raise
        if self.metrics is not None:
            self.metrics.upstream_request(
                target.route, upstream, status, time.perf_counter() - start
            )
        return status

    async def _answer(
        self,
        target: Target,
        upstream: str,
        status: int,
        detail: str,
        start: float,
        send: Send,
        extra: Sequence[tuple[bytes, bytes]],
        tally: Tally | None,
    ) -> int:
        key = {502: "failed", 503: "unavailable", 504: "timed_out"}.get(status)
        if key is not None:
            self.counts[key] += 1
        if self.metrics is not None:
            self.metrics.upstream_request(
                target.route, upstream, status, time.perf_counter() - start
            )
        if status == 0:
            return status  # the client went away: nothing to answer
        sent = await json_error(send, status, detail, extra)
        if tally is not None:
            tally.status = status
            tally.bytes_out += sent
        return status

    async def websocket(
        self,
        target: Target,
        path_qs: bytes,
        headers: list[tuple[bytes, bytes]],
        receive: Receive,
        send: Send,
    ) -> None:
        """Pass a WebSocket session through to an instance of ``target`` (see ``_ws.py``)."""
        from keel.gateway._ws import pass_through  # websockets loads on first use

        self.counts["websockets"] += 1
        await pass_through(self, target, path_qs, headers, receive, send)

    def retried(self, target: Target) -> bool:
        """Spend the retry budget for one more attempt of ``target`` (and count it)."""
        if not self.budget.try_withdraw():
            return False
        self.counts["retries"] += 1
        if self.metrics is not None:
            self.metrics.upstream_retry(target.route, target.service or target.url or "?")
        return True

    def statistics(self) -> UpstreamStatistics:
        """Counters, open breakers, ejected instances and pool figures."""
        c = self.counts
        breakers = self.picker.breakers_open()
        ejected = self.picker.ejected()
        pool = self.pool.statistics()
        return UpstreamStatistics(
            c["requests"],
            c["websockets"],
            c["retries"],
            c["failed"],
            c["unavailable"],
            c["timed_out"],
            c["aborted"],
            breakers,
            ejected,
            pool.open,
            pool.idle,
            pool.opened,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.pool.close()
        await asyncio.sleep(0)  # let the transports run their close callbacks

    def __repr__(self) -> str:
        s = self.statistics()
        return (
            f"<Upstreams requests={s.requests} retries={s.retries} failed={s.failed} "
            f"breakers_open={s.breakers_open} connections={s.connections_open}>"
        )
