"""``keel gateway check`` and ``keel gateway routes`` as real processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.cli._cli import keel_cli

DOC = """
routes:
  - id: users
    match: {path: /api/users/, methods: [GET]}
    forward:
      service: users
      strip_prefix: true
      split: [{weight: 90, version: v1}, {weight: 10, version: v2}]
  - id: ping
    match: {path: /ping}
    respond: {body: pong}
"""


@pytest.mark.slow
def test_check_valid_and_invalid(tmp_path: Path) -> None:
    """A valid document passes; an invalid one exits 2 with one line naming the route and field."""
    good = tmp_path / "gateway.yaml"
    good.write_text(DOC)
    result = keel_cli("gateway", "check", str(good))
    assert result.code == 0 and b"valid, 2 routes" in result.out
    bad = tmp_path / "bad.yaml"
    bad.write_text("routes:\n  - id: users\n    forward: {service: users, timeout_s: 0}\n")
    result = keel_cli("gateway", "check", str(bad))
    assert result.code == 2 and result.out == b""
    assert result.err_lines == [
        "keel: error: bad.yaml: route 'users': forward.timeout_s: Input should be greater than 0"
    ]


@pytest.mark.slow
def test_routes_lists_the_published_document(tmp_path: Path) -> None:
    """Routes of the published document as a table, JSON or YAML; none published is exit 1."""
    url = f"sqlite:///{tmp_path / 'keel.db'}"
    doc = tmp_path / "gateway.yaml"
    doc.write_text(DOC)
    assert keel_cli("gateway", "routes", url=url).code == 1
    assert keel_cli("config", "publish", "gateway.yaml", str(doc), url=url).code == 0
    table = keel_cli("gateway", "routes", url=url)
    assert table.code == 0
    lines = table.out.decode().splitlines()
    assert lines[0].split()[:4] == ["ID", "PRI", "HOSTS", "PATH"]
    assert "service users split 90:v1 10:v2" in lines[1] and "respond 200" in lines[2]
    rows = json.loads(keel_cli("gateway", "routes", "-o", "json", url=url).out)
    assert [r["id"] for r in rows] == ["users", "ping"] and rows[0]["methods"] == ["GET"]
    assert yaml.safe_load(keel_cli("gateway", "routes", "-o", "yaml", url=url).out) == rows
