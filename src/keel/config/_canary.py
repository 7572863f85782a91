"""The canary record (where an analysed gray release stands) and the pure step decision.

Layout::

    config-canary/<name>                   the canary of <name>: analysis, step, recent
                                           evaluations and decisions (kept after it
                                           ends, until the next gray replaces it)
    config-canary-log/<name>/<ms>-<action> every decision with its evidence, kept

Everything the controller needs to resume is in the record (the step, when it
started, the deadline), so a controller that takes over after a crash goes
on from the recorded step. Times are wall-clock epoch seconds because the
record is read by other processes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from keel._records import load_json_object
from keel.config._analysis import Analysis, Evaluation
from keel.config._fields import integer, number, text
from keel.config._model import check_config_name

__all__ = [
    "Canary",
    "CanaryEntry",
    "canary_key",
    "canary_log_key",
    "canary_log_prefix",
    "decide",
]

Status = Literal["running", "promoted", "aborted"]
Action = Literal["wait", "advance", "promote", "abort"]
_STATUSES: tuple[Status, ...] = ("running", "promoted", "aborted")
_KEEP_EVALUATIONS = 10
_KEEP_DECISIONS = 50


def canary_key(name: str) -> str:
    """``config-canary/<name>``."""
    return f"config-canary/{name}"


def canary_log_prefix(name: str) -> str:
    """``config-canary-log/<name>/``."""
    return f"config-canary-log/{name}/"


def canary_log_key(name: str, at: float, action: str) -> str:
    """``config-canary-log/<name>/<epoch ms, 13 digits>-<action>``."""
    return f"{canary_log_prefix(name)}{int(at * 1000):013d}-{action}"


@dataclass(frozen=True, slots=True, kw_only=True)
class CanaryEntry:
    """One evaluation or decision of a canary.

    Attributes:
        at: when (epoch seconds).
        step: the step it was taken at (0-based).
        kind: ``pass``/``fail``/``inconclusive`` for an evaluation;
            ``start``/``advance``/``promote``/``abort`` for a decision.
        reasons: why.
        evidence: the numbers (gray and main tallies, the PromQL value...).
        by: the controller node, or ``manual``.
    """

    at: float
    step: int
    kind: str
    reasons: tuple[str, ...] = ()
    evidence: Mapping[str, Any] = field(default_factory=dict)
    by: str = ""

    def to_json(self) -> dict[str, Any]:
        """JSON-ready data."""
        return {
            "at": self.at,
            "step": self.step,
            "kind": self.kind,
            "reasons": list(self.reasons),
            "evidence": dict(self.evidence),
            "by": self.by,
        }

    @classmethod
    def from_json(cls, data: object) -> CanaryEntry:
        """Read an entry, strict about types (evidence is any JSON object)."""
        if not isinstance(data, dict):
            raise ValueError("a canary entry must be a mapping")
        reasons = data.get("reasons", [])
        if not isinstance(reasons, list) or not all(isinstance(r, str) for r in reasons):
            raise ValueError("field 'reasons' must be a list of strings")
        evidence = data.get("evidence", {})
        if not isinstance(evidence, dict):
            raise ValueError("field 'evidence' must be a mapping")
        return cls(
            at=number(data, "at", 0.0),
            step=integer(data, "step", minimum=0, default=0),
            kind=text(data, "kind"),
            reasons=tuple(reasons),
            evidence=evidence,
            by=text(data, "by", ""),
        )

    def encode(self) -> bytes:
        """The JSON record (for the log)."""
        return json.dumps(self.to_json(), sort_keys=True).encode()

    @classmethod
    def decode(cls, value: bytes) -> CanaryEntry:
        """Parse a stored log entry (raises ValueError on anything malformed)."""
        return cls.from_json(load_json_object(value))


@dataclass(frozen=True, slots=True, kw_only=True)
class Canary:
    """Where an analysed gray release stands.

    Attributes:
        name: the config.
        analysis: the plan.
        gray_md5: md5 of the gray content it analyses (another gray ends it).
        step: the current step (0-based).
        step_started_at: when the current step began.
        started_at: when the canary began.
        deadline_at: when it is rolled back at the latest.
        status: ``running``, ``promoted`` or ``aborted``.
        last_evaluated_at: when it was last evaluated (0: never).
        evaluations: the most recent evaluations, oldest first.
        decisions: its decisions, oldest first.
    """

    name: str
    analysis: Analysis
    gray_md5: str
    step: int
    step_started_at: float
    started_at: float
    deadline_at: float
    status: Status = "running"
    last_evaluated_at: float = 0.0
    evaluations: tuple[CanaryEntry, ...] = ()
    decisions: tuple[CanaryEntry, ...] = ()

    @property
    def percent(self) -> float:
        """The share of matching clients on gray at the current step."""
        return self.analysis.steps[min(self.step, len(self.analysis.steps) - 1)].percent

    def evaluated(self, entry: CanaryEntry) -> Canary:
        """This canary with one more evaluation (the oldest dropped past the cap)."""
        kept = (*self.evaluations, entry)[-_KEEP_EVALUATIONS:]
        return replace(self, evaluations=kept, last_evaluated_at=entry.at)

    def decided(self, entry: CanaryEntry, **changes: Any) -> Canary:
        """This canary with one more decision and the given field changes."""
        kept = (*self.decisions, entry)[-_KEEP_DECISIONS:]
        return replace(self, decisions=kept, **changes)

    def encode(self) -> bytes:
        """The JSON record."""
        body = {
            "name": self.name,
            "analysis": self.analysis.to_json(),
            "gray_md5": self.gray_md5,
            "step": self.step,
            "step_started_at": self.step_started_at,
            "started_at": self.started_at,
            "deadline_at": self.deadline_at,
            "status": self.status,
            "last_evaluated_at": self.last_evaluated_at,
            "evaluations": [e.to_json() for e in self.evaluations],
            "decisions": [d.to_json() for d in self.decisions],
        }
        return json.dumps(body, sort_keys=True).encode()

    @classmethod
    def decode(cls, value: bytes) -> Canary:
        """Parse a stored canary record, strict about every field.

        Raises:
            ValueError: malformed (readers go through ``keel._records.decode``).
        """
        r = load_json_object(value)
        status = text(r, "status")
        if status not in _STATUSES:
            raise ValueError(f"field 'status' is {status!r}, not one of {_STATUSES}")
        analysis = Analysis.from_json(r.get("analysis"))
        step = integer(r, "step", minimum=0)
        if step >= len(analysis.steps):
            raise ValueError(f"step {step} is past the analysis' {len(analysis.steps)} steps")
        return cls(
            name=check_config_name(text(r, "name")),
            analysis=analysis,
            gray_md5=text(r, "gray_md5"),
            step=step,
            step_started_at=number(r, "step_started_at", 0.0),
            started_at=number(r, "started_at", 0.0),
            deadline_at=number(r, "deadline_at", 0.0),
            status=status,
            last_evaluated_at=number(r, "last_evaluated_at", 0.0),
            evaluations=_entries(r, "evaluations"),
            decisions=_entries(r, "decisions"),
        )


def _entries(record: Mapping[str, Any], key: str) -> tuple[CanaryEntry, ...]:
    items = record.get(key, [])
    if not isinstance(items, list):
        raise ValueError(f"field {key!r} must be a list")
    return tuple(CanaryEntry.from_json(item) for item in items)


def decide(canary: Canary, evaluation: Evaluation, now: float) -> tuple[Action, str]:
    """What to do after ``evaluation`` at ``now`` (pure).

    A failed evaluation aborts at once; a passed deadline aborts (a canary
    never runs past it undecided); an inconclusive one waits; a passing one
    advances (or promotes after the last step) once the step has held for
    its duration.
    """
    steps = canary.analysis.steps
    if evaluation.verdict == "fail":
        return "abort", "; ".join(evaluation.reasons)
    if now >= canary.deadline_at:
        why = "; ".join(evaluation.reasons) if evaluation.verdict != "pass" else "steps unfinished"
        return "abort", f"deadline passed without a decision ({why})"
    if evaluation.verdict == "inconclusive":
        return "wait", "; ".join(evaluation.reasons)
    held = now - canary.step_started_at
    step = steps[canary.step]
    if held < step.duration_s:
        return "wait", f"step {canary.step + 1} holds {step.duration_s - held:.1f}s more"
    following = canary.step + 1
    if following >= len(steps) or (
        steps[following].percent >= 100 and not steps[following].duration_s
    ):
        return "promote", f"all steps passed ({'; '.join(evaluation.reasons)})"
    return "advance", f"step {canary.step + 1} passed: to {steps[following].percent:g}%"
