"""``keel config`` refuses bad input with one line on stderr, exit 2, and the store unchanged."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

import keel
from keel.config import ConfigCenter

KEEL = [sys.executable, "-m", "keel.cli"]
DEEP_YAML = "a: " + "[" * 20_000 + "]" * 20_000 + "\n"
DEEP_JSON = '{"a": ' + "[" * 20_000 + "]" * 20_000 + "}"
BOMB = "a0: &a0 [lol]\n" + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 10)
)

# (command after "config", file name, file content, words the error must contain)
CASES = [
    (["gray", "orders.yaml", "{file}"], "g.yaml", "timeout_s: 3\n", "gray rule needs"),
    (["gray", "orders.yaml", "{file}", "--percent", "150"], "g.yaml", "x: 1\n", "0-100"),
    (["gray", "orders.yaml", "{file}", "--percent=-1"], "g.yaml", "x: 1\n", "0-100"),
    (["gray", "orders.yaml", "{file}", "--percent", "nan"], "g.yaml", "x: 1\n", "0-100"),
    (["gray", "orders.yaml", "{file}", "--labels", "zone"], "g.yaml", "x: 1\n", "key=pattern"),
    (["publish", "orders.yaml", "{file}"], "deep.yaml", DEEP_YAML, "deeper than 64"),
    (["publish", "data.json", "{file}"], "deep.json", DEEP_JSON, "deeper than 64"),
    (["publish", "orders.yaml", "{file}"], "bomb.yaml", BOMB, "expand"),
    (["publish", "broken.yaml", "{file}"], "ok.yaml", "x: 1\n", "force"),
    (["rollback", "broken.yaml", "1"], "ok.yaml", "x: 1\n", "force"),
    (["publish", "orders.yaml", "{file}", "--format", "xml"], "x.xml", "<a/>", "not known"),
]


def keel_cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``keel --store URL args...`` as a real process."""
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    env.pop("KEEL_STORE", None)
    return subprocess.run(
        [*KEEL, "--store", url, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


async def seed(url: str) -> int:
    """Publish orders.yaml and a malformed broken.yaml; return the store's revision."""
    async with keel.connect(url) as store:
        center = ConfigCenter(store)
        await center.publish("orders.yaml", "timeout_s: 1\n")
        await center.publish("broken.yaml", "x: 1\n")
        await store.put("config/broken.yaml", b"[1]")
        return (await store.range(""))[1]


async def revision(url: str) -> int:
    """The store's revision now."""
    async with keel.connect(url) as store:
        return (await store.range(""))[1]


@pytest.mark.parametrize(("args", "file", "content", "words"), CASES, ids=range(len(CASES)))
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, args: list[str], file: str, content: str, words: str
) -> None:
    """Each bad input: exit 2, one line on stderr naming the problem, no traceback, no write."""
    url = f"sqlite:///{tmp_path / 'k.db'}"
    before = asyncio.run(seed(url))
    path = tmp_path / file
    path.write_text(content)
    done = keel_cli(url, "config", *(a.replace("{file}", str(path)) for a in args))
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert words in lines[0], lines[0]
    assert asyncio.run(revision(url)) == before


def test_ls_lists_the_rest_and_marks_the_malformed(tmp_path: Path) -> None:
    """ls lists every readable config and marks the malformed one instead of failing."""
    url = f"sqlite:///{tmp_path / 'k.db'}"
    asyncio.run(seed(url))
    done = keel_cli(url, "config", "ls")
    assert done.returncode == 0, done.stderr
    assert "orders.yaml" in done.stdout and "broken.yaml" in done.stdout
    assert "malformed" in done.stdout + done.stderr
    assert "Traceback" not in done.stderr


def test_status_and_watch_mark_malformed_records(tmp_path: Path) -> None:
    """status lists a malformed client report and gray record as such; watch says so too."""
    url = f"sqlite:///{tmp_path / 'k.db'}"

    async def spoil() -> None:
        async with keel.connect(url) as store:
            await ConfigCenter(store).publish("orders.yaml", "timeout_s: 1\n")
            await store.put("config-clients/orders.yaml/c1", b'{"version": "1", "gray": []}')
            await store.put("config-clients/orders.yaml/c2", b'{"version": 1, "md5": "abc"}')
            await store.put("config-gray/orders.yaml", b'{"rule": 5}')

    asyncio.run(spoil())
    done = keel_cli(url, "config", "status", "orders.yaml")
    assert done.returncode == 0, done.stderr
    assert "version 1" in done.stdout and "gray record malformed" in done.stdout
    assert "c1" in done.stdout and "malformed" in done.stdout and "abc" in done.stdout
    assert "Traceback" not in done.stderr
