"""Canary analysis, pure: the plan's validation, evaluate() and decide()."""

from __future__ import annotations

import pytest

from keel.config import (
    Analysis,
    Canary,
    ClientReport,
    Evaluation,
    PromQuery,
    Step,
    decide,
    evaluate,
)
from keel.errors import ValidationError

PLAN = Analysis(
    steps=(Step(percent=10, duration_s=300), Step(percent=50, duration_s=300), Step(percent=100)),
    interval_s=10,
    max_error_ratio=0.05,
    max_error_ratio_increase=0.01,
    min_requests=100,
)


def client(*, gray: bool, healthy: bool = True, errors: int = 0, requests: int = 0) -> ClientReport:
    """A client report."""
    return ClientReport(
        version=1,
        gray=gray,
        md5="g" if gray else "m",
        healthy=healthy,
        errors=errors,
        requests=requests,
    )


def test_plan_from_yaml_data_and_refusals() -> None:
    """An analysis reads from parsed YAML; bad plans are refused naming the field."""
    data = {
        "steps": [
            {"percent": 10, "duration_s": 300},
            {"percent": 50, "duration_s": 300},
            {"percent": 100},
        ],
        "interval_s": 10,
        "max_error_ratio": 0.05,
        "prometheus": {"url": "http://127.0.0.1:9090", "query": "sum(x)", "max_value": 1},
    }
    plan = Analysis.from_json(data)
    assert plan.steps[2] == Step(percent=100) and plan.prometheus is not None
    assert plan.deadline_s == 2 * 600 + 100
    assert Analysis.from_json(plan.to_json()) == plan
    for bad, words in [
        ({}, "steps"),
        ({"steps": []}, "needs steps"),
        ({"steps": [{"percent": 150}]}, "percent"),
        ({"steps": [{"percent": 10}], "interval_s": 0}, "interval_s"),
        ({"steps": [{"percent": 10}], "colour": 1}, "unknown"),
        ({"steps": [{"percent": 10}], "max_error_ratio": 2}, "0-1"),
        (
            {"steps": [{"percent": 10}], "prometheus": {"url": "x", "query": "q", "max_value": 1}},
            "http",
        ),
    ]:
        with pytest.raises(ValidationError, match=words):
            Analysis.from_json(bad)
    with pytest.raises(ValidationError):
        PromQuery(url="http://p:9090", query=" ", max_value=1)


def test_evaluate_passes_fails_and_waits() -> None:
    """All healthy and ratios within bounds pass; an unhealthy client or a high ratio fails;
    too few requests or no gray client is inconclusive."""
    main = {"m1": client(gray=False, errors=10, requests=1000)}
    ok = evaluate(PLAN, {"g1": client(gray=True, errors=1, requests=200)}, main)
    assert ok.verdict == "pass" and ok.evidence["gray"]["error_ratio"] == 0.005
    sick = evaluate(PLAN, {"g1": client(gray=True, healthy=False, requests=200)}, main)
    assert sick.verdict == "fail" and "g1" in sick.reasons[0]
    worse = evaluate(PLAN, {"g1": client(gray=True, errors=5, requests=200)}, main)
    assert worse.verdict == "fail" and "exceeds main" in worse.reasons[0]
    few = evaluate(PLAN, {"g1": client(gray=True, requests=5)}, main)
    assert few.verdict == "inconclusive"
    assert evaluate(PLAN, {}, main).verdict == "inconclusive"
    prom = Analysis(
        steps=(Step(percent=10),), prometheus=PromQuery(url="http://p", query="q", max_value=1)
    )
    gray = {"g1": client(gray=True)}
    assert evaluate(prom, gray, {}, 2.0).verdict == "fail"
    assert evaluate(prom, gray, {}, 0.5).verdict == "pass"
    assert evaluate(prom, gray, {}, None, "refused").verdict == "inconclusive"


def canary_at(step: int, started: float) -> Canary:
    """A running canary of PLAN at ``step``, started at ``started``."""
    return Canary(
        name="o.yaml",
        analysis=PLAN,
        gray_md5="g",
        step=step,
        step_started_at=started,
        started_at=0,
        deadline_at=PLAN.deadline_s,
    )


def test_decide_follows_the_steps_and_the_deadline() -> None:
    """Fail aborts at once; pass advances after the step's duration, promotes after the
    last; inconclusive waits, until the deadline rolls back."""
    good = Evaluation("pass", ("ok",), {})
    assert decide(canary_at(0, 0), good, 100)[0] == "wait"
    assert decide(canary_at(0, 0), good, 300) == ("advance", "step 1 passed: to 50%")
    assert decide(canary_at(1, 300), good, 600)[0] == "promote"
    assert decide(canary_at(0, 0), Evaluation("fail", ("bad",), {}), 1) == ("abort", "bad")
    unsure = Evaluation("inconclusive", ("no data",), {})
    assert decide(canary_at(0, 0), unsure, 900)[0] == "wait"
    action, why = decide(canary_at(0, 0), unsure, PLAN.deadline_s)
    assert action == "abort" and "deadline" in why
    assert Canary.decode(canary_at(1, 5).encode()) == canary_at(1, 5)
