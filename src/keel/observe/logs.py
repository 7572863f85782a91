"""Structured JSON logs with trace ids, through structlog, for keel and the application.

One configuration for both worlds: structlog loggers (``structlog.get_logger()``)
and the standard library's (keel's own modules log through ``logging``) end in
the same processor chain, so every line is one JSON object with ``timestamp``,
``level``, ``logger``, ``event``, the ``service`` and ``instance`` ids, and
``trace_id``/``span_id`` when a span is current (:func:`add_trace_ids`).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from keel.errors import ValidationError
from keel.observe.tracing import current_ids

__all__ = ["add_trace_ids", "setup_logging"]

_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_HANDLER_NAME = "keel-json"


def add_trace_ids(
    logger: WrappedLogger, method_name: str, event_dict: EventDict
) -> MutableMapping[str, Any]:
    """structlog processor: add ``trace_id`` and ``span_id`` of the current span, if any."""
    ids = current_ids()
    if ids is not None:
        event_dict.setdefault("trace_id", ids[0])
        event_dict.setdefault("span_id", ids[1])
    return event_dict


def setup_logging(
    *,
    service: str = "",
    instance: str = "",
    level: str = "INFO",
    json: bool = True,
    stream: TextIO | None = None,
) -> None:
    """Route structlog and standard logging through one JSON (or console) renderer.

    Calling it again replaces the previous configuration (idempotent).

    Args:
        service: added to every line as ``service``.
        instance: added to every line as ``instance``.
        level: the root level, ``DEBUG`` .. ``CRITICAL``.
        json: one JSON object per line (False: structlog's console renderer).
        stream: where lines go (default: stderr).

    Raises:
        ValidationError: an unknown level.
    """
    level = level.upper()
    if level not in _LEVELS:
        raise ValidationError(f"log level {level!r}: use one of {', '.join(_LEVELS)}")
    static = {k: v for k, v in (("service", service), ("instance", instance)) if v}

    def add_ids(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        for key, value in static.items():
            event_dict.setdefault(key, value)
        return event_dict

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_ids,
        add_trace_ids,
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    renderer: Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
