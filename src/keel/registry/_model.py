"""The instance record: what a service registers, validated, as readable JSON.

Layout (documented in docs/registry.md so services in any language can join)::

    services/<service>/<instance-id>   → Instance JSON, on the owner's session lease
    health/<service>/<instance-id>     → {"status": "failing", ...} from the health checker

The records are decoded in ``_decode.py`` (the one boundary for untrusted
records); this module holds the types and the rules both the API and the
decoder enforce.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from keel.errors import ValidationError

if TYPE_CHECKING:
    from keel.registry._overrides import Override

__all__ = [
    "DRAINING",
    "MAX_CHECK_INTERVAL_S",
    "MIN_CHECK_INTERVAL_S",
    "MIN_CHECK_TIMEOUT_S",
    "UP",
    "HealthCheck",
    "Instance",
    "Status",
    "check_address",
    "check_service_name",
    "check_target",
    "default_instance_id",
    "encode_instance",
    "health_key",
    "instance_key",
    "service_prefix",
]

Status = Literal["UP", "DRAINING"]
UP: Status = "UP"
DRAINING: Status = "DRAINING"

SERVICES = "services/"
HEALTH = "health/"
_SERVICE_RE = re.compile(r"[a-z0-9][a-z0-9.-]{0,127}")
ID_RE = re.compile(r"[A-Za-z0-9._:@\[\]-]{1,200}")
_LABEL_RE = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOST_RE = re.compile(rf"{_LABEL_RE}(?:\.{_LABEL_RE})*\.?")  # RFC 1123 names (and '_')
_SCHEMES = frozenset({"http", "https", "grpc", "grpcs", "tcp"})


def service_prefix(service: str) -> str:
    """``services/<service>/``."""
    return f"{SERVICES}{service}/"


def instance_key(service: str, instance_id: str) -> str:
    """``services/<service>/<instance-id>``."""
    return f"{SERVICES}{service}/{instance_id}"


def health_key(service: str, instance_id: str) -> str:
    """``health/<service>/<instance-id>``."""
    return f"{HEALTH}{service}/{instance_id}"


def check_service_name(service: object) -> str:
    """Return ``service`` if it is a valid service name, else raise ValidationError."""
    if not isinstance(service, str) or not _SERVICE_RE.fullmatch(service):
        raise ValidationError(
            f"service name {show(service)} is not valid: use lowercase letters, digits, '.' and "
            f"'-', starting with a letter or digit (e.g. 'orders' or 'payments.v2')"
        )
    return service


def default_instance_id(address: str, port: int) -> str:
    """A stable id from the address and port (``10.0.0.5:8080``, ``[::1]:8080``)."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


MIN_CHECK_INTERVAL_S = 1.0
"""The shortest health-check interval: one probe a second per instance at most."""
MIN_CHECK_TIMEOUT_S = 0.1
"""The shortest probe timeout (shorter ones fail healthy instances on a busy host)."""
MAX_CHECK_INTERVAL_S = 86_400.0
"""The longest health-check interval (a day)."""
MAX_ADDRESS = 253
MAX_LABEL = 256  # zone, version, a tag, a metadata key
MAX_VALUE = 16_384  # one metadata value
MAX_ITEMS = 256  # tags, metadata entries
MAX_PATH = 2048


def show(value: object) -> str:
    """A short, safe repr of an untrusted value for an error message."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return "a number too large"
    text = repr(value)
    return text if len(text) <= 60 else text[:59] + "…"


def is_number(value: object) -> bool:
    """True for an int or float that is not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _whole(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _printable(text: str) -> bool:
    return all(32 < ord(c) != 127 for c in text)


def check_target(path: object) -> str:
    """Return ``path`` if it is a valid check target: ``/path`` or an ``http(s)://`` URL."""
    if not isinstance(path, str) or not path or len(path) > MAX_PATH or not _printable(path):
        raise ValidationError(
            f"check.path {show(path)}: give a path such as '/healthz' (no spaces or "
            f"control characters, at most {MAX_PATH} characters)"
        )
    if path.startswith("/"):
        return path
    parts = urlsplit(path)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in ("http", "https") or not parts.hostname or port == -1:
        raise ValidationError(
            f"check.path {show(path)} must start with '/' (a path on the instance), or be "
            f"an http:// or https:// URL (probed only by checkers that allow other targets)"
        )
    return path


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthCheck:
    """How the health checker probes an instance.

    Attributes:
        type: ``http`` (GET ``path``, healthy on 2xx/3xx) or ``tcp`` (connect).
        path: the HTTP path on the instance's own address and port; a full
            ``http(s)://`` URL is accepted but probed only by a checker started
            with ``allow_other_targets=True``.
        interval_s: seconds between probes, from 1 (:data:`MIN_CHECK_INTERVAL_S`)
            to 86400.
        timeout_s: a probe slower than this fails; from 0.1
            (:data:`MIN_CHECK_TIMEOUT_S`) to ``interval_s``.
        rise: consecutive successes that mark a failing instance healthy again.
        fall: consecutive failures that mark an instance failing.

    Raises:
        ValidationError: a field is out of range or of the wrong type.
    """

    type: Literal["http", "tcp"] = "http"
    path: str = "/healthz"
    interval_s: float = 5.0
    timeout_s: float = 2.0
    rise: int = 2
    fall: int = 3

    def __post_init__(self) -> None:
        if self.type not in ("http", "tcp"):
            raise ValidationError(f"check.type {show(self.type)}: use 'http' or 'tcp'")
        check_target(self.path)
        interval, timeout = self.interval_s, self.timeout_s
        if not (is_number(interval) and MIN_CHECK_INTERVAL_S <= interval <= MAX_CHECK_INTERVAL_S):
            raise ValidationError(
                f"check.interval_s {show(interval)}: use a number of seconds from "
                f"{MIN_CHECK_INTERVAL_S} to {MAX_CHECK_INTERVAL_S:.0f} (the checker probes "
                f"each instance at most once a second)"
            )
        if not (is_number(timeout) and MIN_CHECK_TIMEOUT_S <= timeout <= interval):
            raise ValidationError(
                f"check.timeout_s {show(timeout)}: use a number of seconds from "
                f"{MIN_CHECK_TIMEOUT_S} to check.interval_s ({interval})"
            )
        object.__setattr__(self, "interval_s", float(interval))
        object.__setattr__(self, "timeout_s", float(timeout))
        if not (_whole(self.rise, 1, 100) and _whole(self.fall, 1, 100)):
            raise ValidationError("check.rise and check.fall must be whole numbers from 1 to 100")


def check_address(address: object) -> str:
    """Return ``address`` if it is a host name or an IP address, else raise ValidationError."""
    if isinstance(address, str) and 0 < len(address) <= MAX_ADDRESS:
        if _HOST_RE.fullmatch(address):
            return address
        with contextlib.suppress(ValueError):
            ipaddress.ip_address(address)
            return address
    raise ValidationError(
        f"address {show(address)}: give a host name or an IP address (no port, "
        f"scheme, path or spaces), e.g. '10.0.0.5', 'orders-1.internal' or '::1'"
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Instance:
    """One running copy of a service, as registered.

    Attributes:
        service: the service name (``[a-z0-9][a-z0-9.-]*``).
        address: host name or IP that clients connect to (and the checker probes).
        port: TCP port, 1-65535.
        id: stable instance id; generated from address and port when empty.
        scheme: ``http``, ``https``, ``grpc``, ``grpcs`` or ``tcp``.
        weight: relative share of traffic, 1-1000.
        zone: availability zone or rack, for zone-aware balancing.
        version: the service's version, for version-pinned discovery.
        tags: free-form labels (at most 256, each at most 256 characters).
        metadata: string key/value pairs (at most 256; keys at most 256
            characters, values at most 16384).
        status: ``UP``, or ``DRAINING`` while it shuts down (gets no new traffic).
        registered_at: when it registered (UTC).
        check: how the health checker probes it; None: lease liveness only.
        override: the operator's override that :class:`~keel.registry.Discovery`
            merged into this instance (its weight and draining are already
            applied to ``weight`` and ``status``); None for a record as registered.

    Raises:
        ValidationError: a field is invalid; the message names it and the fix.
    """

    service: str
    address: str
    port: int
    id: str = ""
    scheme: str = "http"
    weight: int = 100
    zone: str = ""
    version: str = ""
    tags: tuple[str, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)
    status: Status = UP
    registered_at: datetime | None = None
    check: HealthCheck | None = None
    override: Override | None = None

    def __post_init__(self) -> None:
        check_service_name(self.service)
        check_address(self.address)
        if not _whole(self.port, 1, 65535):
            raise ValidationError(f"port {show(self.port)}: use a whole number from 1 to 65535")
        if not isinstance(self.id, str):
            raise ValidationError("instance id must be a string")
        if not self.id:
            object.__setattr__(self, "id", default_instance_id(self.address, self.port))
        elif not ID_RE.fullmatch(self.id):
            raise ValidationError(
                f"instance id {show(self.id)}: use letters, digits and . _ : @ [ ] - (at most 200)"
            )
        if not isinstance(self.scheme, str) or self.scheme not in _SCHEMES:
            raise ValidationError(f"scheme {show(self.scheme)}: use one of {sorted(_SCHEMES)}")
        if not _whole(self.weight, 1, 1000):
            raise ValidationError(f"weight {show(self.weight)}: use a whole number from 1 to 1000")
        for name in ("zone", "version"):
            value = getattr(self, name)
            if not isinstance(value, str) or len(value) > MAX_LABEL:
                raise ValidationError(f"{name} must be a string of at most {MAX_LABEL} characters")
        if not isinstance(self.status, str) or self.status not in (UP, DRAINING):
            raise ValidationError(f"status {show(self.status)}: use 'UP' or 'DRAINING'")
        self._check_labels()
        if self.registered_at is not None and not isinstance(self.registered_at, datetime):
            raise ValidationError("registered_at must be a datetime or None")
        if self.check is not None and not isinstance(self.check, HealthCheck):
            raise ValidationError("check must be a keel.registry.HealthCheck or None")
        if self.override is not None:
            from keel.registry._overrides import Override  # here: _overrides imports this module

            if not isinstance(self.override, Override):
                raise ValidationError("override must be a keel.registry.Override or None")

    def _check_labels(self) -> None:
        if isinstance(self.tags, str | bytes) or not isinstance(self.tags, Iterable):
            raise ValidationError("tags must be a sequence of strings, e.g. ('canary',)")
        tags = tuple(self.tags)
        if len(tags) > MAX_ITEMS or not all(
            isinstance(t, str) and 0 < len(t) <= MAX_LABEL for t in tags
        ):
            raise ValidationError(
                f"tags must be at most {MAX_ITEMS} non-empty strings of at most "
                f"{MAX_LABEL} characters"
            )
        object.__setattr__(self, "tags", tags)
        meta = self.metadata
        if (
            not isinstance(meta, Mapping)
            or len(meta) > MAX_ITEMS
            or not all(
                isinstance(k, str)
                and isinstance(v, str)
                and len(k) <= MAX_LABEL
                and len(v) <= MAX_VALUE
                for k, v in meta.items()
            )
        ):
            raise ValidationError(
                f"metadata must map strings to strings (at most {MAX_ITEMS} entries, keys of "
                f"at most {MAX_LABEL} and values of at most {MAX_VALUE} characters)"
            )
        object.__setattr__(self, "metadata", dict(meta))

    @property
    def url(self) -> str:
        """``scheme://address:port`` (IPv6 addresses bracketed)."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def key(self) -> str:
        """The store key of this instance."""
        return instance_key(self.service, self.id)

    def with_changes(self, **changes: Any) -> Instance:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def __hash__(self) -> int:
        return hash((self.service, self.id))


def encode_instance(instance: Instance) -> bytes:
    """The instance as the documented JSON record."""
    record: dict[str, Any] = {
        "id": instance.id,
        "service": instance.service,
        "address": instance.address,
        "port": instance.port,
        "scheme": instance.scheme,
        "weight": instance.weight,
        "zone": instance.zone,
        "version": instance.version,
        "tags": list(instance.tags),
        "metadata": dict(instance.metadata),
        "status": instance.status,
        "registered_at": (instance.registered_at or datetime.now(UTC)).isoformat(),
    }
    if instance.check is not None:
        c = instance.check
        record["check"] = {
            "type": c.type,
            "path": c.path,
            "interval_s": c.interval_s,
            "timeout_s": c.timeout_s,
            "rise": c.rise,
            "fall": c.fall,
        }
    return json.dumps(record, separators=(",", ":"), sort_keys=True).encode()
