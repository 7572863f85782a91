"""The service runtime: any ASGI app on a real server, registered when ready, drained on exit.

:class:`Service` binds a port, runs the app under uvicorn in the caller's
event loop, answers ``/healthz`` ``/readyz`` ``/metrics``, registers the
instance once startup and readiness passed, and on SIGTERM marks it
DRAINING, deregisters, stops accepting and drains in-flight requests.
:class:`KeelMiddleware` (also usable alone) reads the caller's deadline and
trace context. See ``docs/services.md``.
"""

from keel.service._asgi import DEADLINE_HEADER, ERROR_HEADER, KeelMiddleware, Probe, parse_deadline
from keel.service._service import Service
from keel.service._settings import ServiceSettings

__all__ = [
    "DEADLINE_HEADER",
    "ERROR_HEADER",
    "KeelMiddleware",
    "Probe",
    "Service",
    "ServiceSettings",
    "parse_deadline",
]
