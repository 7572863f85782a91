"""Merging the expositions of a Service's processes into one instance's series."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from keel.observe.merge import merge_expositions


def _process(requests: int, in_flight: int, durations: list[float]) -> str:
    registry = CollectorRegistry()
    counter = Counter("app_requests", "Requests.", ["route"], registry=registry)
    counter.labels("/a").inc(requests)
    counter.labels(f"/only-{requests}").inc()
    Gauge("app_in_flight", "In flight.", registry=registry).set(in_flight)
    histogram = Histogram("app_seconds", "Durations.", buckets=(0.1, 1.0), registry=registry)
    for duration in durations:
        histogram.observe(duration)
    return generate_latest(registry).decode()


def _samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


def test_counters_and_histograms_add_up_and_gauges_stay_per_process() -> None:
    merged = _samples(
        merge_expositions([("0", _process(3, 1, [0.05, 0.5])), ("1", _process(4, 2, [2.0]))])
    )
    assert merged["app_requests_total", (("route", "/a"),)] == 7
    assert merged["app_requests_total", (("route", "/only-3"),)] == 1
    assert merged["app_requests_total", (("route", "/only-4"),)] == 1
    assert merged["app_in_flight", (("worker", "0"),)] == 1
    assert merged["app_in_flight", (("worker", "1"),)] == 2
    assert merged["app_seconds_bucket", (("le", "0.1"),)] == 1
    assert merged["app_seconds_bucket", (("le", "1.0"),)] == 2
    assert merged["app_seconds_bucket", (("le", "+Inf"),)] == 3
    assert merged["app_seconds_count", ()] == 3
    assert merged["app_seconds_sum", ()] == pytest.approx(2.55)


def test_created_takes_the_earliest_and_a_whole_instance_part_gets_no_label() -> None:
    first = '# TYPE x_created gauge\nx_created{route="/a"} 200.0\n'
    second = '# TYPE x_created gauge\nx_created{route="/a"} 100.0\n'
    pool = "# TYPE pool_size gauge\npool_size 2.0\n"
    merged = _samples(merge_expositions([("0", first), ("1", second), ("", pool)]))
    assert merged == {("x_created", (("route", "/a"),)): 100.0, ("pool_size", ()): 2.0}


def test_a_gauge_with_its_own_worker_label_is_kept_and_a_type_clash_keeps_the_first() -> None:
    own = '# TYPE held gauge\nheld{worker="w-7"} 1.0\n'
    clash = "# TYPE held_total counter\nheld_total 5.0\n"
    merged = _samples(merge_expositions([("0", own), ("1", clash)]))
    assert merged == {("held", (("worker", "w-7"),)): 1.0}


def test_text_that_is_not_an_exposition_is_refused() -> None:
    with pytest.raises(ValueError):
        merge_expositions([("0", "this is { not prometheus\n")])
