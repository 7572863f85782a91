"""The registry's one boundary for records read from the store.

Two record types live under the registry's keys, and each has one decoder:

- ``services/<service>/<instance-id>`` → :func:`decode_instance` → :class:`Instance`
- ``health/<service>/<instance-id>`` → :func:`decode_health_mark` → :class:`HealthMark`

Both raise :class:`~keel.errors.ValidationError` for *anything* they do not
accept (never ``AttributeError``, ``RecursionError`` or ``OverflowError``), so
a reader that calls them through :func:`keel._records.decode` skips and counts
the record and keeps going. The key is authoritative for the service and the
id; the body is strict about types: strings are strings, the port and weight
whole numbers in range (never booleans), tags a list of strings, metadata a
flat object whose values are strings (numbers from other languages are kept
as their JSON text), the status ``UP`` or ``DRAINING``, the check an object
of the documented fields. Fields keel does not know are ignored.

A health check asking for probes more often than :data:`MIN_CHECK_INTERVAL_S`
(or a timeout under :data:`MIN_CHECK_TIMEOUT_S`) is *clamped* to the floor
with a warning rather than rejected: the instance is still discovered and
probed, just not more than once a second. (The API refuses such a check at
``register()``.)
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from keel._records import load_json_object
from keel.errors import ValidationError
from keel.registry._model import (
    HEALTH,
    ID_RE,
    MAX_VALUE,
    MIN_CHECK_INTERVAL_S,
    MIN_CHECK_TIMEOUT_S,
    SERVICES,
    UP,
    HealthCheck,
    Instance,
    check_service_name,
    is_number,
    show,
)

__all__ = [
    "HEALTH_AREA",
    "REGISTRY_AREA",
    "HealthMark",
    "decode_health_mark",
    "decode_instance",
    "split_key",
    "warn_limited",
]

T = TypeVar("T")

REGISTRY_AREA = "registry"
"""The ``area`` label of rejected instance records."""
HEALTH_AREA = "health"
"""The ``area`` label of rejected health marks."""

log = logging.getLogger("keel.registry")
_WARN_EVERY_S = 60.0
_warned: dict[str, float] = {}
_MAX_SINCE = 1e11  # seconds since the epoch (the year 5138)


@dataclass(frozen=True, slots=True)
class HealthMark:
    """The health checker's verdict on one instance (``health/<service>/<instance-id>``).

    Attributes:
        service: the service, from the key.
        instance_id: the instance id, from the key.
        failing: True when the mark says ``failing``.
        reason: why the last probes failed.
        since: when it was marked (seconds since the epoch), if known.
        checker: the checker that wrote the mark.
    """

    service: str
    instance_id: str
    failing: bool
    reason: str = ""
    since: float | None = None
    checker: str = ""


def split_key(key: str, area: str) -> tuple[str, str]:
    """``(service, instance_id)`` of ``<area><service>/<instance-id>``, or ValidationError."""
    service, sep, instance_id = key.removeprefix(area).partition("/")
    if not key.startswith(area) or not sep or not ID_RE.fullmatch(instance_id):
        raise ValidationError(
            f"key {show(key)} is not {area}<service>/<instance-id> with an id of letters, "
            f"digits and . _ : @ [ ] -"
        )
    check_service_name(service)
    return service, instance_id


def decode_instance(key: str, value: bytes) -> Instance:
    """Decode a record from ``services/<service>/<instance-id>``.

    Raises:
        ValidationError: the key or the record is malformed (every failure).
    """
    return _guarded(_instance, key, value)


def decode_health_mark(key: str, value: bytes) -> HealthMark:
    """Decode a record from ``health/<service>/<instance-id>``.

    Raises:
        ValidationError: the key or the record is malformed (every failure).
    """
    return _guarded(_mark, key, value)


def _guarded(decoder: Callable[[str, bytes], T], key: str, value: bytes) -> T:
    try:
        result = decoder(key, value)
    except ValidationError:
        raise
    except RecursionError as exc:
        raise ValidationError("nested too deep") from exc
    except Exception as exc:  # untrusted input: every failure is a malformed record
        raise ValidationError(f"{type(exc).__name__}: {exc}"[:200]) from exc
    return result


def _instance(key: str, value: bytes) -> Instance:
    service, instance_id = split_key(key, SERVICES)
    record = load_json_object(value)
    for name in ("service", "id"):  # the key wins; a body copy must at least be a string
        if not isinstance(record.get(name, ""), str):
            raise ValidationError(f"{name} must be a string")
    if "address" not in record or "port" not in record:
        raise ValidationError("address and port are required")
    return Instance(
        service=service,
        address=record["address"],
        port=record["port"],
        id=instance_id,
        scheme=_opt(record, "scheme", "http"),
        weight=_opt(record, "weight", 100),
        zone=_opt(record, "zone", ""),
        version=_opt(record, "version", ""),
        tags=_tags(record.get("tags")),
        metadata=_metadata(record.get("metadata")),
        status=_opt(record, "status", UP),
        registered_at=_when(record.get("registered_at")),
        check=_check(key, record.get("check")),
    )


def _opt(record: dict[str, Any], name: str, default: object) -> Any:
    value = record.get(name)
    return default if value is None else value


def _tags(raw: object) -> tuple[Any, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ValidationError("tags must be a JSON list of strings")
    return tuple(raw)


def _metadata(raw: object) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ValidationError("metadata must be a JSON object of strings")
    return {k: _meta_value(k, v) for k, v in raw.items()}


def _meta_value(key: str, value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**63:
        return str(value)
    if isinstance(value, float):
        return json.dumps(value)  # msgspec never yields NaN or infinity
    raise ValidationError(f"metadata[{show(key)}] must be a string or a number")


def _when(raw: object) -> datetime | None:
    if raw is None:
        return None
    if not isinstance(raw, str) or len(raw) > 64:
        raise ValidationError("registered_at must be an ISO 8601 date-time string")
    when = datetime.fromisoformat(raw)
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _check(key: str, raw: object) -> HealthCheck | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ValidationError("check must be a JSON object")
    interval, timeout = _opt(raw, "interval_s", 5.0), _opt(raw, "timeout_s", 2.0)
    asked = (interval, timeout)
    if is_number(interval) and 0 < interval < MIN_CHECK_INTERVAL_S:
        interval = MIN_CHECK_INTERVAL_S
    if is_number(timeout) and 0 < timeout < MIN_CHECK_TIMEOUT_S:
        timeout = MIN_CHECK_TIMEOUT_S
    check = HealthCheck(
        type=_opt(raw, "type", "http"),
        path=_opt(raw, "path", "/healthz"),
        interval_s=interval,
        timeout_s=timeout,
        rise=_opt(raw, "rise", 2),
        fall=_opt(raw, "fall", 3),
    )
    if (interval, timeout) != asked:
        _warn_clamped(key, asked, check)
    return check


def warn_limited(key: str, message: str, *args: object) -> None:
    """Log a warning about ``key`` at most once a minute."""
    now = time.monotonic()
    if now - _warned.get(key, -_WARN_EVERY_S) < _WARN_EVERY_S:
        return
    if len(_warned) >= 4096:
        _warned.clear()
    _warned[key] = now
    log.warning(message, *args)


def _warn_clamped(key: str, asked: tuple[Any, Any], check: HealthCheck) -> None:
    warn_limited(
        f"clamped {key}",
        "health check of %s asks for interval_s=%s timeout_s=%s; probing every %ss with a "
        "%ss timeout (the floors are %ss and %ss): raise them in the record",
        key,
        show(asked[0]),
        show(asked[1]),
        check.interval_s,
        check.timeout_s,
        MIN_CHECK_INTERVAL_S,
        MIN_CHECK_TIMEOUT_S,
    )


def _mark(key: str, value: bytes) -> HealthMark:
    service, instance_id = split_key(key, HEALTH)
    record = load_json_object(value)
    status = record.get("status")
    if not isinstance(status, str) or status not in ("failing", "passing"):
        raise ValidationError(f"status {show(status)}: use 'failing' (or delete the mark)")
    reason, checker, since = record.get("reason"), record.get("checker"), record.get("since")
    for name, text in (("reason", reason), ("checker", checker)):
        if text is not None and (not isinstance(text, str) or len(text) > MAX_VALUE):
            raise ValidationError(f"{name} must be a string of at most {MAX_VALUE} characters")
    if since is not None and not (is_number(since) and 0 <= since <= _MAX_SINCE):
        raise ValidationError("since must be seconds since the epoch")
    return HealthMark(
        service=service,
        instance_id=instance_id,
        failing=status == "failing",
        reason=reason or "",
        since=None if since is None else float(since),
        checker=checker or "",
    )
