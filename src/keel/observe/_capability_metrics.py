"""Prometheus series for the registry, locks and elections, and the scheduler.

- ``keel_registry_events_total{service,event}`` — registered, updated,
  reregistered, deregistered (by this process's registries);
- ``keel_discovery_instances{service}`` — instances in this process's cache;
- ``keel_coord_acquire_seconds{kind}`` — time to own a lock, slot or leadership;
- ``keel_coord_held{kind}`` — locks, slots and leaderships held now;
- ``keel_coord_lost_total{kind}`` — ownerships lost (session or key gone), not released;
- ``keel_schedule_runs_total{job,outcome}`` — finished runs (succeeded,
  failed, timed_out, cancelled, retried, fenced); the first ``max_jobs``
  (100) job names seen keep their own label, later ones are counted as
  ``job="other"``, so 10,000 jobs created through the API stay 100 series;
- ``keel_schedule_fires_total{group,result}`` — fires the group's leading
  planner handled: ``planned``, ``skipped`` (missed, the misfire policy said
  skip) and ``dropped`` (missed beyond ``misfire_limit``); read at scrape time
  from the live planners (``keel_schedule_leading{group}`` is 1 where this
  process leads);
- ``keel_schedule_lateness_seconds{group}`` and ``keel_schedule_duration_seconds{group}``:
  per scheduler group, not per job. Jobs can be thousands (created through
  the API), and a histogram child is a dozen locked values: per job, 1,000
  jobs made 44,000 objects that every full garbage collection walked (70-100
  ms pauses on the test machine). Per-job lateness and durations are in the
  run records (``job_statistics``).
- ``keel_records_rejected_total{area}`` — records read from the store that
  failed their decoder and were skipped (registry, health, config, schedule...).

Library code calls :func:`capability_metrics` (the process-wide registry);
tests may build their own :class:`CapabilityMetrics` on a private registry.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

__all__ = ["CapabilityMetrics", "capability_metrics"]

_FAST = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0)
OTHER_JOB = "other"


class _Planners:
    """The live planners, read at scrape time."""

    def __init__(self) -> None:
        self.live: weakref.WeakSet[Any] = weakref.WeakSet()

    def collect(self) -> Iterator[Metric]:
        fires = CounterMetricFamily(
            "keel_schedule_fires",
            "Fires handled by this process's planners while leading, by result.",
            labels=("group", "result"),
        )
        leading = GaugeMetricFamily(
            "keel_schedule_leading",
            "1 where a planner of this process leads its group.",
            labels=("group",),
        )
        sums: dict[str, list[int]] = {}
        lead: dict[str, int] = {}
        for p in list(self.live):
            row = sums.setdefault(p.group, [0, 0, 0])
            counts = p._counts
            row[0] += counts["planned"]
            row[1] += counts["skipped"]
            row[2] += counts["dropped"]
            lead[p.group] = max(lead.get(p.group, 0), int(p.leading.is_set()))
        for group, (planned, skipped, dropped) in sorted(sums.items()):
            fires.add_metric([group, "planned"], planned)
            fires.add_metric([group, "skipped"], skipped)
            fires.add_metric([group, "dropped"], dropped)
            leading.add_metric([group], lead[group])
        yield from (fires, leading)


class CapabilityMetrics:
    """The capability series on one registry.

    Args:
        registry: where to register (default: a new private registry).
        max_jobs: job names with their own ``keel_schedule_runs_total`` label.
    """

    def __init__(self, registry: CollectorRegistry | None = None, *, max_jobs: int = 100) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.max_jobs = max_jobs
        r = self.registry
        self._planners = _Planners()
        r.register(self._planners)
        self._registry_events = Counter(
            "keel_registry_events",
            "Registration events of this process.",
            ("service", "event"),
            registry=r,
        )
        self._instances = Gauge(
            "keel_discovery_instances",
            "Instances in this process's discovery cache.",
            ("service",),
            registry=r,
        )
        self._acquire = Histogram(
            "keel_coord_acquire_seconds",
            "Time to own a lock, slot or leadership.",
            ("kind",),
            buckets=_FAST,
            registry=r,
        )
        self._held = Gauge(
            "keel_coord_held", "Locks, slots and leaderships held now.", ("kind",), registry=r
        )
        self._lost = Counter(
            "keel_coord_lost",
            "Ownerships lost (session or key gone), not released.",
            ("kind",),
            registry=r,
        )
        self._runs = Counter(
            "keel_schedule_runs",
            "Finished scheduled runs by outcome.",
            ("job", "outcome"),
            registry=r,
        )
        self._lateness = Histogram(
            "keel_schedule_lateness_seconds",
            "Start time minus scheduled fire time.",
            ("group",),
            buckets=_FAST,
            registry=r,
        )
        self._duration = Histogram(
            "keel_schedule_duration_seconds",
            "Handler run time.",
            ("group",),
            buckets=_FAST,
            registry=r,
        )

        self._rejected = Counter(
            "keel_records_rejected",
            "Records read from the store that were malformed and skipped.",
            ("area",),
            registry=r,
        )

        self._run_counters: dict[tuple[str, str], Counter] = {}
        self._jobs_seen: set[str] = set()
        self._run_times: dict[str, tuple[Histogram, Histogram]] = {}

    def registry_event(self, service: str, event: str) -> None:
        """Count one registration event."""
        self._registry_events.labels(service, event).inc()

    def discovered(self, service: str, instances: int) -> None:
        """Set the cached instance count of a service."""
        self._instances.labels(service).set(instances)

    def acquired(self, kind: str, waited_s: float) -> None:
        """An ownership began after ``waited_s``."""
        self._acquire.labels(kind).observe(waited_s)
        self._held.labels(kind).inc()
        self._lost.labels(kind)  # the lost counter shows 0 from the first ownership on

    def ended(self, kind: str, *, lost: bool) -> None:
        """An ownership ended (``lost``: it was lost before it was given up)."""
        self._held.labels(kind).dec()
        if lost:
            self._lost.labels(kind).inc()

    def record_rejected(self, area: str) -> None:
        """Count one malformed record skipped by a reader of ``area``."""
        self._rejected.labels(area).inc()

    def run_finished(
        self,
        job: str,
        group: str,
        outcome: str,
        lateness_s: float | None,
        duration_s: float | None,
    ) -> None:
        """Count one finished run and observe its lateness and duration."""
        key = (job, outcome)
        counter = self._run_counters.get(key)
        if counter is None:  # labels() validates and locks: once per series, not per run
            if job not in self._jobs_seen:
                if len(self._jobs_seen) >= self.max_jobs:
                    job = OTHER_JOB
                    key = (job, outcome)
                else:
                    self._jobs_seen.add(job)
            counter = self._run_counters.get(key)
            if counter is None:
                counter = self._run_counters[key] = self._runs.labels(job, outcome)
        counter.inc()
        times = self._run_times.get(group)
        if times is None:
            times = self._run_times[group] = (
                self._lateness.labels(group),
                self._duration.labels(group),
            )
        if lateness_s is not None:
            times[0].observe(max(0.0, lateness_s))
        if duration_s is not None:
            times[1].observe(max(0.0, duration_s))

    def planner(self, planner: Any) -> None:
        """Read ``planner``'s fire counts at scrape time while it lives."""
        self._planners.live.add(planner)

    def __repr__(self) -> str:
        return f"CapabilityMetrics(registry={self.registry!r})"


_default: CapabilityMetrics | None = None


def capability_metrics() -> CapabilityMetrics:
    """The process-wide capability series on ``prometheus_client.REGISTRY`` (created once)."""
    global _default
    if _default is None:
        _default = CapabilityMetrics(REGISTRY)
    return _default
