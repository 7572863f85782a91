"""Merge the Prometheus expositions of several processes into one.

A Service with ``workers`` > 1 is one instance served by several processes;
a scrape reaches one of them, yet should see the instance. Each process
renders its own registry; :func:`merge_expositions` adds them up:

- counters, histograms and summaries (and untyped series) are summed per
  label set: requests served, their duration buckets, CPU seconds;
- gauges keep one series per process, with a ``worker`` label naming it
  ("0", "1"... or "supervisor"): a circuit's state or a process's memory do
  not add up. A gauge that already has a ``worker`` label is kept as is, and
  a part whose process name is "" speaks for the whole (no label added);
- ``*_created`` series (when a counter or histogram began) take the earliest.

Why not ``prometheus_client``'s multiprocess mode: it only covers metric
objects whose values live in its mmap files, not custom collectors (keel's
HTTP server series are plain numbers read at scrape time, to keep a lock off
the request path), and it must be set up before the library is imported.
Merging the text of each process covers every collector.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["WORKER_LABEL", "merge_expositions"]

WORKER_LABEL = "worker"

_LabelKey = tuple[tuple[str, str], ...]


class _Merged:
    """The families being merged, in the order they were first seen."""

    def __init__(self) -> None:
        self.families: dict[str, Metric] = {}
        self.values: dict[str, dict[tuple[str, _LabelKey], float]] = {}
        self.labels: dict[str, dict[tuple[str, _LabelKey], dict[str, str]]] = {}

    def add(self, process: str, family: Metric) -> None:
        merged = self.families.get(family.name)
        if merged is None:
            merged = Metric(family.name, family.documentation, family.type, family.unit)
            self.families[family.name] = merged
            self.values[family.name] = {}
            self.labels[family.name] = {}
        elif merged.type != family.type:
            return  # the same name with another type in another process: keep the first
        values = self.values[family.name]
        labels = self.labels[family.name]
        per_process = family.type in ("gauge", "info", "stateset")
        earliest = family.name.endswith("_created")
        for sample in family.samples:
            names = dict(sample.labels)
            if per_process and not earliest and process:
                names.setdefault(WORKER_LABEL, process)
            key = (sample.name, tuple(sorted(names.items())))
            if key not in values:
                values[key] = sample.value
                labels[key] = names
            elif earliest:
                values[key] = min(values[key], sample.value)
            else:
                values[key] += sample.value

    def collect(self) -> Iterator[Metric]:
        for name, header in self.families.items():
            family = Metric(name, header.documentation, header.type, header.unit)
            labels = self.labels[name]
            for key, value in self.values[name].items():
                family.add_sample(key[0], labels[key], value)
            yield family


def merge_expositions(parts: Sequence[tuple[str, str]]) -> bytes:
    """One exposition (text format 0.0.4) from ``(process name, exposition text)`` pairs.

    Raises:
        ValueError: a part is not in the Prometheus text format.
    """
    merged = _Merged()
    for process, text in parts:
        for family in text_string_to_metric_families(text):
            merged.add(process, family)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(merged)
    return generate_latest(registry)
