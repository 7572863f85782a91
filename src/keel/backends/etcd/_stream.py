"""A long-lived bidirectional stream that follows the member in use.

The watch stream and the keepalive stream share one shape: a single gRPC
stream per connection, multiplexing many callers; opened lazily; when it
breaks, or when the connection moves to another member, it is reopened on the
member in use and the subclass resends what it still needs (watch creates
from the next revision, pending keepalives). That loop lives here once.

A stream never gives up on a transient failure. Whatever gRPC status ends
it - UNAVAILABLE, INTERNAL ("Internal error from Core" after a connection
reset), UNKNOWN, a CANCELLED we did not ask for, "etcdserver: no leader",
"request timed out", "leader changed" - the connection moves to the next
member and the stream is reopened there, with backoff, for as long as the
store is open. Only definite refusals end what the stream carries: the
credentials or the permission are refused, or the request is invalid
(:func:`permanent`). Streams are opened with etcd's require-leader flag
(``hasleader``), so a member cut off from the majority cancels them after a
few election timeouts instead of serving a watch that can no longer progress.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from typing import Any

import grpc

from keel.backends.etcd._channel import Connection, Member
from keel.backends.etcd._errors import Failure, classify, translate
from keel.errors import AuthError, KeelError, StoreUnavailableError, ValidationError

__all__ = ["SharedStream", "StreamReset", "permanent"]

log = logging.getLogger("keel.backends.etcd")

_BACKOFF_S = (0.0, 0.05, 0.1, 0.2, 0.5, 1.0)


class StreamReset(Exception):
    """Raised by a subclass's :meth:`SharedStream._on_message`: reopen on another member."""


def permanent(error: KeelError) -> bool:
    """Whether a stream ended with ``error`` must end what it carries (pure).

    Refused credentials or permission and invalid requests will not fix
    themselves; anything else (an unavailable member, an internal error, a
    lost leader) is an outage the stream outlives.
    """
    return isinstance(error, AuthError | ValidationError)


class SharedStream(abc.ABC):
    """One bidi stream to the member in use, reopened (with resends) whenever it breaks."""

    name = "stream"

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._call: Any = None
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._member: Member | None = None  # the member the open stream is on
        self.last_message = 0.0  # loop time of the last message on the open stream
        self.received = 0  # messages read, on every stream so far
        self.generation = 0

    def ensure_running(self) -> None:
        """Start the supervising task if it is not running."""
        if self._closed:
            return
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"keel-etcd-{self.name}"
            )

    async def send(self, request: Any) -> bool:
        """Write one request on the open stream; False if there is none (it will resend)."""
        async with self._lock:
            return await self._write(request)

    async def _write(self, request: Any) -> bool:
        if self._call is None:
            return False
        try:
            await self._call.write(request)
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
            return False
        return True

    async def _run(self) -> None:
        attempt = 0
        while not self._closed:
            try:
                if await self._one_stream():
                    attempt = 0
            except StoreUnavailableError:
                pass  # no member answered in time; callers have their own deadlines
            except KeelError as exc:  # e.g. a certificate refused after a failover
                if permanent(exc):
                    self._on_refused(exc)
            except Exception:  # a bug here must not silently strand every watch
                log.exception("etcd %s stream failed unexpectedly; reopening it", self.name)
            attempt += 1
            await asyncio.sleep(_BACKOFF_S[min(attempt, len(_BACKOFF_S) - 1)])

    async def _one_stream(self) -> bool:
        """Serve one stream until it breaks or the member moves; True if it got a message."""
        loop = asyncio.get_running_loop()
        member = await self._conn.member(loop.time() + self._conn.settings.timeout_s)
        token = self._conn.metadata()
        try:
            call = self._open(member)
        except grpc.aio.UsageError:  # retired by a failover in the meantime
            return False
        got: list[bool] = []
        try:
            async with self._lock:
                self._call, self._member = call, member
                self.generation += 1
                self.last_message = loop.time()  # opened: silence is counted from here
                await self._resend()
            await self._serve(call, member, got)
        except grpc.aio.AioRpcError as exc:
            await self._broken(exc, member, token)
        except StreamReset as exc:
            await self._conn.fail(member, str(exc))
        finally:
            self._call = self._member = None
            call.cancel()
        return bool(got)

    async def _serve(self, call: Any, member: Member, got: list[bool]) -> None:
        tasks = [
            asyncio.ensure_future(self._read_all(call, got)),
            asyncio.ensure_future(self._conn.wait_moved(member)),
            asyncio.ensure_future(self._watchdog()),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in (tasks[0], tasks[2]):  # the reader's error, or the watchdog's reset
            if not task.cancelled() and (error := task.exception()) is not None:
                raise error

    async def _watchdog(self) -> None:
        """Raise :class:`StreamReset` when the open stream has gone silent (default: never)."""
        await asyncio.Future()

    async def _read_all(self, call: Any, got: list[bool]) -> None:
        while True:
            message = await call.read()
            if message is grpc.aio.EOF:
                return
            if not got:
                got.append(True)
            self.last_message = asyncio.get_running_loop().time()
            self.received += 1
            self._on_message(message)

    async def _broken(self, exc: grpc.aio.AioRpcError, member: Member, md: Any) -> None:
        kind = classify(exc)
        if kind is Failure.TOKEN and self._conn.settings.user:
            stale = dict(md).get("token")
            deadline = asyncio.get_running_loop().time() + self._conn.settings.timeout_s
            await self._conn.reauthenticate(stale, deadline)
            return
        if kind in (Failure.ANSWER, Failure.TOKEN):
            error = translate(exc, member.endpoint, f"the {self.name} stream")
            if permanent(error):
                self._on_refused(error)
                return
        # An outage (even INTERNAL or UNKNOWN): reopen on the next member.
        await self._conn.fail(member, f"{exc.code().name}: {exc.details()}")

    async def suspect(self, generation: int, reason: str) -> None:
        """Move off the member if stream ``generation`` is still open there: it went silent."""
        if generation == self.generation and self._member is not None:
            await self._conn.fail(self._member, reason)

    async def close(self) -> None:
        """Stop the stream for good."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    # -- what a subclass provides -------------------------------------------------

    @abc.abstractmethod
    def _open(self, member: Member) -> Any:
        """Open the gRPC stream call on ``member`` (and count it)."""

    @abc.abstractmethod
    async def _resend(self) -> None:
        """Write, with :meth:`_write`, what the new stream must carry (lock held)."""

    @abc.abstractmethod
    def _on_message(self, message: Any) -> None:
        """Handle one response."""

    @abc.abstractmethod
    def _on_refused(self, exc: KeelError) -> None:
        """etcd refused the stream with a definite error (permission, auth)."""
