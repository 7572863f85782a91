"""The gateway's access log: one structured line per request, through structlog.

Each line is the event ``request`` on the logger ``keel.gateway.access`` with
``request_id``, ``route`` (``-`` when none matched), ``method``, ``path``,
``status``, ``duration_ms``, ``consumer`` (None when anonymous), ``client``
(the client address, believed through trusted proxies only), ``upstream``
(the service or URL the request went to, None for gateway answers),
``bytes_in`` and ``bytes_out`` (body bytes), and ``reason`` when the gateway
answered itself (``not_found``, ``limited``...). With
:func:`keel.observe.setup_logging` it is one JSON object per line, with trace
ids when a span is current.

The query string is not logged: it often carries tokens.
"""

from __future__ import annotations

from typing import Any

import structlog

__all__ = ["ACCESS_LOGGER", "AccessLog", "AccessRecord"]

ACCESS_LOGGER = "keel.gateway.access"
"""The name of the access log's logger."""


class AccessRecord:
    """What one request did, filled in by the app as it goes (one per request)."""

    __slots__ = (
        "bytes_in",
        "bytes_out",
        "client",
        "consumer",
        "method",
        "path",
        "reason",
        "request_id",
        "route",
        "status",
        "upstream",
    )

    def __init__(self, request_id: str, method: str, path: str) -> None:
        self.request_id = request_id
        self.method = method
        self.path = path
        self.route = "-"
        self.status = 0
        self.consumer: str | None = None
        self.client: str | None = None
        self.upstream: str | None = None
        self.reason: str | None = None
        self.bytes_in = 0
        self.bytes_out = 0

    def __repr__(self) -> str:
        return (
            f"<AccessRecord {self.request_id} {self.method} {self.path} {self.route} {self.status}>"
        )


class AccessLog:
    """Writes access log lines (or nothing, when ``enabled`` is false).

    Args:
        enabled: whether to write lines at all (a busy gateway may rely on metrics).
        logger: a structlog logger (default: ``structlog.get_logger(ACCESS_LOGGER)``).
    """

    def __init__(self, *, enabled: bool = True, logger: Any = None) -> None:
        self.enabled = enabled
        self._log = logger if logger is not None else structlog.get_logger(ACCESS_LOGGER)

    def write(self, record: AccessRecord, duration_s: float) -> None:
        """Write the line of one finished request."""
        if not self.enabled:
            return
        e = record
        fields: dict[str, Any] = {
            "request_id": e.request_id,
            "route": e.route,
            "method": e.method,
            "path": e.path,
            "status": e.status,
            "duration_ms": round(duration_s * 1000.0, 3),
            "consumer": e.consumer,
            "client": e.client,
            "upstream": e.upstream,
            "bytes_in": e.bytes_in,
            "bytes_out": e.bytes_out,
        }
        if e.reason is not None:
            fields["reason"] = e.reason
        self._log.info("request", **fields)

    def __repr__(self) -> str:
        return f"AccessLog(enabled={self.enabled})"
