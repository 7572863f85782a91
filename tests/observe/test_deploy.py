"""The shipped Prometheus rules pass promtool; the Grafana dashboards have what an import needs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from tests.observe._promql import (
    GRAFANA,
    PROMETHEUS,
    RULE_FILES,
    dashboard_exprs,
    dashboards,
    rules,
    series_in,
)

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"  # make test installs it
OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run promtool; the result carries its output for the assertion message."""
    return subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_rules_pass_promtool_check() -> None:
    """Recording and alerting rules are valid (syntax, PromQL, templates)."""
    done = promtool("check", "rules", *map(str, RULE_FILES))
    assert done.returncode == 0, done.stdout + done.stderr


def test_rules_pass_their_promtool_unit_tests() -> None:
    """Every alert fires on the series that should fire it (promtool test rules)."""
    tests = sorted((PROMETHEUS / "tests").glob("*.yml"))
    assert tests
    done = promtool("test", "rules", *map(str, tests))
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    """Each panel's expression parses (checked as a recording rule by promtool)."""
    exprs = dashboard_exprs()
    group = {
        "name": "dashboards",
        "rules": [{"record": f"keel:dashboard_{i}", "expr": e} for i, e in enumerate(exprs)],
    }
    path = tmp_path / "dashboards.yml"
    path.write_text(yaml.safe_dump({"groups": [group]}))
    done = promtool("check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr


def test_dashboards_have_what_an_import_needs() -> None:
    """uid and title, a Prometheus data-source variable, panels with data source and targets."""
    boards = dashboards()
    assert {"overview.json", "services.json", "store.json", "coordination.json"} <= set(boards)
    assert "scheduler.json" in boards
    uids = [b["uid"] for b in boards.values()]
    assert len(set(uids)) == len(uids)
    for name, board in boards.items():
        assert board["uid"] and len(board["uid"]) <= 40, name
        assert board["title"] and isinstance(board["schemaVersion"], int), name
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        ids = [p["id"] for p in board["panels"]]
        assert len(set(ids)) == len(ids), name
        for panel in board["panels"]:
            where = f"{name}: {panel['title']}"
            assert panel["type"] in ("timeseries", "stat"), where
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, where
            assert set(panel["gridPos"]) == {"h", "w", "x", "y"}, where
            assert panel["targets"], where
            for target in panel["targets"]:
                assert target["expr"] and target["refId"], where
                assert target["datasource"] == panel["datasource"], where
                assert series_in(target["expr"]), f"{where} reads no keel series"
    assert (GRAFANA / "build.py").exists()


def test_every_alert_has_a_runbook_section() -> None:
    """Each alert names its runbook anchor, and docs/operations.md has that section."""
    text = OPERATIONS.read_text()
    headings = {
        line.lstrip("#").strip().lower() for line in text.splitlines() if line.startswith("### ")
    }
    alerts = [r for r in rules() if "alert" in r]
    assert len(alerts) >= 10
    for rule in alerts:
        name = rule["alert"]
        assert rule["annotations"]["runbook_url"].endswith(f"#{name.lower()}"), name
        assert name.lower() in headings, f"docs/operations.md has no '### {name}' runbook"


def test_series_names_are_read_from_promql() -> None:
    """The parser keeps metric names and drops labels, strings, functions and recorded names."""
    expr = (
        'sum by (store, kind) (rate(keel_store_errors_total{kind!~"keel_x|y"}[5m])) '
        "/ store:keel_store_operations:rate5m > on (store) keel_store_watches"
    )
    assert series_in(expr) == {"keel_store_errors_total", "keel_store_watches"}
