"""What a handler receives: :class:`JobContext`, with a logger that writes into the run record."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeAlias
from zoneinfo import ZoneInfo

from keel.schedule._model import Execution
from keel.store import Compare, Store

__all__ = ["Handler", "JobContext", "RunLogger", "context_for"]

_jobs_log = logging.getLogger("keel.schedule.job")


class RunLogger:
    """A logger whose lines go into the execution's record (capped) and to ``keel.schedule.job``.

    Args:
        execution_id: prefixed to forwarded lines.
        limit: keep at most this many characters; later lines are counted, not kept.
    """

    def __init__(self, execution_id: str, limit: int = 16_384) -> None:
        self.execution_id = execution_id
        self.limit = limit
        self._parts: list[str] = []
        self._size = 0
        self.dropped = 0

    def _emit(self, level: int, msg: str, args: tuple[Any, ...], exc: bool = False) -> None:
        text = msg % args if args else str(msg)
        if exc:
            text = f"{text}\n{traceback.format_exc().rstrip()}"
        line = f"{logging.getLevelName(level)} {text}\n"
        if self._size + len(line) <= self.limit:
            self._parts.append(line)
            self._size += len(line)
        else:
            self.dropped += 1
        _jobs_log.log(level, "[%s] %s", self.execution_id, text)

    def debug(self, msg: str, *args: Any) -> None:
        """Log at DEBUG."""
        self._emit(logging.DEBUG, msg, args)

    def info(self, msg: str, *args: Any) -> None:
        """Log at INFO."""
        self._emit(logging.INFO, msg, args)

    def warning(self, msg: str, *args: Any) -> None:
        """Log at WARNING."""
        self._emit(logging.WARNING, msg, args)

    def error(self, msg: str, *args: Any) -> None:
        """Log at ERROR."""
        self._emit(logging.ERROR, msg, args)

    def exception(self, msg: str, *args: Any) -> None:
        """Log at ERROR with the current exception's traceback."""
        self._emit(logging.ERROR, msg, args, exc=True)

    def text(self) -> str:
        """What was captured (with a note of what the cap cut off)."""
        tail = f"... {self.dropped} more lines not kept (log cap {self.limit})\n"
        return "".join(self._parts) + (tail if self.dropped else "")

    def __repr__(self) -> str:
        return f"<RunLogger {self.execution_id} {self._size}/{self.limit} chars>"


@dataclass(frozen=True, slots=True, kw_only=True)
class JobContext:
    """What a handler is called with.

    Attributes:
        job_id: the job (or the handler name for a delayed task).
        execution_id: ``<job>/<fire-ms>-<shard>``; ``keel jobs logs`` takes it.
        fire_time: the scheduled fire time, aware, in the job's zone.
        shard_index, shard_total: which part of the work this run does.
        shard_param: the job's parameter for this shard, if any.
        args: the job's or the task's JSON arguments.
        attempt: 1 for the first run; a retry or a re-run after a worker's
            death gets the next number.
        fencing_token: the claim's create_revision, larger for every later
            claim of this execution; pass it to whatever you write, or use
            :meth:`guard` in a store txn, so a stale run's writes are refused.
        worker_id: the worker running it.
        log: captured into the run record.
        store: the store the scheduler runs on.
    """

    job_id: str
    execution_id: str
    fire_time: datetime
    shard_index: int
    shard_total: int
    shard_param: str | None
    args: Any
    attempt: int
    fencing_token: int
    worker_id: str
    log: RunLogger
    store: Store
    claim_key: str = field(repr=False)

    def guard(self) -> Compare:
        """A compare that holds only while this run still owns its claim (for your own txns)."""
        return Compare.create_revision(self.claim_key, "==", self.fencing_token)


Handler: TypeAlias = Callable[[JobContext], Awaitable[object]]
"""An async function taking a :class:`JobContext`; its return value is ignored."""


def context_for(
    rec: Execution, token: int, *, worker_id: str, log: RunLogger, store: Store
) -> JobContext:
    """The context a handler gets for run ``rec`` claimed with fencing ``token``."""
    return JobContext(
        job_id=rec.job,
        execution_id=rec.id,
        fire_time=datetime.fromtimestamp(rec.fire, ZoneInfo(rec.tz)),
        shard_index=rec.shard,
        shard_total=rec.shards,
        shard_param=rec.shard_param,
        args=rec.args,
        attempt=rec.attempt,
        fencing_token=token,
        worker_id=worker_id,
        log=log,
        store=store,
        claim_key=rec.claim,
    )
