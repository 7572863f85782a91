"""Spans for keel's own calls (store, locks, elections, probes, job runs), cheap when off.

Library code must not pay for tracing nobody configured: :func:`tracing_on`
is two global reads, and is False until an SDK tracer provider is installed
(globally, or for keel with :func:`use_tracer_provider`). Store calls are
traced only inside a recording span (a sampled request or job run, the
OpenTelemetry parent-based rule), and of those a share set with
:func:`sample_store_spans` (all by default): a store call is the most
frequent thing keel does.

Attributes follow the OpenTelemetry semantic conventions where they exist
(``db.system.name``, ``db.operation.name``, ``error.type``); keel's own are
under ``keel.``.

The OpenTelemetry API itself is imported on first need: until something has
imported ``opentelemetry.trace`` (an SDK set-up, an instrumented framework,
keel's HTTP layer) no provider can be installed, so tracing is off without
it, and a short command that only touches the store does not load it.
"""

from __future__ import annotations

import contextlib
import random
import sys
from collections.abc import Callable, Iterator, Mapping
from types import ModuleType
from typing import TYPE_CHECKING

from keel.errors import ValidationError

if TYPE_CHECKING:
    from opentelemetry import trace
    from opentelemetry.trace import Link, Span, SpanContext, SpanKind
    from opentelemetry.util.types import AttributeValue

__all__ = [
    "GATE",
    "end_span",
    "fire_context",
    "fire_span",
    "sample_store_spans",
    "span_scope",
    "start_span",
    "store_span",
    "tracing_on",
    "use_tracer_provider",
]

_SCOPE = "keel"
_API = "opentelemetry.trace"
_provider: trace.TracerProvider | None = None
_store_ratio = 1.0
_api: ModuleType | None = None


def _trace() -> ModuleType:
    """The OpenTelemetry trace API (imported now if nothing has yet)."""
    global _api
    if _api is None:
        import opentelemetry.trace

        _api = opentelemetry.trace
    return _api


class _Gate:
    """The last answer of :func:`tracing_on`, for hot paths that check it without a call.

    ``watchers`` are called with the new answer when it changes (the store's
    series time every call while tracing is on, so that each can get a span).
    """

    __slots__ = ("on", "watchers")

    def __init__(self) -> None:
        self.on = False
        self.watchers: list[Callable[[bool], None]] = []

    def turn(self, on: bool) -> None:
        """Record a new answer and tell the watchers."""
        self.on = on
        for watcher in list(self.watchers):
            watcher(on)

    def __repr__(self) -> str:
        return f"_Gate(on={self.on})"


GATE = _Gate()
"""``GATE.on``: whether tracing was on when last asked (refreshed by :func:`tracing_on`)."""


def use_tracer_provider(provider: trace.TracerProvider | None) -> None:
    """Record keel's spans (store, coordination, jobs) on ``provider`` instead of the global one.

    For tests and applications that keep their SDK provider out of the global
    slot (``setup_tracing(..., set_global=False)``); None goes back to the global.
    """
    global _provider
    _provider = provider
    tracing_on()


def sample_store_spans(ratio: float) -> None:
    """Trace this share of store calls made inside a recording span (0 turns them off).

    Raises:
        ValidationError: ``ratio`` is outside [0, 1].
    """
    global _store_ratio
    if not 0.0 <= ratio <= 1.0:
        raise ValidationError(f"store span ratio must be in [0, 1], got {ratio!r}")
    _store_ratio = ratio


def tracing_on() -> bool:
    """Whether an SDK may record keel's spans (a provider is installed); cheap."""
    api = _api if _api is not None else sys.modules.get(_API)
    on = _provider is not None or (
        api is not None and getattr(api, "_TRACER_PROVIDER", None) is not None
    )
    if on is not GATE.on:
        GATE.turn(on)
    return on


_tracers: dict[int, tuple[trace.TracerProvider, trace.Tracer]] = {}


def _tracer() -> trace.Tracer:
    """keel's tracer on the provider in use (made once: an SDK makes a new one per call)."""
    provider = _provider if _provider is not None else _trace().get_tracer_provider()
    found = _tracers.get(id(provider))
    if found is None or found[0] is not provider:
        found = _tracers[id(provider)] = (provider, provider.get_tracer(_SCOPE))
    return found[1]


def start_span(
    name: str,
    attributes: Mapping[str, AttributeValue],
    *,
    kind: SpanKind | None = None,
    root: bool = False,
    links: tuple[Link, ...] = (),
) -> Span | None:
    """Start a span under the current one (or a new trace, ``root``), or None when off.

    ``kind`` defaults to INTERNAL. The caller ends it with :func:`end_span`;
    the span is not made current (keel's spans are leaves, or are made
    current by the caller with ``trace.use_span``).
    """
    if not tracing_on():
        return None
    api = _trace()
    context = api.set_span_in_context(api.INVALID_SPAN) if root else None
    span: Span = _tracer().start_span(
        name,
        context=context,
        kind=api.SpanKind.INTERNAL if kind is None else kind,
        attributes=attributes,
        links=list(links),
    )
    return span


@contextlib.contextmanager
def span_scope(
    name: str,
    attributes: Mapping[str, AttributeValue],
    *,
    kind: SpanKind | None = None,
    root: bool = False,
    links: tuple[Link, ...] = (),
) -> Iterator[Span | None]:
    """Run a block inside a new current span (None when tracing is off); failures mark it."""
    span = start_span(name, attributes, kind=kind, root=root, links=links)
    if span is None:
        yield None
        return
    try:
        with _trace().use_span(
            span, end_on_exit=False, record_exception=False, set_status_on_exception=False
        ):
            yield span
    except BaseException as exc:
        end_span(span, exc)
        raise
    end_span(span)


def store_span(store: str, operation: str, key: str | None) -> Span | None:
    """A CLIENT span for one store call, when the current span records and the sample says so."""
    api = _trace()
    if not api.get_current_span().is_recording():
        return None
    if _store_ratio < 1.0 and random.random() >= _store_ratio:
        return None
    attributes: dict[str, AttributeValue] = {
        "db.system.name": store,
        "db.operation.name": operation,
    }
    if key is not None:
        attributes["keel.store.key"] = key
    span: Span = _tracer().start_span(
        f"store {operation}", kind=api.SpanKind.CLIENT, attributes=attributes
    )
    return span


def end_span(span: Span | None, error: BaseException | None = None) -> None:
    """End ``span`` (if any), marking it failed with ``error``'s type when given."""
    if span is None:
        return
    if error is not None:
        span.set_attribute("error.type", type(error).__name__)
        api = _trace()
        span.set_status(api.Status(api.StatusCode.ERROR, str(error)[:200]))
    span.end()


def fire_context(job: str, fire: float) -> SpanContext:
    """The span context a job's fire is known by: derived from the job name and fire time.

    The planner's ``job fire`` span is recorded in this trace, and every run
    of the fire (each shard, each retry) links to it, without carrying
    anything in the run records.
    """
    import hashlib

    digest = hashlib.blake2b(f"{job}\0{fire!r}".encode(), digest_size=24).digest()
    api = _trace()
    context: SpanContext = api.SpanContext(
        trace_id=int.from_bytes(digest[:16], "big") or 1,
        span_id=int.from_bytes(digest[16:], "big") or 1,
        is_remote=True,
        trace_flags=api.TraceFlags(api.TraceFlags.SAMPLED),
    )
    return context


def fire_span(group: str, job: str, fire: float, runs: int, skipped: bool) -> None:
    """Record the planner's ``job fire`` span (PRODUCER) in the fire's trace, when tracing is on."""
    if not tracing_on():
        return
    api = _trace()
    parent = api.set_span_in_context(api.NonRecordingSpan(fire_context(job, fire)))
    attributes: dict[str, AttributeValue] = {
        "keel.job": job,
        "keel.job.group": group,
        "keel.job.fire": fire,
        "keel.job.runs": runs,
        "keel.job.skipped": skipped,
    }
    _tracer().start_span(
        "job fire", context=parent, kind=api.SpanKind.PRODUCER, attributes=attributes
    ).end()
