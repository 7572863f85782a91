"""`keel services` and `keel instances` with malformed records: valid ones listed, no traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import keel
from keel.testing import EtcdCluster

BAD = {
    "services/web/list-meta": b'{"address":"1.2.3.4","port":81,"metadata":[1]}',
    "services/web/deep": b'{"address":"1.2.3.4","port":81,"m":' + b"[" * 5000 + b"]" * 5000 + b"}",
    "services/web/empty": b"{}",
    "health/web/good": b"[1]",
}


@pytest.fixture(params=["sqlite", "etcd"])
def cli_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store URL that outlives one command: a SQLite file or the test etcd."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'cli.db'}"
    cluster: EtcdCluster = request.getfixturevalue("etcd_cluster")
    return f"{cluster.url}?root=/cli-{tmp_path.name}/"


def keel_cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``keel --store URL args...`` as a process and return it finished."""
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    env.pop("KEEL_STORE", None)
    return subprocess.run(
        [sys.executable, "-m", "keel.cli", "--store", url, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


async def _seed(url: str) -> None:
    async with keel.connect(url) as store:
        await store.put("services/web/good", b'{"address":"10.0.0.9","port":8080}')
        for key, value in BAD.items():
            await store.put(key, value)


async def test_listings_skip_malformed_records(cli_url: str) -> None:
    """Valid instances are listed; one stderr line counts the skipped records; exit code 0."""
    await _seed(cli_url)
    for args in (("instances", "web"), ("instances", "web", "--json"), ("services",)):
        out = keel_cli(cli_url, *args)
        assert out.returncode == 0, out.stderr
        assert "Traceback" not in out.stderr
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and "skipped 4 malformed records" in lines[0], out.stderr
        if args[0] == "instances" and "--json" in args:
            (row,) = json.loads(out.stdout)  # -o json: one array
            assert row["id"] == "good" and row["failing"] is False
        elif args[0] == "instances":
            assert "good" in out.stdout and "list-meta" not in out.stdout
        else:
            assert "web" in out.stdout
