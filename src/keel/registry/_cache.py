"""One service's view in discovery: registered instances, health marks and overrides, merged.

Three prefixes feed a :class:`ServiceCache`: ``services/<service>/`` (what
owners registered), ``health/<service>/`` (the checker's marks) and
``overrides/<service>/`` (operators' overrides). Each change is applied as it
arrives and the merged instance of the one id it touches is rebuilt then, so
lookups read a ready dict and never merge; the result does not depend on the
order in which the three watches deliver their events.

:func:`select` is the pure filter every lookup goes through.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial

from keel._records import Rejected, decode, report
from keel.errors import KeelError
from keel.observe import capability_metrics
from keel.registry._decode import HEALTH_AREA, REGISTRY_AREA, decode_health_mark, decode_instance
from keel.registry._model import HEALTH, UP, Instance, service_prefix
from keel.registry._overrides import (
    OVERRIDES,
    Override,
    apply_override,
    override_prefix,
    read_override,
)
from keel.store import Event, EventType, KeyValue

__all__ = ["ServiceCache", "select"]


def select(
    instances: Iterable[Instance],
    failing: set[str],
    *,
    protect_threshold: float = 0.0,
    zone: str | None = None,
    tags: Iterable[str] = (),
    version: str | None = None,
    include_draining: bool = False,
) -> tuple[Instance, ...]:
    """Filter a service's instances (pure): overrides, status, health, protection, zone, tags.

    Instances an operator disabled are always left out, draining ones unless
    ``include_draining``; the protection threshold then applies to what is
    left, so it never brings back an instance an operator took out (if every
    instance is disabled, the answer is empty: the operator's intent wins).
    """
    wanted = set(tags)
    pool = [
        i
        for i in instances
        if (include_draining or i.status == UP)
        and (i.override is None or not i.override.disabled)
        and (zone is None or i.zone == zone)
        and (version is None or i.version == version or _version_match(i.version, version))
        and wanted.issubset(i.tags)
    ]
    healthy = [i for i in pool if i.id not in failing]
    if pool and len(healthy) / len(pool) < protect_threshold:
        return tuple(sorted(pool, key=lambda i: i.id))
    return tuple(sorted(healthy, key=lambda i: i.id))


def _version_match(have: str, pattern: str) -> bool:
    return pattern.endswith("*") and have.startswith(pattern[:-1])


@dataclass
class ServiceCache:
    """What discovery holds for one service (private to discovery; mutated by its watch task).

    ``registered`` are the records as their owners wrote them, ``overrides``
    the operators' records, ``instances`` the two merged (what lookups read).
    """

    service: str
    registered: dict[str, Instance] = field(default_factory=dict)
    overrides: dict[str, Override] = field(default_factory=dict)
    instances: dict[str, Instance] = field(default_factory=dict)
    failing: set[str] = field(default_factory=set)
    revision: int = 0
    loaded: asyncio.Event = field(default_factory=asyncio.Event)
    attempted: asyncio.Event = field(default_factory=asyncio.Event)
    error: KeelError | None = None
    from_snapshot: bool = False
    subscribers: list[asyncio.Queue[None]] = field(default_factory=list)
    selected: tuple[Instance, ...] | None = None

    @property
    def prefixes(self) -> tuple[str, str, str]:
        """The three prefixes that feed this cache."""
        return (
            service_prefix(self.service),
            f"{HEALTH}{self.service}/",
            override_prefix(self.service),
        )

    def apply(self, event: Event) -> None:
        """Apply one watch event of any of the three prefixes."""
        key, put = event.kv.key, event.type is EventType.PUT
        if key.startswith(HEALTH):
            if put:
                self._mark(event.kv)
            else:
                self._unmark(key)
        elif key.startswith(OVERRIDES):
            if put:
                self._override(event.kv)
            else:
                self._unoverride(key)
        elif put:
            self._put(event.kv)
        else:
            self._remove(key.removeprefix(service_prefix(self.service)))
        self.revision = max(self.revision, event.revision)

    def _merge(self, instance_id: str) -> None:
        instance = self.registered.get(instance_id)
        if instance is None:
            self.instances.pop(instance_id, None)
        else:
            self.instances[instance_id] = apply_override(instance, self.overrides.get(instance_id))

    def _put(self, kv: KeyValue) -> None:
        instance = decode(REGISTRY_AREA, kv.key, kv.value, partial(decode_instance, kv.key))
        if isinstance(instance, Rejected):
            report(instance)  # and drop what the key held: it no longer describes an instance
            self._remove(kv.key.removeprefix(service_prefix(self.service)))
        else:
            self.registered[instance.id] = instance
            self._merge(instance.id)

    def _remove(self, instance_id: str) -> None:
        self.registered.pop(instance_id, None)
        self.instances.pop(instance_id, None)

    def _override(self, kv: KeyValue) -> None:
        override = read_override(kv)  # a malformed override is reported and changes nothing
        if override is None:
            self._unoverride(kv.key)
        else:
            self.overrides[override.instance_id] = override
            self._merge(override.instance_id)

    def _unoverride(self, key: str) -> None:
        instance_id = key.removeprefix(override_prefix(self.service))
        if self.overrides.pop(instance_id, None) is not None:
            self._merge(instance_id)

    def _mark(self, kv: KeyValue) -> None:
        mark = decode(HEALTH_AREA, kv.key, kv.value, partial(decode_health_mark, kv.key))
        if isinstance(mark, Rejected):
            report(mark)  # a malformed mark hides nothing
            self._unmark(kv.key)
        elif mark.failing:
            self.failing.add(mark.instance_id)
        else:
            self.failing.discard(mark.instance_id)

    def _unmark(self, key: str) -> None:
        self.failing.discard(key.removeprefix(f"{HEALTH}{self.service}/"))

    def load(
        self,
        kvs: list[KeyValue],
        health: list[KeyValue],
        overrides: list[KeyValue],
        revision: int,
    ) -> None:
        """Replace everything with one consistent read (or a snapshot)."""
        self.registered.clear()
        self.overrides.clear()
        self.instances.clear()
        self.failing.clear()
        for kv in overrides:
            self._override(kv)
        for kv in kvs:
            self._put(kv)
        for kv in health:
            self._mark(kv)
        self.revision = revision
        self.from_snapshot = False

    def notify(self) -> None:
        """Forget the default selection and wake subscribers (once per burst of changes)."""
        self.selected = None  # the default selection is rebuilt on the next lookup
        capability_metrics().discovered(self.service, len(self.instances))
        for queue in self.subscribers:
            if queue.empty():
                queue.put_nowait(None)
