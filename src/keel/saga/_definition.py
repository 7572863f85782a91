"""Sagas declared in code: :class:`Saga`, :class:`Step`, :class:`Parallel`, :class:`SagaContext`."""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from keel.errors import KeelError, ValidationError
from keel.resilience import RetrySettings
from keel.saga._model import check_name

__all__ = [
    "DEFAULT_COMPENSATE_RETRY",
    "Abort",
    "Action",
    "Parallel",
    "Saga",
    "SagaContext",
    "Step",
    "current_context",
]

DEFAULT_COMPENSATE_RETRY = RetrySettings(max_attempts=5, base_delay_s=0.1, max_delay_s=2.0)
"""Compensations are retried this way unless a step says otherwise; past it the saga is FAILED."""


class Abort(KeelError):
    """Raised by an action: the step failed for good (no retry); the saga compensates."""


@dataclass(frozen=True, slots=True)
class SagaContext:
    """What a step's action or compensation receives.

    Attributes:
        saga_id: the saga's id (``"<name>/<id>"``).
        saga: the saga's name.
        step: this step's name.
        op: ``"action"`` or ``"compensate"``.
        input: the saga's input (JSON).
        results: the results of the steps done so far, by step name.
        attempt: 1 for the first try of this op in this process, then 2, 3...
        token: the owner's fencing token (grows with every new owner).
    """

    saga_id: str
    saga: str
    step: str
    op: Literal["action", "compensate"]
    input: Any
    results: Mapping[str, Any]
    attempt: int
    token: int

    def headers(self) -> dict[str, str]:
        """Headers for outgoing calls: ``client.post(url, headers=ctx.headers())``."""
        return {"keel-saga": self.saga_id, "keel-saga-step": self.step, "keel-saga-op": self.op}


Action = Callable[[SagaContext], Awaitable[Any]]
"""An action or a compensation: ``async def f(ctx) -> JSON-able result``."""

_current: contextvars.ContextVar[SagaContext | None] = contextvars.ContextVar(
    "keel_saga_context", default=None
)


def current_context() -> SagaContext | None:
    """The context of the step running in this task (None outside a step)."""
    return _current.get()


async def _no_compensation(ctx: SagaContext) -> None:
    return None


@dataclass(frozen=True, slots=True)
class Step:
    """One step: an action and the compensation that undoes it.

    Args:
        name: unique within its saga.
        action: ``async def action(ctx)``; its return value (JSON) is the step's result.
        compensate: ``async def compensate(ctx)``; default: nothing to undo.
        timeout_s: each try of the action (and of the compensation) is cancelled after this.
        retry: how the action is retried (default: one try). :class:`Abort` is never retried.
        compensate_retry: how the compensation is retried; past it the saga is FAILED.
    """

    name: str
    action: Action
    compensate: Action = _no_compensation
    timeout_s: float | None = None
    retry: RetrySettings | None = None
    compensate_retry: RetrySettings = DEFAULT_COMPENSATE_RETRY

    def __post_init__(self) -> None:
        check_name(self.name, "step name")
        if not callable(self.action) or not callable(self.compensate):
            raise ValidationError(f"step {self.name!r}: action and compensate must be callables")
        if self.timeout_s is not None and not 0 < self.timeout_s < 86400:
            raise ValidationError(
                f"step {self.name!r}: timeout_s must be > 0 and under a day, got {self.timeout_s!r}"
            )


@dataclass(frozen=True, slots=True, init=False)
class Parallel:
    """Steps run together; the saga moves on when all are done (compensated together too)."""

    steps: tuple[Step, ...] = field(default=())

    def __init__(self, *steps: Step) -> None:
        if len(steps) < 1 or not all(isinstance(s, Step) for s in steps):
            raise ValidationError("Parallel(...) takes one or more Step objects")
        object.__setattr__(self, "steps", tuple(steps))


@dataclass(frozen=True, slots=True)
class Saga:
    """A saga: a name and its steps in order (a :class:`Parallel` runs its steps together).

    Raises:
        ValidationError: a bad name, no steps, or two steps with one name.
    """

    name: str
    steps: Sequence[Step | Parallel]
    groups: tuple[tuple[Step, ...], ...] = field(init=False)

    def __post_init__(self) -> None:
        check_name(self.name)
        groups: list[tuple[Step, ...]] = []
        for item in self.steps:
            if isinstance(item, Step):
                groups.append((item,))
            elif isinstance(item, Parallel):
                groups.append(item.steps)
            else:
                raise ValidationError(
                    f"saga {self.name!r}: steps must be Step or Parallel, not {item!r}"
                )
        names = [s.name for g in groups for s in g]
        if not names:
            raise ValidationError(f"saga {self.name!r} has no steps: give at least one Step")
        if len(set(names)) != len(names):
            raise ValidationError(f"saga {self.name!r}: step names must be unique, got {names}")
        object.__setattr__(self, "groups", tuple(groups))

    @property
    def step_names(self) -> list[str]:
        """Every step's name, in order."""
        return [s.name for g in self.groups for s in g]
