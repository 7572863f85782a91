"""gRPC services served and called by name: registration, health, drain, interceptors.

:class:`Server` serves generated servicers on grpc.aio with the standard health
and reflection services, registers the instance (scheme ``grpc``) once its own
health check answers, and drains on SIGTERM: ``NOT_SERVING`` and ``DRAINING``,
deregistered, stops accepting, finishes in-flight calls. Every call passes
:class:`KeelServerInterceptor`: the caller's deadline becomes keel's deadline,
its W3C trace context the parent of the server span, and the
``keel_grpc_server_*`` series and an access log line count it. See ``docs/grpc.md``.
"""

from keel.grpc._interceptors import KeelServerInterceptor
from keel.grpc._metrics import GrpcMetrics, grpc_metrics
from keel.grpc._server import Server

__all__ = [
    "GrpcMetrics",
    "KeelServerInterceptor",
    "Server",
    "grpc_metrics",
]
