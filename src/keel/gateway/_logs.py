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

Going through structlog and the standard library's handlers costs about
150 us a line with keel's JSON setup, more than the rest of a proxied request;
so a gateway run from the command line gives :class:`AccessLog` a ``stream``:
each line is then one JSON object (the same fields, plus ``timestamp``,
``level``, ``logger``, ``service`` and the trace ids) encoded with msgspec and
written straight to the stream, about 5 us, flushed at least once a second.

The query string is not logged: it often carries tokens.
"""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime
from typing import Any, TextIO

import msgspec
import structlog

from keel.observe import current_ids

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

    def __init__(
        self,
        request_id: str,
        method: str,
        path: str,
        client: str | None = None,
        route: str = "-",
        upstream: str | None = None,
    ) -> None:
        self.request_id = request_id
        self.method = method
        self.path = path
        self.route = route
        self.status = 0
        self.consumer: str | None = None
        self.client = client
        self.upstream = upstream
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
        stream: write JSON lines straight to this stream (fast); None: through structlog.
        service: the ``service`` field of stream lines.
        logger: a structlog logger (default: ``structlog.get_logger(ACCESS_LOGGER)``).
        flush_s: longest time a stream line waits in the stream's buffer.
    """

    def __init__(
        self,
        *,
        enabled: bool = True,
        stream: TextIO | None = None,
        service: str = "",
        logger: Any = None,
        flush_s: float = 1.0,
    ) -> None:
        self.enabled = enabled
        self.stream = stream
        self.service = service
        self._log = logger if logger is not None else structlog.get_logger(ACCESS_LOGGER)
        self._encode = msgspec.json.Encoder().encode
        self._flush_s = flush_s
        self._flushed = time.monotonic()

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
        if self.stream is None:
            self._log.info("request", **fields)
        else:
            self._line(fields)

    def _line(self, fields: dict[str, Any]) -> None:
        stamp = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
        line = {"timestamp": stamp, "level": "info", "logger": ACCESS_LOGGER, "event": "request"}
        if self.service:
            line["service"] = self.service
        line.update(fields)
        ids = current_ids()
        if ids is not None:
            line["trace_id"], line["span_id"] = ids
        assert self.stream is not None
        with contextlib.suppress(OSError, ValueError):  # closed, or a broken pipe
            self.stream.write(self._encode(line).decode() + "\n")
        now = time.monotonic()
        if now - self._flushed >= self._flush_s:
            self.flush()

    def flush(self) -> None:
        """Flush the stream (no-op without one)."""
        self._flushed = time.monotonic()
        if self.stream is not None:
            with contextlib.suppress(OSError, ValueError):  # closed, or a broken pipe
                self.stream.flush()

    def __repr__(self) -> str:
        where = "structlog" if self.stream is None else "stream"
        return f"AccessLog(enabled={self.enabled}, to={where})"
