"""Call services by name: ``http://orders/path`` through discovery, balancing and resilience.

:class:`Client` is an ``httpx.AsyncClient`` whose :class:`DiscoveryTransport`
resolves service names from the registry's watch-fed cache, picks an instance
(outlier ejection around peak-EWMA power-of-two-choices), applies a timeout,
a budgeted retry (idempotent methods; others only when nothing was sent) and
a circuit breaker per instance, and propagates the deadline (``keel-deadline``)
and the W3C trace context. See ``docs/services.md``.
"""

from keel.http._client import Client
from keel.http._settings import IDEMPOTENT_METHODS, ClientSettings
from keel.http._transport import DiscoveryTransport, TransportStatistics

__all__ = [
    "IDEMPOTENT_METHODS",
    "Client",
    "ClientSettings",
    "DiscoveryTransport",
    "TransportStatistics",
]
