"""Steps that record what ran, for the saga tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from keel.saga import Abort, SagaContext


class Log:
    """Every call made, as ``(step, op)``, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def ok(self, result: Any = None) -> Callable[[SagaContext], Any]:
        """An op that succeeds with ``result``."""

        async def op(ctx: SagaContext) -> Any:
            self.calls.append((ctx.step, ctx.op))
            return result

        return op

    def fail(
        self, times: int | None = None, *, abort: bool = False
    ) -> Callable[[SagaContext], Any]:
        """An op that raises (``times`` times, then succeeds; None: always)."""
        count = [0]

        async def op(ctx: SagaContext) -> Any:
            self.calls.append((ctx.step, ctx.op))
            count[0] += 1
            if times is None or count[0] <= times:
                if abort:
                    raise Abort("card declined")
                raise RuntimeError(f"{ctx.step} {ctx.op} failed")
            return "ok"

        return op
