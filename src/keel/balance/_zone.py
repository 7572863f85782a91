"""Zone preference: keep calls in the caller's zone while it has enough instances.

Cross-zone calls cost latency and, in the clouds, money. This wrapper hands its
inner balancer only the instances of the local zone, and falls back to every
instance when the local zone has fewer than ``min_instances`` of them or less
than ``min_share`` of the whole list: a zone left with one instance out of
twenty should not take all of its zone's traffic (Envoy's zone-aware routing
has the same guard, ``min_cluster_size``). Put it under
:class:`~keel.balance.OutlierEjection` so that ejected instances do not count as
local ones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from keel.balance._base import Balancer, E, Endpoint, Ticket
from keel.errors import ValidationError

__all__ = ["ZonePreference", "ZoneSettings", "ZoneStatistics"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ZoneSettings:
    """When the local zone is big enough to take the local traffic alone.

    Attributes:
        min_instances: prefer the local zone only if it has at least this many instances.
        min_share: ... and at least this fraction of all instances (0 <= share <= 1).
    """

    min_instances: int = 1
    min_share: float = 0.0

    def __post_init__(self) -> None:
        if self.min_instances < 1:
            raise ValidationError(f"min_instances must be >= 1, got {self.min_instances!r}")
        if not 0.0 <= self.min_share <= 1.0:
            raise ValidationError(
                f"min_share must be a fraction between 0 and 1, got {self.min_share!r}"
            )


@dataclass(frozen=True, slots=True)
class ZoneStatistics:
    """A snapshot of a :class:`ZonePreference` wrapper.

    Attributes:
        zone: the local zone.
        picks: calls to ``pick`` so far.
        local_picks: picks served from the local zone.
        fallback_picks: picks that had to use every zone.
    """

    zone: str
    picks: int
    local_picks: int
    fallback_picks: int


class ZonePreference:
    """Prefer instances of ``zone``; use every instance when the zone has too few.

    Args:
        inner: the balancer that picks among the chosen instances.
        zone: the caller's zone; ``""`` turns the preference off.
        settings: how big the local zone must be (defaults: :class:`ZoneSettings`).
    """

    __slots__ = ("_fallback", "_for", "_local", "_local_picks", "inner", "settings", "zone")

    def __init__(self, inner: Balancer, zone: str, settings: ZoneSettings | None = None) -> None:
        self.inner = inner
        self.zone = zone
        self.settings = settings if settings is not None else ZoneSettings()
        self._for: object = None
        self._local: tuple[Endpoint, ...] = ()
        self._local_picks = 0
        self._fallback = 0

    def candidates(self, instances: Sequence[E]) -> Sequence[E]:
        """The instances a pick would choose from: the local ones, or all of them.

        Args:
            instances: every candidate.

        Returns:
            The local-zone instances when there are enough of them, else ``instances``.
        """
        if not self.zone:
            return instances
        if instances is self._for and type(instances) is tuple:
            local = cast(Sequence[E], self._local)
        else:
            zone = self.zone
            local = tuple(inst for inst in instances if inst.zone == zone)
            self._for, self._local = instances, local
        needed = max(
            self.settings.min_instances, math.ceil(self.settings.min_share * len(instances))
        )
        return local if len(local) >= needed else instances

    def pick(self, instances: Sequence[E], key: str | bytes | None = None) -> E:
        """Pick with the inner balancer among the local instances, or among all.

        Args:
            instances: every candidate.
            key: passed to the inner balancer.

        Returns:
            One of ``instances``.

        Raises:
            NoInstanceError: when ``instances`` is empty.
        """
        chosen = self.candidates(instances)
        if chosen is instances:
            self._fallback += 1
        else:
            self._local_picks += 1
        return self.inner.pick(chosen, key)

    def observe(self, instance: Endpoint, latency_s: float, ok: bool) -> None:
        """Pass the outcome to the inner balancer (see :meth:`Balancer.observe`)."""
        self.inner.observe(instance, latency_s, ok)

    def track(self, instance: Endpoint) -> Ticket:
        """Track the call with the inner balancer (see :meth:`Balancer.track`)."""
        return self.inner.track(instance)

    def statistics(self) -> ZoneStatistics:
        """How many picks stayed local and how many fell back."""
        return ZoneStatistics(
            self.zone, self._local_picks + self._fallback, self._local_picks, self._fallback
        )

    def __repr__(self) -> str:
        return (
            f"ZonePreference(zone={self.zone!r}, local_picks={self._local_picks}, "
            f"fallback_picks={self._fallback}, inner={self.inner!r})"
        )
