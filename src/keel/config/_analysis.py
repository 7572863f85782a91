"""Canary analysis: the plan (steps, success conditions) and its pure evaluation.

The model is Argo Rollouts' (steps of traffic weight with pauses, analysis
with success conditions and an optional Prometheus query), applied to a live
config instead of a deployment: the "traffic weight" is the share of clients
on the gray content, and the metrics are what the bound clients report beside
the version they run (:class:`~keel.config.ClientReport`).

:func:`evaluate` is a plain function of the reports and the query result: it
says ``pass``, ``fail`` or ``inconclusive`` (not enough data: never a
decision), with the reasons and the evidence that the controller records.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from keel.config._fields import integer, number, optional_number, text
from keel.config._model import ClientReport
from keel.errors import ValidationError

__all__ = ["Analysis", "Evaluation", "PromQuery", "Step", "Verdict", "evaluate"]

Verdict = Literal["pass", "fail", "inconclusive"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """One step of a canary: ``percent`` of the matching clients on gray for ``duration_s``.

    A last step at 100 percent with no duration means "then promote".
    """

    percent: float
    duration_s: float = 0.0

    def __post_init__(self) -> None:
        if not 0 < self.percent <= 100:
            raise ValidationError(f"step percent {self.percent!r}: use more than 0, up to 100")
        if not 0 <= self.duration_s < 365 * 86400 or math.isnan(self.duration_s):
            raise ValidationError(f"step duration {self.duration_s!r}: use seconds >= 0")


@dataclass(frozen=True, slots=True, kw_only=True)
class PromQuery:
    """A PromQL check: the query's value (the largest sample of a vector) must stay at or
    under ``max_value``.

    Attributes:
        url: the Prometheus server (``http://prometheus:9090``).
        query: the PromQL expression, e.g. ``sum(rate(errors_total[1m]))``.
        max_value: the largest acceptable value.
        timeout_s: how long to wait for the answer (no answer: inconclusive).
    """

    url: str
    query: str
    max_value: float
    timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValidationError(f"prometheus url {self.url!r}: give http(s)://host:port")
        if not self.query.strip():
            raise ValidationError("prometheus query is empty: give a PromQL expression")
        if not math.isfinite(self.max_value) or not 0 < self.timeout_s <= 60:
            raise ValidationError("prometheus max_value must be finite and timeout_s 0-60")


def _default_deadline(steps: tuple[Step, ...], interval_s: float) -> float:
    return 2 * sum(s.duration_s for s in steps) + 10 * interval_s


@dataclass(frozen=True, slots=True, kw_only=True)
class Analysis:
    """How a canary proceeds and what counts as healthy.

    Attributes:
        steps: the percentages and how long each holds (at least one).
        interval_s: time between evaluations.
        deadline_s: longest the canary may run; then it is rolled back
            (default: twice the steps' total plus ten intervals).
        require_healthy: every gray client must report healthy.
        min_clients: gray clients that must report before anything is decided.
        max_error_ratio: gray errors/requests above this fails (None: not checked).
        max_error_ratio_increase: gray ratio minus the main clients' ratio above
            this fails (None: not checked).
        min_requests: requests needed (gray, and main for the comparison)
            before a ratio counts; fewer is inconclusive.
        prometheus: an optional PromQL check.
    """

    steps: tuple[Step, ...]
    interval_s: float = 10.0
    deadline_s: float = 0.0
    require_healthy: bool = True
    min_clients: int = 1
    max_error_ratio: float | None = None
    max_error_ratio_increase: float | None = None
    min_requests: int = 1
    prometheus: PromQuery | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))
        if not self.steps:
            raise ValidationError("an analysis needs steps, e.g. [{percent: 10, duration_s: 300}]")
        if not 0.05 <= self.interval_s <= 3600:
            raise ValidationError(f"interval_s {self.interval_s!r}: use 0.05-3600 seconds")
        if self.deadline_s == 0:
            object.__setattr__(self, "deadline_s", _default_deadline(self.steps, self.interval_s))
        if not self.interval_s <= self.deadline_s < 365 * 86400:
            raise ValidationError(f"deadline_s {self.deadline_s!r}: at least one interval")
        if self.min_clients < 1 or self.min_requests < 0:
            raise ValidationError("min_clients must be 1 or more and min_requests 0 or more")
        for ratio in (self.max_error_ratio, self.max_error_ratio_increase):
            if ratio is not None and not 0 <= ratio <= 1:
                raise ValidationError(f"error ratio threshold {ratio!r}: use 0-1")

    def to_json(self) -> dict[str, Any]:
        """The analysis as JSON-ready data (the form :meth:`from_json` reads)."""
        p = self.prometheus
        prom = (
            None
            if p is None
            else {
                "url": p.url,
                "query": p.query,
                "max_value": p.max_value,
                "timeout_s": p.timeout_s,
            }
        )
        return {
            "steps": [{"percent": s.percent, "duration_s": s.duration_s} for s in self.steps],
            "interval_s": self.interval_s,
            "deadline_s": self.deadline_s,
            "require_healthy": self.require_healthy,
            "min_clients": self.min_clients,
            "max_error_ratio": self.max_error_ratio,
            "max_error_ratio_increase": self.max_error_ratio_increase,
            "min_requests": self.min_requests,
            "prometheus": prom,
        }

    @classmethod
    def from_json(cls, data: object) -> Analysis:
        """Read an analysis from parsed YAML/JSON, strict about every field.

        Raises:
            ValidationError: a field is missing, unknown, of the wrong type or out of range.
        """
        try:
            return cls._from(data)
        except ValidationError:
            raise
        except (ValueError, TypeError) as exc:
            raise ValidationError(f"analysis: {exc}") from exc

    @classmethod
    def _from(cls, data: object) -> Analysis:
        if not isinstance(data, dict):
            raise ValueError("must be a mapping with steps, interval_s, ...")
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown field(s) {sorted(unknown)}")
        steps = data.get("steps")
        if not isinstance(steps, list) or not all(isinstance(s, dict) for s in steps):
            raise ValueError("steps must be a list of {percent, duration_s}")
        prom = data.get("prometheus")
        healthy = data.get("require_healthy", True)
        if not isinstance(healthy, bool):
            raise ValueError("require_healthy must be true or false")
        return cls(
            steps=tuple(
                Step(percent=number(s, "percent", -1), duration_s=number(s, "duration_s", 0.0))
                for s in steps
            ),
            interval_s=number(data, "interval_s", 10.0),
            deadline_s=number(data, "deadline_s", 0.0),
            require_healthy=healthy,
            min_clients=integer(data, "min_clients", minimum=1, default=1),
            max_error_ratio=optional_number(data, "max_error_ratio"),
            max_error_ratio_increase=optional_number(data, "max_error_ratio_increase"),
            min_requests=integer(data, "min_requests", minimum=0, default=1),
            prometheus=None if prom is None else _prom(prom),
        )


def _prom(data: object) -> PromQuery:
    if not isinstance(data, dict):
        raise ValueError("prometheus must be a mapping with url, query, max_value")
    max_value = optional_number(data, "max_value")
    if max_value is None:
        raise ValueError("prometheus.max_value is missing")
    return PromQuery(
        url=text(data, "url"),
        query=text(data, "query"),
        max_value=max_value,
        timeout_s=number(data, "timeout_s", 5.0),
    )


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The outcome of one evaluation.

    Attributes:
        verdict: ``pass``, ``fail`` or ``inconclusive``.
        reasons: why (every failed or undecided condition; the passed ones when it passes).
        evidence: the numbers it was decided on (recorded in the canary's history).
    """

    verdict: Verdict
    reasons: tuple[str, ...]
    evidence: Mapping[str, Any]


def _tally(reports: Iterable[tuple[str, ClientReport]]) -> dict[str, Any]:
    items = list(reports)
    errors = sum(r.errors for _, r in items)
    requests = sum(r.requests for _, r in items)
    return {
        "clients": len(items),
        "unhealthy": sorted(c for c, r in items if r.healthy is False),
        "errors": errors,
        "requests": requests,
        "error_ratio": errors / requests if requests else None,
    }


def evaluate(
    analysis: Analysis,
    gray: Mapping[str, ClientReport],
    main: Mapping[str, ClientReport],
    prom_value: float | None = None,
    prom_error: str = "",
) -> Evaluation:
    """Judge the gray clients' reports (and the query's value) against ``analysis`` (pure).

    Args:
        gray: client id → report, for clients running the gray content with a health check.
        main: the same for clients on the main version.
        prom_value: the PromQL value (None: no answer or no query).
        prom_error: why there is no value, when a query is configured.
    """
    g, m = _tally(gray.items()), _tally(main.items())
    evidence: dict[str, Any] = {"gray": g, "main": m}
    failed: list[str] = []
    undecided: list[str] = []
    passed: list[str] = []
    if g["clients"] < analysis.min_clients:
        undecided.append(f"{g['clients']} gray client(s) reported, {analysis.min_clients} needed")
    if analysis.require_healthy and g["unhealthy"]:
        failed.append(f"gray client(s) unhealthy: {', '.join(g['unhealthy'][:10])}")
    elif analysis.require_healthy and g["clients"]:
        passed.append(f"all {g['clients']} gray client(s) healthy")
    _ratios(analysis, g, m, failed, undecided, passed)
    if analysis.prometheus is not None:
        q = analysis.prometheus
        evidence["prometheus"] = {"query": q.query, "value": prom_value, "error": prom_error}
        if prom_value is None:
            undecided.append(f"no value from Prometheus ({prom_error or 'empty result'})")
        elif prom_value > q.max_value:
            failed.append(f"PromQL value {prom_value:g} is over {q.max_value:g}")
        else:
            passed.append(f"PromQL value {prom_value:g} within {q.max_value:g}")
    if failed:
        return Evaluation("fail", tuple(failed), evidence)
    if undecided:
        return Evaluation("inconclusive", tuple(undecided), evidence)
    return Evaluation("pass", tuple(passed), evidence)


def _ratios(
    analysis: Analysis,
    g: Mapping[str, Any],
    m: Mapping[str, Any],
    failed: list[str],
    undecided: list[str],
    passed: list[str],
) -> None:
    if analysis.max_error_ratio is None and analysis.max_error_ratio_increase is None:
        return
    if g["requests"] < max(1, analysis.min_requests):
        undecided.append(f"gray clients served {g['requests']} request(s), too few to judge")
        return
    ratio: float = g["error_ratio"]
    if analysis.max_error_ratio is not None:
        if ratio > analysis.max_error_ratio:
            failed.append(f"gray error ratio {ratio:.4f} over {analysis.max_error_ratio}")
        else:
            passed.append(f"gray error ratio {ratio:.4f} within {analysis.max_error_ratio}")
    margin = analysis.max_error_ratio_increase
    if margin is None:
        return
    if m["requests"] < max(1, analysis.min_requests):
        undecided.append(f"main clients served {m['requests']} request(s), too few to compare")
        return
    base: float = m["error_ratio"]
    if ratio - base > margin:
        failed.append(f"gray error ratio {ratio:.4f} exceeds main {base:.4f} by more than {margin}")
    else:
        passed.append(f"gray error ratio {ratio:.4f} within {margin} of main {base:.4f}")
