"""Tracing through the OpenTelemetry API only: a no-op until an SDK is configured.

Library code calls :func:`tracer` and the propagation helpers; whether spans
are recorded and where they go is the application's choice, made once with
:func:`setup_tracing` (which imports the SDK lazily, so the SDK is not a
dependency of keel) or with any OpenTelemetry SDK setup of its own. Context
crosses process boundaries as W3C ``traceparent``/``tracestate`` headers,
through the globally configured propagator (W3C trace context and baggage by
default).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context

from keel.errors import ValidationError

__all__ = ["current_ids", "extract", "inject", "setup_tracing", "tracer"]

_SCOPE = "keel"


def tracer(provider: trace.TracerProvider | None = None) -> trace.Tracer:
    """keel's tracer on ``provider`` (default: the global one, a no-op until configured)."""
    if provider is None:
        return trace.get_tracer(_SCOPE)
    return provider.get_tracer(_SCOPE)


def extract(headers: Iterable[tuple[bytes, bytes]]) -> Context:
    """The trace context carried by raw ASGI ``headers`` (lower-case names)."""
    carrier: dict[str, str] = {}
    for name, value in headers:
        if name in (b"traceparent", b"tracestate", b"baggage"):
            carrier[name.decode("latin-1")] = value.decode("latin-1")
    if not carrier:
        return Context()
    return propagate.extract(carrier)


def inject(headers: MutableMapping[str, str], context: Context | None = None) -> None:
    """Write the trace context of ``context`` (default: the current one) into ``headers``."""
    propagate.inject(headers, context=context)


def current_ids() -> tuple[str, str] | None:
    """``(trace_id, span_id)`` of the current span as hex, or None when not recording."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


def setup_tracing(
    service: str,
    *,
    otlp_endpoint: str | None = None,
    exporter: Any = None,
    resource: Mapping[str, str] | None = None,
    set_global: bool = True,
) -> trace.TracerProvider:
    """Configure the OpenTelemetry SDK for this process and return its tracer provider.

    Args:
        service: the ``service.name`` resource attribute.
        otlp_endpoint: export spans over OTLP/HTTP to this URL (needs the
            ``opentelemetry-exporter-otlp-proto-http`` package), batched.
        exporter: any SDK ``SpanExporter`` (an ``InMemorySpanExporter`` in
            tests); spans are exported as they end.
        resource: more resource attributes (``deployment.environment``...).
        set_global: also install the provider as the global one (once per process).

    Returns:
        the SDK ``TracerProvider``.

    Raises:
        ValidationError: the SDK (or the OTLP exporter) is not installed, or
            neither ``otlp_endpoint`` nor ``exporter`` is given.
    """
    if otlp_endpoint is None and exporter is None:
        raise ValidationError("setup_tracing needs otlp_endpoint= or exporter= (where spans go)")
    sdk_trace = _optional("opentelemetry.sdk.trace", "opentelemetry-sdk")
    sdk_export = _optional("opentelemetry.sdk.trace.export", "opentelemetry-sdk")
    sdk_resources = _optional("opentelemetry.sdk.resources", "opentelemetry-sdk")
    attributes = {"service.name": service, **(resource or {})}
    provider = sdk_trace.TracerProvider(resource=sdk_resources.Resource.create(attributes))
    if exporter is not None:
        provider.add_span_processor(sdk_export.SimpleSpanProcessor(exporter))
    if otlp_endpoint is not None:
        otlp = _optional(
            "opentelemetry.exporter.otlp.proto.http.trace_exporter",
            "opentelemetry-exporter-otlp-proto-http",
        )
        endpoint = otlp_endpoint.rstrip("/")
        if not endpoint.endswith("/v1/traces"):
            endpoint += "/v1/traces"
        provider.add_span_processor(
            sdk_export.BatchSpanProcessor(otlp.OTLPSpanExporter(endpoint=endpoint))
        )
    if set_global:
        trace.set_tracer_provider(provider)
    result: trace.TracerProvider = provider
    return result


def _optional(module: str, package: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ValidationError(
            f"tracing export needs the {package!r} package: pip install {package}"
        ) from exc
