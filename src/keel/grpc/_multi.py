"""The multicallables a keel Channel gives generated stubs (grpc.aio's shapes)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc

from keel.grpc._calls import Spec, UnaryCall
from keel.grpc._streams import UnaryStreamCall, start_stream

if TYPE_CHECKING:
    from keel.grpc._channel import Channel

__all__ = ["StreamMultiCallable", "UnaryStreamMultiCallable", "UnaryUnaryMultiCallable"]


class UnaryUnaryMultiCallable(grpc.aio.UnaryUnaryMultiCallable):  # type: ignore[misc]
    """Calls one unary method through a :class:`Channel`."""

    def __init__(self, channel: Channel, spec: Spec) -> None:
        self._channel = channel
        self._spec = spec
        self._idempotent = spec.method in channel.settings.idempotent_methods

    def __call__(
        self,
        request: Any,
        *,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
        idempotent: bool | None = None,
    ) -> UnaryCall:
        """Start the call (it runs when awaited); ``idempotent=True`` allows retries."""
        return UnaryCall(
            self._channel,
            self._spec,
            request,
            timeout=timeout,
            metadata=metadata,
            extra={
                "credentials": credentials,
                "wait_for_ready": wait_for_ready,
                "compression": compression,
            },
            idempotent=self._idempotent if idempotent is None else idempotent,
        )


class UnaryStreamMultiCallable(grpc.aio.UnaryStreamMultiCallable):  # type: ignore[misc]
    """Calls one server-streaming method through a :class:`Channel`."""

    def __init__(self, channel: Channel, spec: Spec) -> None:
        self._channel = channel
        self._spec = spec

    def __call__(
        self,
        request: Any,
        *,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> UnaryStreamCall:
        """Start the stream on one instance.

        Raises:
            grpc.aio.AioRpcError: UNAVAILABLE when no instance is usable.
        """
        return UnaryStreamCall(
            self._channel,
            self._spec,
            request,
            timeout=timeout,
            metadata=metadata,
            extra={
                "credentials": credentials,
                "wait_for_ready": wait_for_ready,
                "compression": compression,
            },
        )


class StreamMultiCallable(
    grpc.aio.StreamUnaryMultiCallable,  # type: ignore[misc]  # grpc is untyped
    grpc.aio.StreamStreamMultiCallable,  # type: ignore[misc]
):
    """Calls one client- or bidi-streaming method through a :class:`Channel`."""

    def __init__(self, channel: Channel, spec: Spec, kind: str) -> None:
        self._channel = channel
        self._spec = spec
        self._kind = kind

    def __call__(
        self,
        request_iterator: Any = None,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        """Start the stream on one instance; returns grpc.aio's call.

        Raises:
            grpc.aio.AioRpcError: UNAVAILABLE when no instance is usable.
        """
        return start_stream(
            self._channel,
            self._kind,
            self._spec,
            request_iterator,
            timeout=timeout,
            metadata=metadata,
            extra={
                "credentials": credentials,
                "wait_for_ready": wait_for_ready,
                "compression": compression,
            },
        )
