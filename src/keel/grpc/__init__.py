"""gRPC services served and called by name: registration, health, drain, interceptors.

:class:`Server` serves generated servicers on grpc.aio with the standard health
and reflection services, registers the instance (scheme ``grpc``) once its own
health check answers, and drains on SIGTERM: ``NOT_SERVING`` and ``DRAINING``,
deregistered, stops accepting, finishes in-flight calls. Every call passes
:class:`KeelServerInterceptor`: the caller's deadline becomes keel's deadline,
its W3C trace context the parent of the server span, and the
``keel_grpc_server_*`` series and an access log line count it.

:class:`Channel` is a ``grpc.aio`` channel to every instance of one service,
found by name through discovery: generated stubs take it as they take
``grpc.aio.insecure_channel(...)``; each call is balanced, budget-retried where
safe, and guarded by a breaker per instance. See ``docs/grpc.md``.
"""

from keel.grpc._channel import Channel, ChannelStatistics
from keel.grpc._errors import ChannelRpcError, CircuitOpenRpcError, NoInstanceRpcError
from keel.grpc._interceptors import KeelServerInterceptor
from keel.grpc._metrics import GrpcMetrics, grpc_metrics
from keel.grpc._server import Server
from keel.grpc._settings import ChannelSettings

__all__ = [
    "Channel",
    "ChannelRpcError",
    "ChannelSettings",
    "ChannelStatistics",
    "CircuitOpenRpcError",
    "GrpcMetrics",
    "KeelServerInterceptor",
    "NoInstanceRpcError",
    "Server",
    "grpc_metrics",
]
