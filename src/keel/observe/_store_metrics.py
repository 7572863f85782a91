"""Store operation series: counts, errors by kind, latency, watches, commit groups.

Every store call passes through :class:`keel.store.Store`'s public methods,
so the counting happens there once, for every backend. A memory ``get`` takes
about 2.5 us, so the per-call cost has to stay near 0.1 us: as with the HTTP
server series, the numbers are plain Python ints and floats in pre-built
objects (one :class:`OpSeries` per backend and operation, made once), turned
into metric families only when scraped. ``prometheus_client``'s labelled
children take a lock per increment and cost several times more.

Series (labels are bounded: ``store`` is the backend name, ``operation`` one
of a dozen names, ``kind`` an exception class name; never a key):

- ``keel_store_operations_total{store,operation}``
- ``keel_store_errors_total{store,operation,kind}``
- ``keel_store_operation_duration_seconds{store,operation}`` (histogram)
- ``keel_store_watches{store}`` (open now), ``keel_store_watch_events_total{store}``
  (events taken by consumers), ``keel_store_watch_backlog{store}`` (events the
  backend delivered that consumers have not taken yet: how far they lag) and
  ``keel_store_watch_delay_seconds{store}`` (how long each waited for its consumer)
- ``keel_store_commit_group_size`` and ``keel_store_commit_seconds`` (sqlite
  group commits: writes per transaction, time to commit one)

Written by the event loop's thread only (the sqlite commit series by the
store's writer thread only); a scrape from another thread reads whole numbers.
"""

from __future__ import annotations

import weakref
from bisect import bisect_left
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

from keel.observe._registry import LateCollector, cumulative
from keel.observe.spans import GATE

if TYPE_CHECKING:
    from prometheus_client.core import Metric

__all__ = ["BUCKETS", "OPERATIONS", "OpSeries", "StoreMetrics", "StoreSeries", "store_metrics"]

# Store latency: 50 us (memory) .. 5 s (a slow etcd quorum).
BUCKETS: Final = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025)
BUCKETS_TAIL: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_ALL: Final = BUCKETS + BUCKETS_TAIL
_SAMPLED: Final = {"memory": 63, "sqlite": 3}  # time one call in 64, in 4 (see StoreSeries)
_GROUP_SIZES: Final = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0)
_BEHIND: Final = (0.0, 1.0, 2.0, 5.0, 10.0, 50.0, 100.0, 1000.0, 10000.0)

OPERATIONS: Final = (
    "put",
    "get",
    "range",
    "delete",
    "txn",
    "grant",
    "keepalive",
    "revoke",
    "time_to_live",
    "leases",
    "compact",
    "status",
)


class OpSeries:
    """One (store, operation): calls, a latency histogram and errors by kind.

    Attributes:
        calls: every call (``keel_store_operations_total``).
        mask: time one call in ``mask + 1`` (0: every call); see :class:`StoreSeries`.
            While tracing is on it is 0, so that every call may get its span.
    """

    __slots__ = ("buckets", "calls", "errors", "mask", "sample", "sum")

    def __init__(self, mask: int = 0) -> None:
        self.calls = 0
        self.mask = mask
        self.sample = mask  # the mask while tracing is off
        self.buckets = [0] * (len(_ALL) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.errors: dict[str, int] = {}

    def observe(self, seconds: float) -> None:
        """Count one finished call that took ``seconds``."""
        self.buckets[bisect_left(_ALL, seconds)] += 1
        self.sum += seconds

    def failed(self, exc: BaseException, seconds: float | None = None) -> None:
        """Count one call that raised ``exc`` (and its latency, when it was timed)."""
        kind = type(exc).__name__
        self.errors[kind] = self.errors.get(kind, 0) + 1
        if seconds is not None:
            self.observe(seconds)

    def __repr__(self) -> str:
        return f"OpSeries(calls={self.calls}, errors={self.errors})"


class StoreSeries:
    """Every series of one backend (shared by all its connections in the process).

    Every call is counted; latency is sampled where timing would show: the
    memory backend answers a ``get`` in about 1 us, so one call in 64 is
    timed; on sqlite timing a call cost about 2 us of a 35 us read (measured
    with ``bench/observe.py``; more than its Python work, the loop thread
    and the reader thread share the GIL), so one in 4. etcd calls cross the
    network and every one is timed. The histogram's count is the timed calls.

    Attributes:
        ops: one :class:`OpSeries` per operation name.
        watches: watches open now.
        events_in: events the backend delivered to watches.
        events_out: events consumers took.
    """

    __slots__ = (
        "delay",
        "delay_sum",
        "events_in",
        "events_out",
        "lag",
        "lag_sum",
        "ops",
        "watches",
    )

    def __init__(self, mask: int = 0) -> None:
        self.ops = {name: OpSeries(mask) for name in OPERATIONS}
        self.watches = 0
        self.events_in = 0
        self.events_out = 0
        self.delay = [0] * (len(_ALL) + 1)
        self.delay_sum = 0.0
        self.lag = [0] * (len(_BEHIND) + 1)
        self.lag_sum = 0

    def taken(self, waited_s: float) -> None:
        """A consumer took one event that waited ``waited_s`` since the backend delivered it."""
        self.events_out += 1
        self.delay[bisect_left(_ALL, waited_s)] += 1
        self.delay_sum += waited_s

    def behind(self, revisions: int) -> None:
        """The backend delivered a batch ``revisions`` behind the newest committed revision."""
        self.lag[bisect_left(_BEHIND, revisions)] += 1
        self.lag_sum += revisions

    def __repr__(self) -> str:
        return f"StoreSeries(watches={self.watches}, events={self.events_out})"


class _CommitSeries:
    __slots__ = ("seconds", "sizes", "sizes_sum", "sum")

    def __init__(self) -> None:
        self.sizes = [0] * (len(_GROUP_SIZES) + 1)
        self.sizes_sum = 0
        self.seconds = [0] * (len(_ALL) + 1)
        self.sum = 0.0


class StoreMetrics(LateCollector):
    """The store series on one registry (a collector read at scrape time).

    Attributes:
        enabled: stores connected while this is False record nothing (the
            benchmark's "metrics off"); on by default.
    """

    def _start(self) -> None:
        self.enabled = True
        self._stores: dict[str, StoreSeries] = {}
        self._commits: dict[str, _CommitSeries] = {}
        _live.add(self)

    def series(self, store: str) -> StoreSeries | None:
        """The series of backend ``store`` (created once), or None when disabled."""
        if not self.enabled:
            return None
        found = self._stores.get(store)
        if found is None:
            found = self._stores[store] = StoreSeries(_SAMPLED.get(store, 0))
            if GATE.on:
                _time_every_call(found, True)
        return found

    def _tracing_turned(self, on: bool) -> None:
        for series in list(self._stores.values()):
            _time_every_call(series, on)

    def committed(self, store: str, writes: int, seconds: float) -> None:
        """Count one group commit of ``writes`` writes that took ``seconds``."""
        c = self._commits.get(store)
        if c is None:
            c = self._commits[store] = _CommitSeries()
        c.sizes[bisect_left(_GROUP_SIZES, writes)] += 1
        c.sizes_sum += writes
        c.seconds[bisect_left(_ALL, seconds)] += 1
        c.sum += seconds

    def collect(self) -> Iterator[Metric]:
        """Metric families of the current numbers (called by the registry on scrape)."""
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        total = CounterMetricFamily(
            "keel_store_operations",
            "Store calls, by backend and operation.",
            labels=("store", "operation"),
        )
        errors = CounterMetricFamily(
            "keel_store_errors",
            "Store calls that raised, by backend, operation and error kind.",
            labels=("store", "operation", "kind"),
        )
        latency = HistogramMetricFamily(
            "keel_store_operation_duration_seconds",
            "Time a store call took (failed calls included).",
            labels=("store", "operation"),
        )
        watches = GaugeMetricFamily("keel_store_watches", "Watches open now.", labels=("store",))
        events = CounterMetricFamily(
            "keel_store_watch_events", "Watch events taken by consumers.", labels=("store",)
        )
        delay = HistogramMetricFamily(
            "keel_store_watch_delay_seconds",
            "Time a watch event waited between the backend's delivery and the consumer.",
            labels=("store",),
        )
        lag = HistogramMetricFamily(
            "keel_store_watch_lag_revisions",
            "Revisions committed after the newest event of each batch a watch received "
            "(0: the watch keeps up with commits).",
            labels=("store",),
        )
        backlog = GaugeMetricFamily(
            "keel_store_watch_backlog",
            "Watch events delivered by the backend, not yet taken by consumers.",
            labels=("store",),
        )
        for store, s in list(self._stores.items()):
            for op, series in s.ops.items():
                labels = [store, op]
                if not series.calls:
                    continue
                counts = list(series.buckets)
                total.add_metric(labels, series.calls)
                latency.add_metric(labels, cumulative(counts, _ALL), series.sum)
                for kind, count in list(series.errors.items()):
                    errors.add_metric([store, op, kind], count)
            watches.add_metric([store], s.watches)
            events.add_metric([store], s.events_out)
            backlog.add_metric([store], max(0, s.events_in - s.events_out))
            delay.add_metric([store], cumulative(list(s.delay), _ALL), s.delay_sum)
            if any(s.lag):
                lag.add_metric([store], cumulative(list(s.lag), _BEHIND), s.lag_sum)
        yield from (total, errors, latency, watches, events, backlog, delay, lag)
        yield from self._collect_commits()

    def _collect_commits(self) -> Iterator[Metric]:
        from prometheus_client.core import HistogramMetricFamily

        sizes = HistogramMetricFamily(
            "keel_store_commit_group_size",
            "Writes per committed transaction (sqlite group commit).",
            labels=("store",),
        )
        seconds = HistogramMetricFamily(
            "keel_store_commit_seconds",
            "Time to run and commit one group of writes (sqlite).",
            labels=("store",),
        )
        for store, c in list(self._commits.items()):
            sizes.add_metric([store], cumulative(list(c.sizes), _GROUP_SIZES), c.sizes_sum)
            seconds.add_metric([store], cumulative(list(c.seconds), _ALL), c.sum)
        yield from (sizes, seconds)

    def __repr__(self) -> str:
        return f"StoreMetrics(stores={sorted(self._stores)}, enabled={self.enabled})"


def _time_every_call(series: StoreSeries, on: bool) -> None:
    for op in series.ops.values():
        op.mask = 0 if on else op.sample


_live: weakref.WeakSet[StoreMetrics] = weakref.WeakSet()


def _tracing_turned(on: bool) -> None:
    """Tracing was turned on or off: every store call is timed (and may get a span) or sampled."""
    for metrics in list(_live):
        metrics._tracing_turned(on)


GATE.watchers.append(_tracing_turned)

_default: StoreMetrics | None = None


def store_metrics() -> StoreMetrics:
    """The process-wide store series on ``prometheus_client.REGISTRY`` (created once)."""
    global _default
    if _default is None:
        _default = StoreMetrics.on_default_registry()
    return _default
