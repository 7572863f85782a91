"""The CLI's conventions, table-driven: ``-o json`` parses, piped output is whole, exit codes."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import select
import subprocess
from pathlib import Path

import pytest
import yaml

import keel
from keel.config import ConfigCenter
from keel.registry import Instance
from keel.registry._model import encode_instance, instance_key
from keel.schedule import put_job, trigger_job
from keel.schedule._model import JobDef
from tests.cli._cli import KEEL, keel_cli, keel_env

LONG_KEY = "app/" + "k" * 150
LONG_VALUE = "v" * 300
LONG_JOB = "nightly-" + "j" * 120
HOLDER_VALUE = b"node-7"


async def _prepare(url: str) -> int:
    """Seed one store for the whole module; return the id of its long-lived lease."""
    async with keel.connect(url) as store:
        lease = await store.grant(3600)
        await store.put(LONG_KEY, LONG_VALUE.encode())
        await store.put("plain", b"1")
        instance = Instance(service="orders", address="127.0.0.1", port=8080)
        await store.put(
            instance_key("orders", instance.id), encode_instance(instance), lease=lease.id
        )
        await store.put(f"locks/held/{lease.id:x}", b"", lease=lease.id)
        await store.put(f"elections/boss/{lease.id:x}", HOLDER_VALUE, lease=lease.id)
        await ConfigCenter(store).publish("app.yaml", "a: 1\n", format="yaml")
        await put_job(store, JobDef(name=LONG_JOB, group="default", trigger={"interval_s": 3600}))
        await trigger_job(store, LONG_JOB)
        return lease.id


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, int]:
    """A SQLite store with keys, a lease, an instance, a lock, a leader, a config, a job."""
    url = f"sqlite:///{tmp_path_factory.mktemp('conv') / 'k.db'}"
    return url, asyncio.run(_prepare(url))


# (argv; the JSON type -o json prints: list or dict)
READS: list[tuple[list[str], type]] = [
    (["store", "ls"], list),
    (["store", "get", "plain"], dict),
    (["store", "status"], dict),
    (["status"], dict),
    (["store", "lease", "ls"], list),
    (["store", "lease", "ttl", "{lease}"], dict),
    (["locks"], list),
    (["locks", "--all"], list),
    (["leader", "boss"], dict),
    (["services"], list),
    (["instances", "orders"], list),
    (["config", "ls"], list),
    (["config", "get", "app.yaml"], dict),
    (["config", "history", "app.yaml"], list),
    (["config", "status", "app.yaml"], dict),
    (["config", "diff", "app.yaml", "1", "1"], dict),
    (["jobs"], list),
    (["jobs", "ls"], list),
    (["jobs", "runs", LONG_JOB], list),
]


def _id(value: object) -> str:
    if isinstance(value, list):
        return " ".join(map(str, value))[:30]
    return getattr(value, "__name__", str(value))


def _argv(args: list[str], lease: int) -> list[str]:
    return [a.replace("{lease}", str(lease)) for a in args]


@pytest.mark.parametrize(("args", "kind"), READS, ids=_id)
def test_every_read_prints_one_json_document(
    seeded: tuple[str, int], args: list[str], kind: type
) -> None:
    """-o json is one JSON document: an array for a list, an object for one thing."""
    url, lease = seeded
    result = keel_cli(*_argv(args, lease), "-o", "json", url=url)
    assert result.code == 0, result.err_lines
    doc = json.loads(result.out)
    assert isinstance(doc, kind)
    if kind is list:
        assert doc, "the seeded store has something to list"


@pytest.mark.parametrize(("args", "kind"), READS, ids=_id)
def test_every_read_prints_yaml_the_same_data(
    seeded: tuple[str, int], args: list[str], kind: type
) -> None:
    """-o yaml is the same data as -o json; --json is -o json; -o wide draws a table."""
    url, lease = seeded
    argv = _argv(args, lease)
    as_yaml = keel_cli(*argv, "-o", "yaml", url=url)
    as_json = keel_cli(*argv, "--json", url=url)
    assert as_yaml.code == as_json.code == 0, (as_yaml.err_lines, as_json.err_lines)
    assert isinstance(yaml.safe_load(as_yaml.out), kind)
    assert isinstance(json.loads(as_json.out), kind)
    wide = keel_cli(*argv, "-o", "wide", url=url)
    assert wide.code == 0 and wide.out.strip()


def test_numbers_are_numbers(seeded: tuple[str, int]) -> None:
    """Revisions, versions and counts are JSON numbers, not strings."""
    url, _ = seeded
    status = json.loads(keel_cli("store", "status", "-o", "json", url=url).out)
    assert isinstance(status["revision"], int) and isinstance(status["keys"], int)
    (record,) = json.loads(keel_cli("store", "ls", "plain", "-o", "json", url=url).out)
    assert isinstance(record["version"], int) and isinstance(record["mod_revision"], int)


@pytest.mark.parametrize(
    ("args", "whole"),
    [
        (["store", "ls"], [LONG_KEY, LONG_VALUE]),
        (["store", "watch", "--rev", "1", "--count", "2"], [LONG_KEY, LONG_VALUE]),
        (["jobs"], [LONG_JOB]),
        (["jobs", "runs", LONG_JOB], [LONG_JOB]),
    ],
    ids=_id,
)
def test_piped_output_is_never_cut(
    seeded: tuple[str, int], args: list[str], whole: list[str]
) -> None:
    """To a pipe, long keys, values and names appear whole: no '…', no wrapping, no colour."""
    url, _ = seeded
    result = keel_cli(*args, url=url, env={"COLUMNS": "80", "NO_COLOR": ""})
    assert result.code == 0, result.err_lines
    text = result.out.decode()
    for piece in whole:
        assert piece in text
    assert "…" not in text and "\x1b[" not in text


def test_watch_in_json_is_one_object_per_line(seeded: tuple[str, int]) -> None:
    """store watch -o json prints one JSON object per line, with numbers as numbers."""
    url, _ = seeded
    result = keel_cli("store", "watch", "--rev", "1", "--count", "3", "-o", "json", url=url)
    assert result.code == 0, result.err_lines
    lines = result.out.decode().splitlines()
    events = [json.loads(line) for line in lines]
    assert len(events) == 3 and all(isinstance(e["revision"], int) for e in events)
    (long,) = [e for e in events if e["key"] == LONG_KEY]
    assert long["type"] == "PUT" and long["value"] == LONG_VALUE


# (argv, exit code, a fragment of the error line)
EXITS: list[tuple[list[str], int, str]] = [
    (["store", "get", "nosuch"], 1, "not found"),
    (["store", "lease", "ttl", "12345"], 1, "not found"),
    (["config", "get", "nosuch"], 1, "not found"),
    (["config", "history", "nosuch"], 1, "no history"),
    (["jobs", "runs", "nosuch"], 1, "nosuch"),
    (["jobs", "logs", "nosuch/1-0"], 1, "nosuch"),
    (["jobs", "rm", "nosuch"], 1, "no job"),
    (["instances", "nosuch"], 1, "no instances"),
    (["leader", "nosuch"], 1, "no leader"),
    (["store", "ls", "-o", "xml"], 2, "not an output format"),
    (["lock", "--timeout", "0.5", "held", "--", "true"], 4, "not acquired within"),
]


@pytest.mark.parametrize(("args", "code", "fragment"), EXITS, ids=_id)
def test_exit_codes(seeded: tuple[str, int], args: list[str], code: int, fragment: str) -> None:
    """Each case exits with the documented code and says why on the last stderr line."""
    url, _ = seeded
    result = keel_cli(*args, url=url)
    assert result.code == code, result.err_lines
    assert result.out == b""
    assert fragment in result.err_lines[-1]


def test_missing_sqlite_file_is_not_found(tmp_path: Path) -> None:
    """A read on a SQLite path that does not exist: exit 1, and no file is created."""
    path = tmp_path / "nosuch.db"
    for args in (["store", "ls"], ["status"], ["jobs"], ["services"], ["config", "ls"]):
        result = keel_cli(*args, env={"KEEL_STORE": f"sqlite:///{path}"})
        assert result.code == 1 and "no store at" in result.err_lines[-1], args
        assert "came from KEEL_STORE" in result.err_lines[-1]
    assert not path.exists()


def test_lock_says_whom_it_waits_for(seeded: tuple[str, int]) -> None:
    """keel lock says on stderr that it waits, for which lease, before timing out (exit 4)."""
    url, lease = seeded
    result = keel_cli("lock", "--timeout", "2", "held", "--", "true", url=url)
    assert result.code == 4
    assert "waiting for 'held'" in result.err_lines[0]
    assert f"{lease:x}" in result.err_lines[0]


def test_status_says_which_store_and_where_from(seeded: tuple[str, int]) -> None:
    """keel status names the store's absolute path and whether --store, KEEL_STORE or default."""
    missing = keel_cli("status", env={"KEEL_STORE": ""})  # the default, in the test's cwd
    if missing.code == 1:
        assert "the default store" in missing.err_lines[-1]
    url, _ = seeded
    by_flag = json.loads(keel_cli("status", "-o", "json", url=url).out)
    assert by_flag["url_from"] == "--store"
    assert by_flag["path"] == url.removeprefix("sqlite:///")
    by_env = keel_cli("status", "-o", "json", env={"KEEL_STORE": url})
    assert json.loads(by_env.out)["url_from"] == "KEEL_STORE"


def test_version_and_short_help() -> None:
    """keel --version prints the version; -h is --help and lists the exit codes."""
    version = keel_cli("--version")
    assert version.code == 0 and version.out.decode() == f"keel {keel.__version__}\n"
    short, long = keel_cli("-h"), keel_cli("--help")
    assert short.code == 0 and short.out == long.out
    text = short.out.decode()
    assert "Exit codes:" in text and "timed out" in text and "<bool>" not in text
    store_help = keel_cli("store", "get", "-h").out.decode()
    assert "KEY" in store_help and "FORMAT" in store_help


def test_store_get_ends_the_line_on_a_terminal(seeded: tuple[str, int]) -> None:
    """On a terminal, store get prints the value and a newline (the prompt starts on its line)."""
    url, _ = seeded
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run(
            [KEEL, "--store", url, "store", "get", "plain"],
            stdout=follower,
            stderr=subprocess.PIPE,
            env=keel_env(),
            timeout=60,
            check=False,
        )
        os.close(follower)
        follower = -1
        out = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the terminal has no writer left
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)
    assert proc.returncode == 0, proc.stderr
    assert out == b"1\r\n"


def test_leader_watch_in_json_is_one_object_per_line(seeded: tuple[str, int]) -> None:
    """leader --watch -o json prints the current leader as one JSON object on a line."""
    url, _ = seeded
    argv = [KEEL, "--store", url, "leader", "boss", "--watch", "-o", "json"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=keel_env())
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready, "no line within 60 s"
        first = json.loads(proc.stdout.readline())
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    assert first["leader"] == HOLDER_VALUE.decode() and isinstance(first["fencing_token"], int)


def test_config_watch_in_json_is_one_object_per_line(tmp_path: Path) -> None:
    """config watch -o json prints one JSON object per change, the version a number."""
    url = f"sqlite:///{tmp_path / 'k.db'}"
    doc = tmp_path / "app.yaml"
    doc.write_text("a: 1\n")
    assert keel_cli("config", "publish", "app.yaml", str(doc), url=url).code == 0
    argv = [KEEL, "--store", url, "config", "watch", "app.yaml", "--count", "1", "-o", "json"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=keel_env())
    try:
        for n in range(2, 60):  # publish until the watch (started meanwhile) sees one
            doc.write_text(f"a: {n}\n")
            assert keel_cli("config", "publish", "app.yaml", str(doc), url=url).code == 0
            try:
                out, err = proc.communicate(timeout=1)
                break
            except subprocess.TimeoutExpired:
                continue
        else:
            pytest.fail("config watch saw no publish")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    (line,) = out.decode().splitlines()
    event = json.loads(line)
    assert event["kind"] == "main" and isinstance(event["version"], int) and event["version"] >= 2
