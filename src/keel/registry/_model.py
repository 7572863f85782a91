"""The instance record: what a service registers, validated, as readable JSON.

Layout (documented in docs/registry.md so services in any language can join)::

    services/<service>/<instance-id>   → Instance JSON, on the owner's session lease
    health/<service>/<instance-id>     → {"status": "failing", ...} from the health checker

Decoding is lenient about optional fields (a Go or Java service may write only
``service``, ``address`` and ``port``) and strict about types.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

from keel.errors import ValidationError

__all__ = [
    "DRAINING",
    "UP",
    "HealthCheck",
    "Instance",
    "Status",
    "decode_instance",
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
_ID_RE = re.compile(r"[A-Za-z0-9._:@\[\]-]{1,200}")
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
            f"service name {service!r} is not valid: use lowercase letters, digits, '.' and "
            f"'-', starting with a letter or digit (e.g. 'orders' or 'payments.v2')"
        )
    return service


def default_instance_id(address: str, port: int) -> str:
    """A stable id from the address and port (``10.0.0.5:8080``, ``[::1]:8080``)."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthCheck:
    """How the health checker probes an instance.

    Attributes:
        type: ``http`` (GET ``path``, healthy on 2xx/3xx) or ``tcp`` (connect).
        path: the HTTP path.
        interval_s: seconds between probes.
        timeout_s: a probe slower than this fails.
        rise: consecutive successes that mark a failing instance healthy again.
        fall: consecutive failures that mark an instance failing.
    """

    type: Literal["http", "tcp"] = "http"
    path: str = "/healthz"
    interval_s: float = 5.0
    timeout_s: float = 2.0
    rise: int = 2
    fall: int = 3

    def __post_init__(self) -> None:
        if self.type not in ("http", "tcp"):
            raise ValidationError(f"check.type {self.type!r}: use 'http' or 'tcp'")
        if not self.path.startswith("/"):
            raise ValidationError(f"check.path {self.path!r} must start with '/'")
        if not 0 < self.timeout_s <= self.interval_s:
            raise ValidationError("check.timeout_s must be > 0 and <= check.interval_s")
        if not (1 <= self.rise <= 100 and 1 <= self.fall <= 100):
            raise ValidationError("check.rise and check.fall must be whole numbers from 1 to 100")


@dataclass(frozen=True, slots=True, kw_only=True)
class Instance:
    """One running copy of a service, as registered.

    Attributes:
        service: the service name (``[a-z0-9][a-z0-9.-]*``).
        address: host name or IP that clients connect to.
        port: TCP port, 1-65535.
        id: stable instance id; generated from address and port when empty.
        scheme: ``http``, ``https``, ``grpc``, ``grpcs`` or ``tcp``.
        weight: relative share of traffic, 1-1000.
        zone: availability zone or rack, for zone-aware balancing.
        version: the service's version, for version-pinned discovery.
        tags: free-form labels.
        metadata: string key/value pairs.
        status: ``UP``, or ``DRAINING`` while it shuts down (gets no new traffic).
        registered_at: when it registered (UTC).
        check: how the health checker probes it; None: lease liveness only.
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

    def __post_init__(self) -> None:
        check_service_name(self.service)
        if not isinstance(self.address, str) or not self.address or " " in self.address:
            raise ValidationError(f"address {self.address!r}: give a host name or IP address")
        if (
            not isinstance(self.port, int)
            or isinstance(self.port, bool)
            or not 1 <= self.port <= 65535
        ):
            raise ValidationError(f"port {self.port!r}: use a whole number from 1 to 65535")
        if not self.id:
            object.__setattr__(self, "id", default_instance_id(self.address, self.port))
        elif not _ID_RE.fullmatch(self.id):
            raise ValidationError(
                f"instance id {self.id!r}: use letters, digits and . _ : @ [ ] - (at most 200)"
            )
        if self.scheme not in _SCHEMES:
            raise ValidationError(f"scheme {self.scheme!r}: use one of {sorted(_SCHEMES)}")
        if (
            not isinstance(self.weight, int)
            or isinstance(self.weight, bool)
            or not 1 <= self.weight <= 1000
        ):
            raise ValidationError(f"weight {self.weight!r}: use a whole number from 1 to 1000")
        if self.status not in (UP, DRAINING):
            raise ValidationError(f"status {self.status!r}: use 'UP' or 'DRAINING'")
        object.__setattr__(self, "tags", tuple(self.tags))
        if not all(isinstance(t, str) and t for t in self.tags):
            raise ValidationError("tags must be non-empty strings")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in self.metadata.items()):
            raise ValidationError("metadata must map strings to strings")
        object.__setattr__(self, "metadata", dict(self.metadata))

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


def decode_instance(key: str, value: bytes) -> Instance:
    """Parse a record from ``services/<service>/<id>``; raise ValidationError if malformed."""
    try:
        record = json.loads(value)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationError(f"instance record {key!r} is not JSON: {exc}") from exc
    if not isinstance(record, dict):
        raise ValidationError(f"instance record {key!r} is not a JSON object")
    _, service, instance_id = key.split("/", 2)
    registered = record.get("registered_at")
    try:
        when = datetime.fromisoformat(registered) if isinstance(registered, str) else None
        check = record.get("check")
        return Instance(
            service=service,
            address=record["address"],
            port=record["port"],
            id=instance_id,
            scheme=record.get("scheme", "http"),
            weight=record.get("weight", 100),
            zone=record.get("zone", ""),
            version=record.get("version", ""),
            tags=tuple(record.get("tags", ())),
            metadata=record.get("metadata", {}),
            status=record.get("status", UP),
            registered_at=when,
            check=HealthCheck(**check) if isinstance(check, dict) else None,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValidationError(f"instance record {key!r} is malformed: {exc}") from exc
