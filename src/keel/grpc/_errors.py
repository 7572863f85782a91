"""Errors the channel raises itself, shaped as gRPC errors.

Code written against generated stubs catches ``grpc.aio.AioRpcError`` and
looks at ``code()``; code written against keel catches keel's errors. The
channel's own refusals are both: an ``AioRpcError`` with the status a gRPC
client would see, that is also the matching :mod:`keel.errors` class.
"""

from __future__ import annotations

import grpc

from keel.errors import CircuitOpenError, KeelError, NoInstanceError

__all__ = ["ChannelRpcError", "CircuitOpenRpcError", "NoInstanceRpcError", "rpc_error"]


class ChannelRpcError(grpc.aio.AioRpcError, KeelError):  # type: ignore[misc]  # grpc is untyped
    """A call the channel ended itself (deadline passed, channel closed...)."""


class NoInstanceRpcError(grpc.aio.AioRpcError, NoInstanceError):  # type: ignore[misc]  # grpc is untyped
    """UNAVAILABLE: the service has no usable instance (also a NoInstanceError)."""


class CircuitOpenRpcError(grpc.aio.AioRpcError, CircuitOpenError):  # type: ignore[misc]  # grpc is untyped
    """UNAVAILABLE: every instance's breaker is open (also a CircuitOpenError)."""


def rpc_error(
    code: grpc.StatusCode, details: str, kind: type[grpc.aio.AioRpcError] = ChannelRpcError
) -> grpc.aio.AioRpcError:
    """An AioRpcError of class ``kind`` with ``code`` and ``details`` and empty metadata."""
    return kind(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details, None)
