"""Driving one owned saga forward (actions) or backward (compensations), one txn per transition.

Every transition is persisted before the coordinator acts on it, in one
transaction guarded by two compares: the owner key still has our fencing
token, and the record is unchanged since our last write. An operator's abort
changes the record, so our next write fails, we read the flag and compensate;
a lost owner key means another coordinator took over: we stop at once.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any, NamedTuple

import msgspec

from keel._records import Rejected, decode, report
from keel.clock import Clock
from keel.errors import RetryableError
from keel.resilience import RetrySettings
from keel.resilience._retry import backoff_delay
from keel.saga._announce import Announce
from keel.saga._definition import Abort, Saga, SagaContext, Step, _current
from keel.saga._metrics import saga_metrics
from keel.saga._model import (
    ACTIVE,
    SagaRecord,
    Status,
    StepState,
    active_key,
    owner_key,
    record_decoder,
    record_key,
)
from keel.saga._spans import current, end_step_span, step_span
from keel.store import Compare, Delete, Get, Put, Store

__all__ = ["MAX_RESULT_BYTES", "Fenced", "Runner"]

log = logging.getLogger("keel.saga")

MAX_RESULT_BYTES = 64 * 1024
"""A step's result is stored in the record: larger results fail the step (store a reference)."""

_COMPENSABLE = frozenset(
    {StepState.STARTED, StepState.DONE, StepState.FAILED, StepState.COMPENSATING}
)
_ONE_TRY = RetrySettings(max_attempts=1)


class Fenced(Exception):
    """This coordinator no longer owns the saga (internal: the runner stops)."""


class _Try(NamedTuple):
    ok: bool
    result: Any
    error: str
    tries: int


class Runner:
    """Drives one saga this coordinator owns under ``token`` until it ends or is lost."""

    def __init__(
        self,
        store: Store,
        saga: Saga,
        rec: SagaRecord,
        revision: int,
        token: int,
        clock: Clock,
        announce: Announce | None = None,
    ) -> None:
        self.store = store
        self._announce = announce
        self.saga = saga
        self.rec = rec
        self.revision = revision
        self.token = token
        self._clock = clock
        self._rng = random.Random()
        self._id = f"{rec.saga}/{rec.id}"
        self._steps = {s.name: s for g in saga.groups for s in g}
        # DTM numbers a saga's branches 01, 02... in step order; spans carry the same
        self._branches = {name: f"{i:02d}" for i, name in enumerate(saga.step_names, 1)}

    async def drive(self) -> Status:
        """Run until the saga ends (returns its status); raises :class:`Fenced` if lost."""
        while self.rec.status in ACTIVE:
            if self.rec.status is Status.RUNNING:
                await self._forward()
            else:
                await self._backward()
        return self.rec.status

    # -- transitions -------------------------------------------------------

    async def _commit(self, new: SagaRecord) -> None:
        """Write ``new`` in one guarded txn; an ending also drops the owner and active keys."""
        rkey, okey = record_key(self._id), owner_key(self._id)
        while True:
            new.updated_at = self._clock.time()
            new.token = self.token
            ops: list[Put | Delete] = [Put(rkey, new.encode())]
            if new.status not in ACTIVE:
                ops += [Delete(okey), Delete(active_key(self._id))]
            if self._announce is not None:  # the transition's event, in the same txn
                ops.append(self._announce(self._id, new))
            guard = [
                Compare.create_revision(okey, "==", self.token),
                Compare.mod_revision(rkey, "==", self.revision),
            ]
            try:
                res = await self.store.txn(guard, ops, [Get(okey), Get(rkey)])
            except RetryableError as exc:  # maybe applied: the compare then fails and we re-read
                log.warning("saga %s: store unavailable (%s), retrying", self._id, exc)
                await self._clock.sleep(0.2)
                continue
            if res.succeeded:
                self.rec, self.revision = new, res.revision
                return
            owner, current = res.results
            self._merge(owner, current, new)

    def _merge(self, owner: Any, current: Any, new: SagaRecord) -> None:
        """After a failed write: stop if fenced, else take the operator's abort flag."""
        if owner is None or owner.create_revision != self.token or current is None:
            raise Fenced(self._id)
        seen = decode("saga", current.key, current.value, record_decoder)
        if isinstance(seen, Rejected):
            report(seen)
            raise Fenced(self._id)
        self.revision = current.mod_revision
        if seen.abort:
            new.abort = self.rec.abort = True

    # -- forward -----------------------------------------------------------

    async def _forward(self) -> None:
        new = self.rec.copy()
        if new.abort:
            new.status, new.error = Status.COMPENSATING, "aborted by an operator"
            await self._commit(new)
            return
        groups = [
            g for g in self.saga.groups if any(new.steps[s.name].state != StepState.DONE for s in g)
        ]
        if not groups:
            new.status = Status.COMMITTED
            await self._commit(new)
            return
        todo = [s for s in groups[0] if new.steps[s.name].state != StepState.DONE]
        if any(new.steps[s.name].state is StepState.PENDING for s in todo):
            _mark(new, todo, StepState.STARTED, self._clock.time())
            await self._commit(new)
            new = self.rec.copy()
        tries = await asyncio.gather(*(self._try(s, "action") for s in todo))
        now = self._clock.time()
        for step, t in zip(todo, tries, strict=True):
            st = new.steps[step.name]
            st.attempts += t.tries
            st.finished_at = now
            st.state = StepState.DONE if t.ok else StepState.FAILED
            st.result, st.error = (t.result, "") if t.ok else (None, t.error)
        failed = [f"{s.name}: {t.error}" for s, t in zip(todo, tries, strict=True) if not t.ok]
        if failed:
            new.status, new.error = Status.COMPENSATING, "; ".join(failed)[:1000]
        elif len(groups) > 1:  # fold "started" of the next group into this write
            _mark(new, list(groups[1]), StepState.STARTED, now)
        else:
            new.status = Status.COMMITTED
        await self._commit(new)

    # -- backward ----------------------------------------------------------

    async def _backward(self) -> None:
        new = self.rec.copy()
        groups = [
            g
            for g in reversed(self.saga.groups)
            if any(new.steps[s.name].state in _COMPENSABLE for s in g)
        ]
        if not groups:
            new.status = Status.COMPENSATED
            await self._commit(new)
            return
        todo = [s for s in groups[0] if new.steps[s.name].state in _COMPENSABLE]
        if any(new.steps[s.name].state is not StepState.COMPENSATING for s in todo):
            _mark(new, todo, StepState.COMPENSATING, None)
            await self._commit(new)
            new = self.rec.copy()
        tries = await asyncio.gather(*(self._try(s, "compensate") for s in todo))
        now = self._clock.time()
        for step, t in zip(todo, tries, strict=True):
            st = new.steps[step.name]
            st.compensations += t.tries
            st.finished_at = now
            if t.ok:
                st.state = StepState.COMPENSATED
            else:
                st.error = f"compensation: {t.error}"[:1000]
        failed = [f"{s.name}: {t.error}" for s, t in zip(todo, tries, strict=True) if not t.ok]
        if failed:
            new.status = Status.FAILED
            new.error = ("compensation failed past its retries: " + "; ".join(failed))[:1000]
        elif len(groups) == 1:
            new.status = Status.COMPENSATED
        await self._commit(new)

    # -- one op, with its retries ----------------------------------------------

    async def _try(self, step: Step, op: str) -> _Try:
        policy = (step.retry or _ONE_TRY) if op == "action" else step.compensate_retry
        fn = step.action if op == "action" else step.compensate
        started = self._clock.monotonic()
        delay, error = policy.base_delay_s, ""
        for attempt in range(1, policy.max_attempts + 1):
            ctx = SagaContext(
                saga_id=self._id,
                saga=self.rec.saga,
                step=step.name,
                op="action" if op == "action" else "compensate",
                input=self.rec.input,
                results=self._results(),
                attempt=attempt,
                token=self.token,
            )
            ended, result, error = await self._attempt(fn, ctx, step.timeout_s)
            if ended is not None:
                return _Try(ended, result, error, attempt)
            if attempt == policy.max_attempts:
                break
            delay = backoff_delay(policy, attempt - 1, delay, self._rng)
            elapsed = self._clock.monotonic() - started
            if policy.max_elapsed_s is not None and elapsed + delay > policy.max_elapsed_s:
                break
            await self._clock.sleep(delay)
        return _Try(False, None, error, attempt)

    async def _attempt(
        self, fn: Any, ctx: SagaContext, timeout_s: float | None
    ) -> tuple[bool | None, Any, str]:
        """One try, in its span when tracing is on.

        Returns (True, result, "") when done, (False, None, why) when failed
        for good, (None, None, why) when failed in a way a retry may fix.
        """
        span = step_span(ctx, self._branches[ctx.step])
        began = self._clock.monotonic()
        try:
            with current(span):
                result = await self._call(fn, ctx, timeout_s)
            if ctx.op == "action":
                _check_result(result)
        except Abort as exc:
            end_step_span(span, "aborted", exc)
            return False, None, f"aborted: {exc}"
        except TimeoutError as exc:
            end_step_span(span, "timed_out", exc)
            return None, None, f"timed out after {timeout_s}s"
        except _BadResult as exc:
            end_step_span(span, "invalid_result", exc, error_type="invalid_result")
            return False, None, str(exc)
        except Exception as exc:  # a step's failure is data: recorded, retried, compensated
            end_step_span(span, "failed", exc)
            return None, None, f"{type(exc).__name__}: {exc}"[:500]
        except BaseException as exc:  # cancelled: the coordinator stops; the saga resumes later
            end_step_span(span, "cancelled", exc)
            raise
        finally:
            saga_metrics().step_seconds.labels(self.rec.saga).observe(
                self._clock.monotonic() - began
            )
        end_step_span(span, "ok")
        return True, (result if ctx.op == "action" else None), ""

    @staticmethod
    async def _call(fn: Any, ctx: SagaContext, timeout_s: float | None) -> Any:
        token = _current.set(ctx)
        try:
            async with asyncio.timeout(timeout_s):
                return await fn(ctx)
        finally:
            _current.reset(token)

    def _results(self) -> dict[str, Any]:
        steps = self.rec.steps.items()
        return {k: s.result for k, s in steps if s.state is StepState.DONE or s.result is not None}


class _BadResult(Exception):
    pass


def _check_result(result: Any) -> None:
    try:
        size = len(msgspec.json.encode(result))
    except (TypeError, ValueError, OverflowError) as exc:
        raise _BadResult(f"the action's result is not JSON ({exc}): return JSON data") from exc
    if size > MAX_RESULT_BYTES:
        raise _BadResult(
            f"the action's result is {size} bytes, over {MAX_RESULT_BYTES}: "
            "store large data elsewhere and return a reference"
        )


def _mark(rec: SagaRecord, steps: list[Step], state: StepState, now: float | None) -> None:
    for step in steps:
        st = rec.steps[step.name]
        st.state = state
        if now is not None:
            st.started_at = now
            st.finished_at = None
