"""Settings of a Service: defaults < environment (``KEEL_SERVICE_*``) < arguments."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from keel.errors import ValidationError

__all__ = ["ENV_PREFIX", "ServiceSettings"]

ENV_PREFIX = "KEEL_SERVICE_"


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceSettings:
    """How a :class:`~keel.service.Service` binds, registers and shuts down.

    Attributes:
        host: the address to bind.
        port: the port to bind (0: a free one, chosen by the kernel).
        advertise: the address registered for clients (default: ``host``, or
            ``127.0.0.1`` when binding every interface).
        instance_id: the registered id (default: ``advertise:port``).
        zone: registered availability zone.
        version: registered service version.
        tags: registered tags.
        metadata: registered metadata.
        weight: registered weight, 1..1000.
        ttl_s: TTL of the process session (a crashed process vanishes after it).
        grace_s: how long in-flight requests may run on after shutdown starts.
        drain_delay_s: after marking DRAINING, how long to keep serving before
            deregistering and closing the listener, so clients' discovery
            caches (fed by a watch) drop the instance before its socket closes.
        startup_timeout_s: how long startup plus the first ``/readyz`` may take.
        log_level: level for the server's own log lines.
        workers: processes serving the port; above 1 they are children of the
            Service process, which only supervises (docs/services.md).
    """

    host: str = "127.0.0.1"
    port: int = 0
    advertise: str = ""
    instance_id: str = ""
    zone: str = ""
    version: str = ""
    tags: tuple[str, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)
    weight: int = 100
    ttl_s: int = 10
    grace_s: float = 10.0
    drain_delay_s: float = 0.5
    startup_timeout_s: float = 30.0
    log_level: str = "warning"
    workers: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValidationError(f"port {self.port!r}: use 0 (any free port) to 65535")
        if not 1 <= self.weight <= 1000:
            raise ValidationError(f"weight {self.weight!r}: use 1 to 1000")
        if self.ttl_s < 1:
            raise ValidationError(f"ttl_s {self.ttl_s!r}: use a whole number of seconds >= 1")
        for name in ("grace_s", "drain_delay_s"):
            if getattr(self, name) < 0:
                raise ValidationError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not 1 <= self.workers <= 256:
            raise ValidationError(f"workers {self.workers!r}: use 1 to 256 (one per core)")
        if self.startup_timeout_s <= 0:
            raise ValidationError(f"startup_timeout_s must be > 0, got {self.startup_timeout_s!r}")

    @property
    def advertised(self) -> str:
        """The address clients connect to."""
        if self.advertise:
            return self.advertise
        return "127.0.0.1" if self.host in ("", "0.0.0.0", "::") else self.host

    def with_changes(self, **changes: Any) -> ServiceSettings:
        """A copy with ``changes`` applied (``None`` values are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServiceSettings:
        """Defaults overridden by ``KEEL_SERVICE_<FIELD>`` variables (``KEEL_SERVICE_PORT=8080``).

        Tags are comma-separated; metadata is ``k=v,k=v``.

        Raises:
            ValidationError: a variable does not parse as its field's type.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is None:
                continue
            values[f.name] = _parse(f.name, raw, cls.__dataclass_fields__[f.name].type)
        return cls(**values)


def _parse(name: str, raw: str, kind: object) -> Any:
    try:
        if kind in ("int", int):
            return int(raw)
        if kind in ("float", float):
            return float(raw)
    except ValueError as exc:
        raise ValidationError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not a number") from exc
    if name == "tags":
        return tuple(t.strip() for t in raw.split(",") if t.strip())
    if name == "metadata":
        pairs = [p.split("=", 1) for p in raw.split(",") if p.strip()]
        if any(len(p) != 2 for p in pairs):
            raise ValidationError(f"{ENV_PREFIX}METADATA={raw!r}: write k=v,k=v")
        return {k.strip(): v.strip() for k, v in pairs}
    return raw
