"""Services page data: every instance with its health mark and operator override.

One transaction reads the three prefixes (``services/``, ``health/``,
``overrides/``) at one revision; every record is decoded at its boundary
(the registry's decoders) and malformed ones are skipped and counted.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from functools import partial

from keel._records import Rejected, decode, report
from keel.registry import HealthMark, Instance, decode_health_mark, decode_instance
from keel.registry._overrides import OVERRIDES, Override, apply_override, read_override
from keel.store import KeyValue, Range, Store

__all__ = ["InstanceRow", "ServiceGroup", "ServicesView", "load_services"]

_SERVICES = "services/"
_HEALTH = "health/"


@dataclass(frozen=True, slots=True)
class InstanceRow:
    """One instance as the console shows it (the override applied)."""

    instance: Instance
    registered_weight: int
    override: Override | None
    health: HealthMark | None

    @property
    def key(self) -> str:
        """``service/id``."""
        return f"{self.instance.service}/{self.instance.id}"

    @property
    def state(self) -> str:
        """``disabled``, ``draining``, ``failing`` or ``up``."""
        if self.override is not None and self.override.disabled:
            return "disabled"
        if self.instance.status != "UP":
            return "draining"
        if self.health is not None and self.health.failing:
            return "failing"
        return "up"


@dataclass(slots=True)
class ServiceGroup:
    """A service's instances (and overrides waiting for an instance that is not registered)."""

    name: str
    rows: list[InstanceRow] = field(default_factory=list)
    orphans: list[Override] = field(default_factory=list)

    @property
    def available(self) -> int:
        """Instances that get traffic."""
        return sum(1 for row in self.rows if row.state in ("up", "failing"))


@dataclass(slots=True)
class ServicesView:
    """Every service, at one revision."""

    services: list[ServiceGroup]
    revision: int
    skipped: int

    @property
    def instances(self) -> int:
        """How many instances there are in all."""
        return sum(len(group.rows) for group in self.services)


async def load_services(store: Store, service: str | None = None) -> ServicesView:
    """Read every instance (of ``service``), its health mark and override."""
    tail = f"{service}/" if service else ""
    result = await store.txn(
        [], [Range(_SERVICES + tail), Range(_HEALTH + tail), Range(OVERRIDES + tail)]
    )
    kv_instances, kv_health, kv_overrides = (_kvs(r) for r in result.results)
    skipped = 0
    marks: dict[str, HealthMark] = {}
    for kv in kv_health:
        mark = decode("health", kv.key, kv.value, partial(decode_health_mark, kv.key))
        if isinstance(mark, Rejected):
            report(mark)
            skipped += 1
        else:
            marks[f"{mark.service}/{mark.instance_id}"] = mark
    overrides: dict[str, Override] = {}
    for kv in kv_overrides:
        override = read_override(kv)
        if override is None:
            skipped += 1
        else:
            overrides[f"{override.service}/{override.instance_id}"] = override
    groups: dict[str, ServiceGroup] = defaultdict(lambda: ServiceGroup(""))
    for kv in kv_instances:
        instance = decode("registry", kv.key, kv.value, partial(decode_instance, kv.key))
        if isinstance(instance, Rejected):
            report(instance)
            skipped += 1
            continue
        key = f"{instance.service}/{instance.id}"
        override = overrides.pop(key, None)
        group = groups[instance.service]
        group.name = instance.service
        group.rows.append(
            InstanceRow(
                apply_override(instance, override), instance.weight, override, marks.get(key)
            )
        )
    for override in overrides.values():
        group = groups[override.service]
        group.name = override.service
        group.orphans.append(override)
    ordered = [groups[name] for name in sorted(groups)]
    return ServicesView(ordered, result.revision, skipped)


def _kvs(result: object) -> list[KeyValue]:
    assert isinstance(result, list)
    return result
