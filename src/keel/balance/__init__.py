"""Client-side load balancers: pure, synchronous strategies over a list of instances.

Every balancer has ``pick(instances, key=None)`` and takes outcome feedback
with ``observe(instance, latency_s, ok)`` or ``with balancer.track(instance):``
(which also counts the call as outstanding). Instances are anything with
``id``, ``weight`` and ``zone`` (:class:`Endpoint`); ``keel.registry.Instance``
is one. State is keyed by instance id, so the list may change between picks.

- :class:`RoundRobin`, :class:`RandomChoice`: no state worth the name.
- :class:`SmoothWeightedRoundRobin`: nginx's deterministic weighted order.
- :class:`LeastOutstanding`: power of two choices on calls in flight.
- :class:`PeakEwma`: power of two choices on peak-EWMA latency x load.
- :class:`ConsistentHash`: sticky keys on a ring, with bounded loads.
- :class:`ZonePreference`: wraps a balancer, keeps calls in the local zone.
- :class:`OutlierEjection`: wraps a balancer, ejects failing instances for a while.

Time goes through an injected :class:`~keel.clock.Clock`. This package imports
nothing of keel but ``keel.clock`` and ``keel.errors``. See ``docs/balance.md``.
"""

from keel.balance._base import Balancer, BalancerStatistics, Endpoint, Ticket
from keel.balance._hash import ConsistentHash, HashSettings, HashStatistics, key_hash
from keel.balance._outlier import OutlierEjection, OutlierSettings, OutlierStatistics
from keel.balance._p2c import LeastOutstanding, PeakEwma, PeakEwmaSettings, PeakEwmaStatistics
from keel.balance._simple import RandomChoice, RoundRobin
from keel.balance._weighted import SmoothWeightedRoundRobin, WeightedSettings
from keel.balance._zone import ZonePreference, ZoneSettings, ZoneStatistics

__all__ = [
    "Balancer",
    "BalancerStatistics",
    "ConsistentHash",
    "Endpoint",
    "HashSettings",
    "HashStatistics",
    "LeastOutstanding",
    "OutlierEjection",
    "OutlierSettings",
    "OutlierStatistics",
    "PeakEwma",
    "PeakEwmaSettings",
    "PeakEwmaStatistics",
    "RandomChoice",
    "RoundRobin",
    "SmoothWeightedRoundRobin",
    "Ticket",
    "WeightedSettings",
    "ZonePreference",
    "ZoneSettings",
    "ZoneStatistics",
    "key_hash",
]
