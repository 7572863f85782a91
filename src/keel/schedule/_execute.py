"""Running one handler for a held execution: its context, timeout, replacement, outcome.

The worker decides *whether* to run (it holds the claim or the dispatch);
this runs the handler and says how it ended. A timeout or a replacement
cancels the handler's task; a handler that catches that cancellation and
returns is still recorded TIMED_OUT or CANCELLED, since the reason is kept
here and checked after the handler ends.
"""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from opentelemetry.trace import Link, Span, SpanKind, StatusCode, use_span
from opentelemetry.trace import Status as Status_

from keel.clock import Clock
from keel.observe.spans import fire_context, start_span, tracing_on
from keel.schedule._context import Handler, RunLogger, context_for
from keel.schedule._model import Execution, Status
from keel.schedule.wheel import Timer
from keel.store import Store

__all__ = ["Ended", "HandlerRuns"]


@dataclass(frozen=True, slots=True)
class Ended:
    """How one handler run ended."""

    record: Execution  # the record it ran, with its real ``started_at``
    outcome: Status
    error: str
    traceback: str
    log: str


class HandlerRuns:
    """The handlers running in one worker.

    Args:
        worker_id: the worker's id (in each context).
        handlers: handler name → function.
        store: the store handlers get in their context.
        log_limit: characters of captured log kept per run.
        clock: time source.
        arm_timeout: schedules ``expire(key)`` at a time; returns the timer.
    """

    def __init__(
        self,
        worker_id: str,
        handlers: dict[str, Handler],
        store: Store,
        *,
        log_limit: int,
        clock: Clock,
        arm_timeout: Callable[[float, str], Timer[str]],
    ) -> None:
        self.worker_id = worker_id
        self.handlers = handlers
        self.store = store
        self.log_limit = log_limit
        self._clock = clock
        self._arm_timeout = arm_timeout
        self.running: dict[str, asyncio.Task[None]] = {}
        self._replacing: set[str] = set()
        self._timed_out: set[str] = set()

    def expire(self, key: str) -> None:
        """The run reached its timeout: cancel its handler (it ends TIMED_OUT)."""
        task = self.running.get(key)
        if task is not None and key not in self._replacing:
            self._timed_out.add(key)
            task.cancel()

    def replace(self, key: str) -> None:
        """A newer run replaces this one: cancel its handler (it ends CANCELLED)."""
        task = self.running.get(key)
        if task is not None and key not in self._replacing:
            self._replacing.add(key)
            task.cancel()

    async def run(self, key: str, rec: Execution, token: int) -> Ended:
        """Run the handler of ``rec`` in the current task, with fencing ``token``.

        Raises:
            asyncio.CancelledError: the worker is stopping (the claim ends with its lease).
        """
        logger = RunLogger(rec.id, self.log_limit)
        ctx = context_for(rec, token, worker_id=self.worker_id, log=logger, store=self.store)
        handler = self.handlers[rec.handler]
        task = asyncio.current_task()
        assert task is not None
        self.running[key] = task
        outcome, error, trace = Status.SUCCEEDED, "", ""
        deadline = None
        if rec.timeout_s is not None:  # a timer on the worker's wheel: cheap to add and cancel
            deadline = self._arm_timeout(self._clock.time() + rec.timeout_s, key)
        started = self._clock.time()  # lateness ends here: the handler starts now
        span = _run_span(rec, token, self.worker_id, started)
        try:
            if span is None:
                await handler(ctx)
            else:
                with use_span(
                    span, end_on_exit=False, record_exception=False, set_status_on_exception=False
                ):
                    await handler(ctx)
        except asyncio.CancelledError:
            if key not in self._timed_out and key not in self._replacing:
                raise
        except Exception as exc:
            outcome, error = Status.FAILED, f"{type(exc).__name__}: {exc}"
            trace = traceback.format_exc()
        finally:
            if deadline is not None:
                deadline.cancel()
            self.running.pop(key, None)  # from here on, nothing cancels this task
        if key in self._timed_out:
            outcome, error, trace = Status.TIMED_OUT, f"timed out after {rec.timeout_s}s", ""
            task.uncancel()
        elif key in self._replacing:
            outcome, error, trace = Status.CANCELLED, "cancelled: replaced by a newer run", ""
            task.uncancel()
        self._timed_out.discard(key)
        self._replacing.discard(key)
        if span is not None:
            span.set_attribute("keel.job.outcome", outcome.value)
            if outcome is not Status.SUCCEEDED:
                span.set_attribute("error.type", outcome.value)
                span.set_status(Status_(StatusCode.ERROR, error[:200]))
            span.end()
        return Ended(rec.with_changes(started_at=started), outcome, error, trace, logger.text())


def _run_span(rec: Execution, token: int, worker: str, started: float) -> Span | None:
    """A root span for one run (its own trace, linked to its fire's), or None if tracing is off."""
    if not tracing_on():
        return None
    return start_span(
        "job run",
        {
            "keel.job": rec.job,
            "keel.job.run": rec.name,
            "keel.job.handler": rec.handler,
            "keel.job.fire": rec.fire,
            "keel.job.shard": rec.shard,
            "keel.job.attempt": rec.attempt,
            "keel.job.lateness_s": max(0.0, started - rec.fire),
            "keel.fencing_token": token,
            "keel.worker": worker,
        },
        kind=SpanKind.CONSUMER,
        root=True,
        links=(Link(fire_context(rec.job, rec.fire)),),
    )
