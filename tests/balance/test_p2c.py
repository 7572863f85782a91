"""Power of two choices: least outstanding requests and peak-EWMA latency."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from keel.balance import LeastOutstanding, PeakEwma, PeakEwmaSettings, Ticket
from keel.errors import ValidationError
from keel.testing import FakeClock
from tests.balance._helpers import Node, nodes


def test_least_outstanding_avoids_busy_instance() -> None:
    """An instance with calls stuck in flight gets no new calls while others are idle."""
    lo = LeastOutstanding(rng=random.Random(3))
    instances = nodes(3)
    stuck = [lo.track(instances[0]) for _ in range(5)]
    picks = Counter(lo.pick(instances).id for _ in range(1000))
    assert picks["n0"] == 0
    assert lo.outstanding(instances[0]) == 5
    for ticket in stuck:
        ticket.succeeded()
    assert lo.outstanding(instances[0]) == 0
    assert lo.statistics().outstanding == 0


def test_least_outstanding_balances_concurrent_load() -> None:
    """With calls held open, 10 instances' loads stay close (two choices: O(log log n) gap)."""
    lo = LeastOutstanding(rng=random.Random(5))
    instances = nodes(10)
    held: list[Ticket] = [lo.track(lo.pick(instances)) for _ in range(200)]
    loads = [lo.outstanding(n) for n in instances]
    assert sum(loads) == len(held) == 200
    assert max(loads) - min(loads) <= 6


def test_least_outstanding_respects_weights() -> None:
    """A weight-300 instance carries about three times the calls of a weight-100 one."""
    lo = LeastOutstanding(rng=random.Random(9))
    instances = (Node("big", weight=300), Node("small", weight=100))
    for _ in range(400):
        lo.track(lo.pick(instances))
    assert lo.outstanding(instances[0]) == pytest.approx(300, abs=3)


def test_ticket_context_manager_reports_failure_on_exception() -> None:
    """Leaving a track() block by an exception reports a failure, once."""
    lo = LeastOutstanding()
    node = Node("a")
    with pytest.raises(RuntimeError), lo.track(node) as ticket:
        assert lo.outstanding(node) == 1
        raise RuntimeError("boom")
    assert ticket.done
    ticket.succeeded()  # ignored: already reported
    stats = lo.statistics()
    assert (stats.failures, stats.successes, stats.outstanding) == (1, 0, 0)


def _simulate(
    balancer: PeakEwma, clock: FakeClock, profiles: dict[str, float], n: int
) -> Counter[str]:
    """Sequential calls: pick, then advance the clock by the chosen instance's latency."""
    rng = random.Random(11)
    instances = tuple(Node(name) for name in profiles)
    counts: Counter[str] = Counter()
    for _ in range(n):
        chosen = balancer.pick(instances)
        counts[chosen.id] += 1
        with balancer.track(chosen):
            clock.advance(rng.lognormvariate(0, 0.3) * profiles[chosen.id])
    return counts


def test_peak_ewma_prefers_the_faster_latency_profile() -> None:
    """Between a 10 ms and a 50 ms instance, nearly all calls go to the faster one."""
    clock = FakeClock()
    ewma = PeakEwma(rng=random.Random(1), clock=clock)
    counts = _simulate(ewma, clock, {"fast": 0.010, "slow": 0.050}, 2000)
    assert counts["fast"] / 2000 > 0.9
    costs = ewma.statistics().costs_s
    assert costs["fast"] < costs["slow"]


def test_peak_ewma_among_many_sends_most_to_fast_ones() -> None:
    """With 2 fast and 4 slow instances, every draw holding a fast one goes fast (1 - 4/6*3/5)."""
    clock = FakeClock()
    ewma = PeakEwma(rng=random.Random(2), clock=clock)
    profiles = {"f1": 0.005, "f2": 0.005, "s1": 0.1, "s2": 0.1, "s3": 0.1, "s4": 0.1}
    counts = _simulate(ewma, clock, profiles, 3000)
    # Two random distinct candidates are both slow with probability 0.4: the
    # best P2C can do is 60 % to the fast pair.
    assert (counts["f1"] + counts["f2"]) / 3000 > 0.55
    assert min(counts["f1"], counts["f2"]) > max(counts[f"s{i}"] for i in range(1, 5))


def test_peak_ewma_reacts_to_a_latency_spike_at_once() -> None:
    """One slow reply raises the estimate to it (the peak); recovery is gradual."""
    clock = FakeClock()
    ewma = PeakEwma(clock=clock)
    node = Node("a")
    for _ in range(10):
        ewma.observe(node, 0.01, ok=True)
        clock.advance(0.1)
    ewma.observe(node, 0.5, ok=True)
    assert ewma.cost(node) == pytest.approx(0.5)
    clock.advance(0.1)
    ewma.observe(node, 0.01, ok=True)
    assert 0.4 < ewma.cost(node) < 0.5


def test_peak_ewma_decays_while_idle_so_slow_instance_is_retried() -> None:
    """An idle instance's estimate falls by 1/e per decay time, so it is probed again."""
    clock = FakeClock()
    ewma = PeakEwma(PeakEwmaSettings(decay_s=10.0), clock=clock)
    node = Node("a")
    ewma.observe(node, 1.0, ok=True)
    clock.advance(10.0)
    assert ewma.cost(node) == pytest.approx(1 / 2.718281828, rel=1e-6)


def test_peak_ewma_failure_counts_as_penalty_latency() -> None:
    """A fast failure costs at least failure_penalty_s, so the instance is avoided."""
    clock = FakeClock()
    ewma = PeakEwma(PeakEwmaSettings(failure_penalty_s=2.0), rng=random.Random(4), clock=clock)
    good, bad = Node("good"), Node("bad")
    ewma.observe(good, 0.02, ok=True)
    ewma.observe(bad, 0.001, ok=False)
    assert ewma.cost(bad) == pytest.approx(2.0)
    assert Counter(ewma.pick((good, bad)).id for _ in range(100)) == {"good": 100}


def test_peak_ewma_new_instance_probed_once_then_penalised() -> None:
    """An unmeasured instance is tried at once but not flooded while its first call runs."""
    clock = FakeClock()
    ewma = PeakEwma(rng=random.Random(8), clock=clock)
    old, new = Node("old"), Node("new")
    ewma.observe(old, 0.05, ok=True)
    assert ewma.pick((old, new)) is new
    probe = ewma.track(new)
    assert Counter(ewma.pick((old, new)).id for _ in range(50)) == {"old": 50}
    clock.advance(0.01)
    probe.succeeded()
    assert ewma.pick((old, new)) is new


def test_single_instance_is_returned() -> None:
    """With one instance, both P2C balancers return it."""
    only = (Node("x"),)
    assert LeastOutstanding().pick(only) is only[0]
    assert PeakEwma().pick(only) is only[0]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"decay_s": 0.0}, "decay_s"), ({"failure_penalty_s": -1.0}, "failure_penalty_s")],
)
def test_peak_ewma_settings_validate(kwargs: dict[str, float], field: str) -> None:
    """Bad settings raise ValidationError naming the field."""
    with pytest.raises(ValidationError, match=field):
        PeakEwmaSettings(**kwargs)


def test_reprs_show_load() -> None:
    """The reprs show picks, tracked instances and outstanding calls."""
    lo = LeastOutstanding()
    lo.track(Node("a"))
    assert repr(lo) == "LeastOutstanding(picks=0, tracked=1, outstanding=1)"
    assert "decay_s=10.0" in repr(PeakEwma())
