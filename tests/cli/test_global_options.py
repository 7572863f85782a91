"""The root's options (--store, --debug) may follow the command, as with kubectl and etcdctl."""

from __future__ import annotations

from pathlib import Path

import pytest

from keel.cli._argv import hoist_global_options
from tests.cli._cli import keel_cli


@pytest.mark.parametrize(
    ("given", "parsed"),
    [
        (
            ["store", "get", "k", "--store", "memory://"],
            ["--store", "memory://", "store", "get", "k"],
        ),
        (["store", "get", "--store=memory://", "k"], ["--store=memory://", "store", "get", "k"]),
        (["--store", "a", "jobs", "--debug"], ["--store", "a", "--debug", "jobs"]),
        (["--debug", "store", "ls"], ["--debug", "store", "ls"]),
        (["store", "put", "k", "--", "--debug"], ["store", "put", "k", "--", "--debug"]),
        (["lock", "n", "make", "--debug"], ["lock", "n", "make", "--debug"]),
        (["store", "get", "k", "--store"], ["store", "get", "k", "--store"]),
        ([], []),
        (["--help"], ["--help"]),
    ],
)
def test_root_options_move_before_the_command(given: list[str], parsed: list[str]) -> None:
    assert hoist_global_options(given) == parsed


def test_store_after_the_command_reads_that_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'k.db'}"
    assert keel_cli("store", "put", "greeting", "hi", "--store", url).code == 0
    got = keel_cli("store", "get", "greeting", f"--store={url}")
    assert (got.code, got.out) == (0, b"hi")
    missing = keel_cli("store", "get", "nosuch", "--store", url)
    assert missing.code == 1
