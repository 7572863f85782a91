"""The member in use: channels, TLS, the auth token, and failover between endpoints.

aetcd's ``Client`` opens one insecure channel to one endpoint, so keel owns
its channels instead: one ``grpc.aio`` channel (plain or TLS) to the member
in use, moved to the next endpoint when that member dies, stops answering or
loses its leader. Every unary call and both long-lived streams (watch,
keepalive) go through one :class:`Connection`, so they all follow the same
member.

The retry rule (see :mod:`._errors` for how failures are sorted):

- a call that certainly was not applied (the member could not be connected,
  or refused the request before proposing it: "no leader", "too many
  requests", an expired token) is tried again, on the next member if needed;
- a read whose member failed mid-call is tried again on the next member;
- a write whose member failed mid-call has an unknown outcome: it is never
  resent; the caller gets :class:`StoreUnavailableError` saying so, and the
  next call goes to another member.

All of it is bounded by ``timeout_s`` per call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from aetcd import rpc

from keel.backends.etcd._errors import Failure, classify, translate, unknown_outcome
from keel.backends.etcd._settings import EtcdSettings
from keel.backends.etcd._tls import definite_failure, diagnose
from keel.errors import KeelError, StoreClosedError, StoreUnavailableError
from keel.observe._component_metrics import component_metrics

__all__ = ["Connection", "EtcdStatistics", "Member"]

T = TypeVar("T")
_READY = grpc.ChannelConnectivity.READY
_BROKEN = (grpc.ChannelConnectivity.TRANSIENT_FAILURE, grpc.ChannelConnectivity.SHUTDOWN)
_BACKOFF_S = (0.05, 0.1, 0.2, 0.4, 0.5)


@dataclass(frozen=True, slots=True)
class EtcdStatistics:
    """Counters of one etcd connection.

    Attributes:
        endpoint: the member in use.
        failovers: times the connection moved to another member (or reconnected).
        authentications: successful Authenticate calls.
        watch_streams_opened: Watch streams opened (one at a time, shared by every watch).
        keepalive_streams_opened: LeaseKeepAlive streams opened (one at a time).
    """

    endpoint: str
    failovers: int
    authentications: int
    watch_streams_opened: int
    keepalive_streams_opened: int


class Member:
    """One channel to one endpoint, with the generated stubs bound to it."""

    def __init__(self, endpoint: str, channel: grpc.aio.Channel, generation: int) -> None:
        self.endpoint = endpoint
        self.channel = channel
        self.generation = generation
        self.kv = rpc.KVStub(channel)
        self.lease = rpc.LeaseStub(channel)
        self.watch = rpc.WatchStub(channel)
        self.maintenance = rpc.MaintenanceStub(channel)
        self.auth = rpc.AuthStub(channel)

    def __repr__(self) -> str:
        state = self.channel.get_state(try_to_connect=False).name
        return f"<Member {self.endpoint} gen={self.generation} {state}>"


class Connection:
    """The channel to the member in use, with failover, auth and bounded calls.

    Args:
        settings: endpoints, timeout, TLS and credentials.
        root: the store's root prefix (bytes). The connect probe reads exactly
            this key, so a user allowed only the root prefix can connect.
    """

    def __init__(self, settings: EtcdSettings, *, root: bytes) -> None:
        self.settings = settings
        self.root = root
        self._prefix = root.decode("utf-8", "replace")
        self._credentials = settings.credentials()
        self._index = 0
        self._generation = 0
        self._member: Member | None = None
        self._moved = asyncio.Event()
        self._token: str | None = None
        self._auth_lock = asyncio.Lock()
        self._reasons: dict[str, str] = {}
        self._retiring: dict[Member, asyncio.Task[None]] = {}
        self._closed = False
        self.failovers = 0
        self.authentications = 0
        self.watch_streams_opened = 0
        self.keepalive_streams_opened = 0

    # -- the member in use ---------------------------------------------------

    @property
    def endpoint(self) -> str:
        """``host:port`` of the member in use."""
        return self.settings.endpoints[self._index]

    def _current(self) -> Member:
        if self._closed:
            raise StoreClosedError("etcd store is closed: connect again")
        if self._member is None:
            endpoint = self.endpoint
            options = self.settings.channel_options()
            if self._credentials is None:
                channel = grpc.aio.insecure_channel(endpoint, options=options)
            else:
                channel = grpc.aio.secure_channel(endpoint, self._credentials, options=options)
            self._member = Member(endpoint, channel, self._generation)
        return self._member

    def metadata(self, *, require_leader: bool = True) -> tuple[tuple[str, str], ...]:
        """Call metadata: the auth token, and etcd's require-leader flag.

        With ``hasleader`` a member without a leader refuses the call before
        doing anything (so it is safe to retry elsewhere) and cancels streams
        when it loses its leader, instead of serving stale data.
        """
        md: list[tuple[str, str]] = []
        if require_leader:
            md.append(("hasleader", "true"))
        if self._token is not None:
            md.append(("token", self._token))
        return tuple(md)

    async def fail(self, member: Member, reason: str) -> None:
        """Move off ``member`` (no-op if the connection already moved)."""
        self._reasons[member.endpoint] = reason
        if member is not self._member:
            return
        self._member = None
        self._index = (self._index + 1) % len(self.settings.endpoints)
        self._generation += 1
        self.failovers += 1
        component_metrics().endpoint("etcd", self.endpoint, previous=member.endpoint)
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()
        # In-flight unary calls on the old channel keep their own deadlines;
        # the streams follow `moved` and leave it at once.
        task = asyncio.get_running_loop().create_task(
            member.channel.close(grace=self.settings.timeout_s + 1.0),
            name=f"keel-etcd-retire-{member.endpoint}",
        )
        self._retiring[member] = task
        task.add_done_callback(lambda _: self._retiring.pop(member, None))

    async def wait_moved(self, member: Member) -> None:
        """Return once the connection has moved off ``member``."""
        while self._member is member and not self._closed:
            await self._moved.wait()

    async def _ready(self, member: Member, deadline: float) -> str | None:
        """Wait until ``member``'s channel is READY; return None, or why not."""
        loop = asyncio.get_running_loop()
        limit = min(deadline, loop.time() + max(1.0, self.settings.timeout_s / 4))
        state = member.channel.get_state(try_to_connect=True)
        while state is not _READY:
            if state in _BROKEN:
                return await self._why_broken(member)
            remaining = limit - loop.time()
            if remaining <= 0:
                return "did not complete a connection in time"
            try:
                async with asyncio.timeout(remaining):
                    await member.channel.wait_for_state_change(state)
            except TimeoutError:
                return "did not complete a connection in time"
            state = member.channel.get_state(try_to_connect=True)
        return None

    async def _why_broken(self, member: Member) -> str:
        """A failed channel answers a probe at once with the transport's reason."""
        try:
            await member.maintenance.Status(rpc.StatusRequest(), timeout=1.0)
        except grpc.aio.AioRpcError as exc:
            if classify(exc) is Failure.ANSWER:
                return ""  # etcd itself answered (e.g. Status needs the root role)
            return str(exc.details() or exc.code().name)
        except grpc.aio.UsageError:
            return "the connection was retired after a failover"
        return ""

    async def member(self, deadline: float) -> Member:
        """The member in use, connected, failing over until ``deadline``."""
        member = self._member
        if member is not None and not self._closed and member.channel.get_state() is _READY:
            return member  # the common case: no coroutine, no wait
        loop = asyncio.get_running_loop()
        tried = 0
        while True:
            member = self._current()
            reason = await self._ready(member, deadline)
            if reason is None:
                return member
            if reason == "":  # the probe got through: the channel came back
                continue
            await self.fail(member, reason)
            tried += 1
            if loop.time() >= deadline:
                raise self._unreachable()
            if tried % len(self.settings.endpoints) == 0:
                pause = _BACKOFF_S[min(tried // len(self.settings.endpoints), 4)]
                await asyncio.sleep(min(pause, max(0.0, deadline - loop.time())))

    def _definite(self, endpoint: str, reason: str) -> KeelError | None:
        return definite_failure(endpoint, reason, self.settings)

    def _unreachable(self) -> KeelError:
        for endpoint, reason in self._reasons.items():
            if (error := self._definite(endpoint, reason)) is not None:
                return error
        listed = "; ".join(
            f"{e} ({self._reasons.get(e, 'not tried')})" for e in self.settings.endpoints
        )
        return StoreUnavailableError(
            f"no etcd endpoint answered within {self.settings.timeout_s:g}s: {listed}: "
            f"check the endpoints in the store URL and that etcd is running"
        )

    # -- calls ---------------------------------------------------------------

    async def call(
        self,
        method: Callable[[Member], Callable[..., Awaitable[T]]],
        request: Any,
        *,
        what: str,
        idempotent: bool,
    ) -> T:
        """Make one unary call under the retry rule of this module; see its docstring."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.timeout_s
        reauthenticated = False
        attempt = 0
        while True:
            member = await self.member(deadline)
            remaining = max(0.01, deadline - loop.time())
            if idempotent and len(self.settings.endpoints) > 1:
                remaining = min(remaining, max(1.0, self.settings.timeout_s / 2))
            token = self._token
            try:
                return await method(member)(request, timeout=remaining, metadata=self.metadata())
            except grpc.aio.UsageError:
                continue  # another task retired this channel before the call went out
            except grpc.aio.AioRpcError as exc:
                kind = classify(exc)
                if kind is Failure.TOKEN and not reauthenticated and self.settings.user:
                    reauthenticated = True
                    await self.reauthenticate(token, deadline)
                    continue
                if kind in (Failure.ANSWER, Failure.TOKEN):
                    raise translate(exc, member.endpoint, what, root=self._prefix) from exc
                await self.fail(member, str(exc.details()))
                if kind is Failure.LOST and not idempotent:
                    raise unknown_outcome(exc, member.endpoint, what) from exc
                if loop.time() >= deadline:
                    raise StoreUnavailableError(
                        f"etcd did not complete {what} within {self.settings.timeout_s:g}s "
                        f"(last: {member.endpoint}: {exc.details()})"
                    ) from exc
                await asyncio.sleep(min(_BACKOFF_S[min(attempt, 4)], deadline - loop.time()))
                attempt += 1

    # -- auth ----------------------------------------------------------------

    async def _authenticate(self, member: Member, deadline: float) -> None:
        assert self.settings.user is not None and self.settings.password is not None
        request = rpc.AuthenticateRequest(name=self.settings.user, password=self.settings.password)
        timeout = max(0.01, deadline - asyncio.get_running_loop().time())
        try:
            response = await member.auth.Authenticate(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            if classify(exc) is Failure.ANSWER:
                raise translate(exc, member.endpoint, "authenticate") from exc
            raise
        self._token = str(response.token)
        self.authentications += 1

    async def reauthenticate(self, stale: str | None, deadline: float) -> None:
        """Get a new token unless another task already replaced ``stale``."""
        async with self._auth_lock:
            if self._token != stale:
                return
            member = await self.member(deadline)
            try:
                await self._authenticate(member, deadline)
            except grpc.aio.AioRpcError as exc:
                await self.fail(member, str(exc.details()))
                raise StoreUnavailableError(
                    f"etcd at {member.endpoint} failed to authenticate: {exc.details()}"
                ) from exc

    async def connect(self) -> None:
        """Find a member that answers (authenticating if a user is set), within the timeout.

        Endpoints are tried in turn until one answers; a certificate problem
        or refused credentials end the search at once.

        Raises:
            StoreUnavailableError: no endpoint answered; the message lists each one's reason.
            AuthError: bad credentials, or a TLS certificate problem.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.timeout_s
        tried = 0
        asked: set[str] = set()
        while True:
            member = self._current()
            reason = await self._ready(member, deadline)
            if reason is None:
                try:
                    await self._probe(member, deadline)
                    component_metrics().endpoint("etcd", member.endpoint)
                    return
                except grpc.aio.AioRpcError as exc:
                    reason = str(exc.details())
            error = await diagnose(member.endpoint, reason or "", self.settings, asked)
            if error is not None:
                raise error
            await self.fail(member, reason or "did not answer")
            tried += 1
            if loop.time() >= deadline:
                raise self._unreachable()
            if tried % len(self.settings.endpoints) == 0:
                await asyncio.sleep(min(0.2, max(0.0, deadline - loop.time())))

    async def _probe(self, member: Member, deadline: float) -> None:
        if self.settings.user is not None:
            await self._authenticate(member, deadline)
        timeout = max(0.01, deadline - asyncio.get_running_loop().time())
        # The root key itself: inside the prefix a least-privilege role is
        # granted (``--prefix=true readwrite /keel/``), unlike any key outside it.
        request = rpc.RangeRequest(key=self.root, count_only=True)
        try:
            await member.kv.Range(request, timeout=timeout, metadata=self.metadata())
        except grpc.aio.AioRpcError as exc:
            if classify(exc) in (Failure.ANSWER, Failure.TOKEN):
                what = f"reading {self._prefix} (the connect probe)"
                raise translate(exc, member.endpoint, what, root=self._prefix) from exc
            raise

    async def close(self) -> None:
        """Close every channel at once (in-flight calls fail)."""
        self._closed = True
        self._moved.set()
        member, self._member = self._member, None
        if member is not None:
            await member.channel.close()
        retiring, self._retiring = dict(self._retiring), {}
        for old, task in retiring.items():
            task.cancel()
            await old.channel.close()
        await asyncio.gather(*retiring.values(), return_exceptions=True)

    def statistics(self) -> EtcdStatistics:
        """A snapshot of the connection's counters."""
        return EtcdStatistics(
            endpoint=self.endpoint,
            failovers=self.failovers,
            authentications=self.authentications,
            watch_streams_opened=self.watch_streams_opened,
            keepalive_streams_opened=self.keepalive_streams_opened,
        )

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (
            f"<Connection {self.endpoint} of {len(self.settings.endpoints)} "
            f"failovers={self.failovers} {state}>"
        )
