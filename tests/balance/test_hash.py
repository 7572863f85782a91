"""Consistent hashing with bounded loads."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.balance import ConsistentHash, HashSettings, Ticket, key_hash
from keel.errors import ValidationError
from tests.balance._helpers import Node, nodes

KEYS = [f"user-{i}" for i in range(3000)]


def test_key_hash_is_stable() -> None:
    """Key positions are the same in every process (BLAKE2b, not the salted hash())."""
    assert key_hash("user-1") == key_hash(b"user-1") == 0x9AAC5A8621EAE188
    assert key_hash("user-1") != key_hash("user-2")


def test_same_key_same_instance() -> None:
    """A key maps to the same instance on every pick and in every balancer."""
    instances = nodes(8)
    a, b = ConsistentHash(), ConsistentHash()
    for key in KEYS[:200]:
        assert a.pick(instances, key) is a.pick(instances, key) is b.pick(list(instances), key)


@settings(max_examples=15, deadline=None)
@given(n=st.integers(min_value=3, max_value=12), leaver=st.integers(min_value=0, max_value=11))
def test_one_leaving_remaps_only_its_own_keys(n: int, leaver: int) -> None:
    """When one of n instances leaves, only its keys move: <= 1/n + 0.06 of all keys."""
    before_list = nodes(n)
    gone = before_list[leaver % n]
    after_list = tuple(x for x in before_list if x is not gone)
    ch = ConsistentHash()
    before = {k: ch.pick(before_list, k).id for k in KEYS}
    after = {k: ch.pick(after_list, k).id for k in KEYS}
    moved = [k for k in KEYS if before[k] != after[k]]
    assert all(before[k] == gone.id for k in moved)
    assert len(moved) / len(KEYS) <= 1 / n + 0.06
    # Coming back takes back exactly the same keys.
    assert {k: ch.pick(before_list, k).id for k in KEYS} == before


def test_key_shares_are_even() -> None:
    """With 160 virtual nodes each, 10 instances own 10 % +- 4 % of the keys each."""
    ch = ConsistentHash()
    counts = Counter(ch.pick(nodes(10), k).id for k in KEYS)
    assert all(abs(c / len(KEYS) - 0.1) < 0.04 for c in counts.values())


def test_weights_scale_key_shares() -> None:
    """An instance of weight 300 owns about three times the keys of one of weight 100."""
    ch = ConsistentHash()
    instances = (Node("big", weight=300), Node("small", weight=100))
    counts = Counter(ch.pick(instances, k).id for k in KEYS)
    assert counts["big"] / len(KEYS) == pytest.approx(0.75, abs=0.06)


@settings(max_examples=15, deadline=None)
@given(
    n=st.integers(min_value=2, max_value=10),
    calls=st.integers(min_value=1, max_value=300),
    factor=st.sampled_from([1.0, 1.25, 1.5, 2.0]),
    hot=st.booleans(),
)
def test_loads_stay_under_the_bound(n: int, calls: int, factor: float, hot: bool) -> None:
    """With calls held open, no instance exceeds ceil(c * m / n), even for one hot key."""
    ch = ConsistentHash(HashSettings(load_factor=factor))
    instances = nodes(n)
    held: list[Ticket] = []
    for i in range(calls):
        chosen = ch.pick(instances, "hot" if hot else KEYS[i])
        held.append(ch.track(chosen))
        bound = math.ceil(factor * (i + 1) / n)
        assert max(ch.load(x) for x in instances) <= bound
    assert ch.statistics().outstanding == calls
    for ticket in held:
        ticket.succeeded()
    assert ch.statistics().outstanding == 0


def test_hot_key_spills_to_next_instance_and_comes_back() -> None:
    """A hot key spills over when its owner is full and returns once calls finish."""
    ch = ConsistentHash(HashSettings(load_factor=1.25))
    instances = nodes(4)
    owner = ch.pick(instances, "hot")
    tickets = [ch.track(ch.pick(instances, "hot")) for _ in range(8)]
    assert ch.load(owner) == math.ceil(1.25 * 8 / 4)
    assert ch.statistics().spilled > 0
    for t in tickets:
        t.succeeded()
    assert ch.pick(instances, "hot") is owner


def test_without_key_picks_round_robin() -> None:
    """Without a key the picks cycle through the instances."""
    ch = ConsistentHash()
    instances = nodes(3)
    assert Counter(ch.pick(instances).id for _ in range(30)) == {"n0": 10, "n1": 10, "n2": 10}


def test_ring_rebuilt_only_when_members_change() -> None:
    """Same members in another order reuse the ring; a weight change rebuilds it."""
    ch = ConsistentHash()
    instances = list(nodes(5))
    ch.pick(instances, "k")
    ch.pick(list(reversed(instances)), "k")
    assert ch.statistics().rebuilds == 1
    instances[0] = Node("n0", weight=200)
    ch.pick(instances, "k")
    assert ch.statistics().rebuilds == 2
    assert ch.statistics().ring_points == 160 * 4 + 320


def test_returns_current_objects_not_cached_ones() -> None:
    """A replaced instance object with the same id is what pick returns."""
    ch = ConsistentHash()
    old = [Node("a"), Node("b")]
    new = [Node("a"), Node("b")]
    ch.pick(old, "k")
    assert any(ch.pick(new, "k") is x for x in new)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"replicas": 0}, "replicas"), ({"load_factor": 0.9}, "load_factor")],
)
def test_hash_settings_validate(kwargs: dict[str, float], field: str) -> None:
    """Bad settings raise ValidationError naming the field."""
    with pytest.raises(ValidationError, match=field):
        HashSettings(**kwargs)  # type: ignore[arg-type]


def test_repr_tells_ring_shape() -> None:
    """The repr shows instances, ring points and loads."""
    ch = ConsistentHash()
    ch.pick(nodes(2), "k")
    assert repr(ch).startswith("ConsistentHash(instances=2, points=320, outstanding=0")
