"""Every balancer under a changing instance list: correct picks, bounded state."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import keel.balance
from keel.balance import (
    Balancer,
    ConsistentHash,
    HashSettings,
    LeastOutstanding,
    OutlierEjection,
    OutlierSettings,
    PeakEwma,
    RandomChoice,
    RoundRobin,
    SmoothWeightedRoundRobin,
    ZonePreference,
)
from keel.testing import FakeClock
from tests.balance._helpers import Node

FACTORIES: dict[str, Callable[[FakeClock], Balancer]] = {
    "round_robin": lambda c: RoundRobin(clock=c),
    "random": lambda c: RandomChoice(weighted=True, rng=random.Random(0), clock=c),
    "swrr": lambda c: SmoothWeightedRoundRobin(clock=c),
    "least_outstanding": lambda c: LeastOutstanding(rng=random.Random(0), clock=c),
    "peak_ewma": lambda c: PeakEwma(rng=random.Random(0), clock=c),
    "consistent_hash": lambda c: ConsistentHash(HashSettings(replicas=20), clock=c),
    "zone": lambda c: ZonePreference(PeakEwma(clock=c), "a"),
    "outlier": lambda c: OutlierEjection(
        LeastOutstanding(clock=c), OutlierSettings(consecutive_failures=2), clock=c
    ),
}


def _state_size(balancer: object) -> int:
    """Instances a balancer (and what it wraps) keeps state for, from statistics()."""
    size = getattr(balancer.statistics(), "tracked", 0)  # type: ignore[attr-defined]
    inner = getattr(balancer, "inner", None)
    return int(size) + (_state_size(inner) if inner is not None else 0)


@pytest.mark.parametrize("name", sorted(FACTORIES))
@settings(max_examples=10, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_changing_lists_pick_current_instances_with_bounded_state(name: str, seed: int) -> None:
    """Instances come and go for 400 rounds; picks are always current and state stays bounded."""
    rng = random.Random(seed)
    clock = FakeClock()
    balancer = FACTORIES[name](clock)
    next_id = 0
    current: list[Node] = []
    for _ in range(400):
        if current and rng.random() < 0.3:
            current.pop(rng.randrange(len(current)))
        while len(current) < 3 or rng.random() < 0.3:
            current.append(Node(f"i{next_id}", weight=rng.randint(1, 1000), zone=rng.choice("ab")))
            next_id += 1
        if len(current) > 20:
            current = current[-20:]
        snapshot = tuple(current) if rng.random() < 0.5 else list(current)
        chosen = balancer.pick(snapshot, key=f"k{rng.randrange(50)}")
        assert chosen in snapshot
        with balancer.track(chosen) as ticket:
            clock.advance(rng.random() / 100)
            if rng.random() < 0.2:
                ticket.failed()
        balancer.observe(chosen, 0.01, ok=rng.random() < 0.9)
        assert _state_size(balancer) <= 2 * (2 * len(current) + 17)  # two tables when wrapped
    stats = balancer.statistics()  # type: ignore[attr-defined]
    assert stats.picks == 400


def test_package_exports_are_sorted_and_complete() -> None:
    """keel.balance.__all__ is sorted and names every public class of the package."""
    names = keel.balance.__all__
    assert names == sorted(names, key=lambda n: (not n[0].isupper(), n))
    public = {n for n in dir(keel.balance) if not n.startswith("_") and n[0].isupper()}
    assert public <= set(names)
