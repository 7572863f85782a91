"""``keel config gray --analysis`` and ``keel config status`` as real processes (sqlite)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

KEEL = [sys.executable, "-m", "keel.cli"]
PLAN = """\
steps:
  - {percent: 10, duration_s: 300}
  - {percent: 50, duration_s: 300}
  - {percent: 100}
interval_s: 10
max_error_ratio_increase: 0.01
"""


def run_cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``keel --store URL config args...``."""
    return subprocess.run(
        [*KEEL, "--store", url, "config", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_gray_with_analysis_and_status(store_url: str, tmp_path: Path) -> None:
    """A canary starts from an analysis file; status shows its step and decisions; a bad
    analysis is one line, exit 2, nothing written; an abort by hand is recorded."""
    doc, plan, bad = tmp_path / "o.yaml", tmp_path / "plan.yaml", tmp_path / "bad.yaml"
    doc.write_text("timeout_s: 1\n")
    plan.write_text(PLAN)
    bad.write_text("steps: [{percent: 10}]\ncolour: red\n")
    assert run_cli(store_url, "publish", "o.yaml", str(doc)).returncode == 0
    refused = run_cli(store_url, "gray", "o.yaml", str(doc), "--analysis", str(bad))
    assert refused.returncode == 2 and "colour" in refused.stderr
    assert refused.stderr.count("\n") == 1
    assert "no gray release" in run_cli(store_url, "status", "o.yaml").stdout
    started = run_cli(store_url, "gray", "o.yaml", str(doc), "--analysis", str(plan))
    assert started.returncode == 0, started.stderr
    assert "10% → 50% → 100%" in started.stdout
    table = run_cli(store_url, "status", "o.yaml").stdout
    assert "canary running: step 1/3 at 10%" in table
    status = json.loads(run_cli(store_url, "status", "o.yaml", "-o", "json").stdout)
    assert status["canary"]["step"] == 1 and status["canary"]["decisions"][0]["kind"] == "start"
    assert run_cli(store_url, "abort", "o.yaml").returncode == 0
    status = json.loads(run_cli(store_url, "status", "o.yaml", "-o", "json").stdout)
    assert status["canary"]["status"] == "aborted"
    assert status["canary"]["decisions"][-1]["by"] == "manual"


def test_keel_up_shows_a_running_canary() -> None:
    """keel up's configs panel shows a running canary's step and percent; a malformed
    canary record is skipped (plain "yes")."""
    from keel.cli._up_view import UpView
    from keel.config import Analysis, Canary, ConfigDocument, Step
    from keel.store import Event, EventType, KeyValue

    def put(key: str, value: bytes, rev: int) -> Event:
        return Event(EventType.PUT, KeyValue(key, value, rev, rev, 1, 0))

    doc = ConfigDocument(name="o.yaml", content="x: 1\n", format="yaml", version=3, md5="m")
    canary = Canary(
        name="o.yaml",
        analysis=Analysis(
            steps=(Step(percent=10, duration_s=60), Step(percent=50), Step(percent=100))
        ),
        gray_md5="g",
        step=1,
        step_started_at=0,
        started_at=0,
        deadline_at=1e12,
    )
    view = UpView(url="memory://")
    view.apply(put("config/o.yaml", doc.encode(), 1))
    view.apply(put("config-gray/o.yaml", b"{}", 2))
    view.apply(put("config-canary/o.yaml", canary.encode(), 3))
    row = view.extra_panels()[0].rows[0]
    assert str(row[-1]) == "canary 2/3 50%"
    view.apply(put("config-canary/o.yaml", b"{not json", 4))
    assert str(view.extra_panels()[0].rows[0][-1]) == "yes"
