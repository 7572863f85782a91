"""The PromQL keel ships (dashboards, recording and alerting rules), and the series it reads."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
PROMETHEUS = ROOT / "deploy" / "prometheus"
RULE_FILES = (PROMETHEUS / "recording.yml", PROMETHEUS / "alerts.yml")

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_AFTER_BY = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")


def dashboards() -> dict[str, dict[str, Any]]:
    """Every dashboard JSON, by file name."""
    return {p.name: json.loads(p.read_text()) for p in sorted(GRAFANA.glob("*.json"))}


def dashboard_exprs() -> list[str]:
    """The PromQL of every panel target."""
    return [
        target["expr"]
        for board in dashboards().values()
        for panel in board["panels"]
        for target in panel["targets"]
    ]


def rules() -> list[dict[str, Any]]:
    """Every recording and alerting rule."""
    found: list[dict[str, Any]] = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            found.extend(group["rules"])
    return found


def series_in(expr: str) -> set[str]:
    """The keel series an expression reads (recorded names, with a colon, are left out)."""
    bare = _AFTER_BY.sub(" ", _STRING.sub('""', expr))
    bare = re.sub(r"\{[^}]*\}", " ", bare)
    return {n for n in _NAME.findall(bare) if n.startswith("keel_") and ":" not in n}


def used_series() -> set[str]:
    """Every keel series a dashboard panel or a rule reads."""
    names: set[str] = set()
    for expr in [*dashboard_exprs(), *(r["expr"] for r in rules())]:
        names |= series_in(expr)
    return names
