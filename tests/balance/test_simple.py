"""Round robin, random and smooth weighted round robin."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from keel.balance import (
    RandomChoice,
    RoundRobin,
    SmoothWeightedRoundRobin,
    WeightedSettings,
)
from keel.errors import NoInstanceError, NotFoundError, ValidationError
from tests.balance._helpers import Node, nodes


@pytest.mark.parametrize(
    "balancer",
    [RoundRobin(), RandomChoice(), SmoothWeightedRoundRobin()],
    ids=["rr", "random", "swrr"],
)
def test_empty_list_raises_no_instance(balancer: RoundRobin) -> None:
    """Picking from an empty list raises NoInstanceError (a NotFoundError and LookupError)."""
    with pytest.raises(NoInstanceError) as info:
        balancer.pick([])
    assert isinstance(info.value, NotFoundError)
    assert isinstance(info.value, LookupError)


def test_round_robin_is_exactly_fair() -> None:
    """Round robin gives each of 5 instances exactly 1/5 of 5,000 picks, in a fixed cycle."""
    rr = RoundRobin(rng=random.Random(1))
    instances = nodes(5)
    picks = [rr.pick(instances).id for _ in range(5000)]
    assert Counter(picks) == {n.id: 1000 for n in instances}
    assert picks[:5] == picks[5:10]
    assert rr.statistics().picks == 5000


def test_round_robin_start_offsets_differ() -> None:
    """Two round robins seeded differently start at different instances."""
    instances = nodes(50)
    first = {RoundRobin(rng=random.Random(seed)).pick(instances).id for seed in range(10)}
    assert len(first) > 1


def test_random_uniform_and_weighted() -> None:
    """Random picks follow the weights when weighted and are uniform otherwise."""
    instances = (Node("a", weight=300), Node("b", weight=100))
    weighted = RandomChoice(weighted=True, rng=random.Random(7))
    counts = Counter(weighted.pick(instances).id for _ in range(20_000))
    assert counts["a"] / 20_000 == pytest.approx(0.75, abs=0.02)
    uniform = RandomChoice(rng=random.Random(7))
    counts = Counter(uniform.pick(instances).id for _ in range(20_000))
    assert counts["a"] / 20_000 == pytest.approx(0.5, abs=0.02)


def test_smooth_wrr_nginx_sequence_5_1_1() -> None:
    """Weights 5:1:1 give nginx's smooth sequence a a b a c a a, repeated."""
    swrr = SmoothWeightedRoundRobin()
    instances = [Node("a", weight=5), Node("b", weight=1), Node("c", weight=1)]
    picks = "".join(swrr.pick(instances).id for _ in range(14))
    assert picks == "aabacaa" * 2


def test_smooth_wrr_shares_follow_weights() -> None:
    """Over whole periods every instance gets exactly its weight's share."""
    swrr = SmoothWeightedRoundRobin()
    instances = [Node("a", weight=300), Node("b", weight=200), Node("c", weight=100)]
    counts = Counter(swrr.pick(instances).id for _ in range(600 * 5))
    assert counts == {"a": 1500, "b": 1000, "c": 500}


def test_smooth_wrr_failure_lowers_share_then_recovers() -> None:
    """A failure cuts an instance's effective weight; each pick restores a point."""
    swrr = SmoothWeightedRoundRobin(WeightedSettings(max_fails=1))
    instances = [Node("a", weight=10), Node("b", weight=10)]
    swrr.pick(instances)
    swrr.observe(instances[0], 0.01, ok=False)
    picks = [swrr.pick(instances).id for _ in range(10)]
    assert picks.count("b") > picks.count("a")
    later = Counter(swrr.pick(instances).id for _ in range(200))
    assert later["a"] == later["b"] == 100


def test_smooth_wrr_keeps_rhythm_when_list_changes() -> None:
    """Removing an instance and adding another keeps picking only current instances."""
    swrr = SmoothWeightedRoundRobin()
    first = [Node("a", weight=5), Node("b", weight=1), Node("c", weight=1)]
    for _ in range(3):
        swrr.pick(first)
    second = [Node("a", weight=5), Node("d", weight=2)]
    counts = Counter(swrr.pick(second).id for _ in range(70))
    assert set(counts) == {"a", "d"}
    assert counts["a"] == pytest.approx(50, abs=2)


def test_weighted_settings_validate() -> None:
    """A negative max_fails is refused with a message naming the field."""
    with pytest.raises(ValidationError, match="max_fails"):
        WeightedSettings(max_fails=-1)


def test_reprs_tell_state() -> None:
    """The reprs name the balancer and its counters."""
    rr = RoundRobin()
    rr.pick(nodes(2))
    assert repr(rr) == "RoundRobin(picks=1)"
    assert "weighted=True" in repr(RandomChoice(weighted=True))
    assert "SmoothWeightedRoundRobin(picks=0" in repr(SmoothWeightedRoundRobin())
