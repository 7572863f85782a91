"""Spans of sagas: one ``saga <name>`` per run by a coordinator, one per step try under it.

The shape DTM and Temporal users know: the saga's span covers its run from
submit (or take-over) to its end, and each try of an action or compensation
is a CLIENT span under it, made current while the step runs, so the
participants' HTTP and gRPC client spans (which carry ``traceparent``) and
their server spans nest under the step that called them. A saga taken over
by another coordinator is traced from there as a new trace (the submitter's
context is not stored in the saga's record).

Free when tracing is off: each helper returns None after one
:func:`keel.observe.spans.tracing_on` check, and the others accept None.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from opentelemetry.trace import Span, SpanKind, Status, StatusCode, use_span
from opentelemetry.util.types import AttributeValue

from keel.observe.spans import start_span, tracing_on
from keel.saga._definition import SagaContext
from keel.saga._model import SagaRecord

__all__ = ["current", "end_saga_span", "end_step_span", "saga_span", "step_span"]


def saga_span(rec: SagaRecord, *, resumed: bool) -> Span | None:
    """Start the ``saga <name>`` span of one run (a new trace when ``resumed``), or None."""
    if not tracing_on():
        return None
    attributes: dict[str, AttributeValue] = {
        "keel.saga.name": rec.saga,
        "keel.saga.gid": f"{rec.saga}/{rec.id}",
        "keel.saga.resumed": resumed,
    }
    return start_span(f"saga {rec.saga}", attributes, root=resumed)


def end_saga_span(span: Span | None, outcome: str, error: str, exc: BaseException | None) -> None:
    """End a saga span with its outcome; compensated, failed and broken runs are errors."""
    if span is None:
        return
    span.set_attribute("keel.saga.outcome", outcome)
    if exc is not None:
        _failed(span, type(exc).__name__, str(exc))
    elif outcome in ("compensated", "failed"):
        _failed(span, outcome, error)
    span.end()


def step_span(ctx: SagaContext, branch: str) -> Span | None:
    """Start the CLIENT span of one try of a step's action or compensation, or None."""
    if not tracing_on():
        return None
    verb = "step" if ctx.op == "action" else "compensate"
    attributes: dict[str, AttributeValue] = {
        "keel.saga.name": ctx.saga,
        "keel.saga.gid": ctx.saga_id,
        "keel.saga.step": ctx.step,
        "keel.saga.branch": branch,
        "keel.saga.op": ctx.op,
        "keel.saga.attempt": ctx.attempt,
    }
    return start_span(f"saga {verb} {ctx.step}", attributes, kind=SpanKind.CLIENT)


def end_step_span(
    span: Span | None,
    outcome: str,
    exc: BaseException | None = None,
    *,
    error_type: str | None = None,
) -> None:
    """End a step span: ``ok``, or a failure outcome with ``error_type`` (default: exc's type)."""
    if span is None:
        return
    span.set_attribute("keel.saga.outcome", outcome)
    if exc is not None:
        _failed(span, error_type or type(exc).__name__, str(exc) or outcome)
    span.end()


@contextlib.contextmanager
def current(span: Span | None) -> Iterator[None]:
    """Make ``span`` current for the block (nothing when None); the caller ends it."""
    if span is None:
        yield
        return
    with use_span(span, end_on_exit=False, record_exception=False, set_status_on_exception=False):
        yield


def _failed(span: Span, error_type: str, message: str) -> None:
    span.set_attribute("error.type", error_type)
    span.set_status(Status(StatusCode.ERROR, message[:200]))
