"""Balancer pick cost: median time per pick from a list of 100 instances.

    python bench/balance.py
    python bench/balance.py --picks 50000 --runs 9

For each balancer, ``runs`` timed runs of ``picks`` picks each (after a warm-up
run); the figure is the median of the runs' per-pick times. The instances are
passed as one tuple, as a discovery cache hands them out (the hash, zone and
outlier wrappers reuse their per-list work while the same tuple comes back);
``+track`` rows add a ``with balancer.track(instance):`` around each call, and
``(list)`` rows pass a fresh list each time, which defeats that reuse.
Target: <= 3 us per pick for round robin and the P2C balancers.

Prints a table and one JSON document. A measurement, not a test.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from keel.balance import (
    Balancer,
    ConsistentHash,
    LeastOutstanding,
    OutlierEjection,
    PeakEwma,
    RandomChoice,
    RoundRobin,
    SmoothWeightedRoundRobin,
    ZonePreference,
)

INSTANCES = 100
TARGET_US = 3.0


@dataclass(frozen=True, slots=True)
class Node:
    id: str
    weight: int
    zone: str


def make_instances() -> tuple[Node, ...]:
    rng = random.Random(42)
    return tuple(
        Node(f"10.0.{i // 250}.{i % 250}:8080", rng.choice((50, 100, 100, 200)), f"z{i % 3}")
        for i in range(INSTANCES)
    )


def balancers() -> dict[str, Callable[[], Balancer]]:
    return {
        "round_robin": RoundRobin,
        "random": RandomChoice,
        "random_weighted": lambda: RandomChoice(weighted=True),
        "smooth_wrr": SmoothWeightedRoundRobin,
        "p2c_least_outstanding": LeastOutstanding,
        "p2c_peak_ewma": PeakEwma,
        "consistent_hash": ConsistentHash,
        "zone(p2c_peak_ewma)": lambda: ZonePreference(PeakEwma(), "z1"),
        "outlier(round_robin)": lambda: OutlierEjection(RoundRobin()),
    }


def time_picks(balancer: Balancer, instances: Sequence[Node], keys: list[str], n: int) -> float:
    """Seconds per pick over ``n`` picks."""
    pick = balancer.pick
    start = time.perf_counter()
    for i in range(n):
        pick(instances, keys[i & 1023])
    return (time.perf_counter() - start) / n


def time_tracked(balancer: Balancer, instances: Sequence[Node], keys: list[str], n: int) -> float:
    """Seconds per pick + track + finish over ``n`` calls."""
    pick, track = balancer.pick, balancer.track
    start = time.perf_counter()
    for i in range(n):
        with track(pick(instances, keys[i & 1023])):
            pass
    return (time.perf_counter() - start) / n


def time_lists(balancer: Balancer, instances: Sequence[Node], keys: list[str], n: int) -> float:
    """Seconds per pick when each pick gets a fresh list (less the cost of copying it)."""
    lists = [list(instances) for _ in range(64)]
    start = time.perf_counter()
    for i in range(n):
        balancer.pick(lists[i & 63], keys[i & 1023])
    return (time.perf_counter() - start) / n


def measure(
    timer: Callable[[Balancer, Sequence[Node], list[str], int], float],
    factory: Callable[[], Balancer],
    picks: int,
    runs: int,
) -> float:
    instances = make_instances()
    keys = [f"session-{i}" for i in range(1024)]
    balancer = factory()
    timer(balancer, instances, keys, picks // 10)  # warm-up: builds rings, fills state
    return statistics.median(timer(balancer, instances, keys, picks) for _ in range(runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--picks", type=int, default=20_000, help="picks per timed run")
    parser.add_argument("--runs", type=int, default=7, help="timed runs per balancer")
    args = parser.parse_args()

    results: list[dict[str, object]] = []
    for name, factory in balancers().items():
        rows = [("", time_picks), ("+track", time_tracked)]
        if name in ("consistent_hash", "zone(p2c_peak_ewma)"):
            rows.append(("(list)", time_lists))
        for suffix, timer in rows:
            seconds = measure(timer, factory, args.picks, args.runs)
            results.append({"balancer": name + suffix, "median_us_per_pick": seconds * 1e6})

    print(f"{'balancer':<30} {'median us/pick':>15}")
    for row in results:
        print(f"{row['balancer']!s:<30} {row['median_us_per_pick']:>15.3f}")
    doc = {
        "bench": "balance",
        "instances": INSTANCES,
        "picks_per_run": args.picks,
        "runs": args.runs,
        "target_us": {"round_robin": TARGET_US, "p2c": TARGET_US},
        "results": results,
    }
    print(json.dumps(doc))


if __name__ == "__main__":
    main()
