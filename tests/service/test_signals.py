"""One signal owner per process: every keel run loop stops on the same SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

import keel
from keel._signals import on_stop_signal
from keel.registry import Discovery
from tests._procs import ROOT, Child


async def test_every_subscriber_gets_the_signal_and_handlers_are_removed() -> None:
    """Two subscribers both see one SIGTERM; after both leave, the loop has no handler."""
    got: list[tuple[str, signal.Signals]] = []
    both = asyncio.Event()

    def note(name: str) -> None:
        def callback(sig: signal.Signals) -> None:
            got.append((name, sig))
            if len(got) == 2:
                both.set()

        return callback  # type: ignore[return-value]

    loop = asyncio.get_running_loop()
    with on_stop_signal(note("a")) as first, on_stop_signal(note("b")) as second:
        assert first and second
        os.kill(os.getpid(), signal.SIGTERM)
        async with asyncio.timeout(5):
            await both.wait()
    assert got == [("a", signal.SIGTERM), ("b", signal.SIGTERM)]
    assert not loop.remove_signal_handler(signal.SIGTERM)  # nothing left installed


async def test_a_failing_subscriber_does_not_stop_the_others() -> None:
    """A subscriber that raises is logged; the next one still runs."""
    called = asyncio.Event()

    def broken(_sig: signal.Signals) -> None:
        raise RuntimeError("bug")

    with on_stop_signal(broken), on_stop_signal(lambda _sig: called.set()):
        os.kill(os.getpid(), signal.SIGINT)
        async with asyncio.timeout(5):
            await called.wait()


async def _start(*args: str) -> Child:
    """Start ``python -m ARGS`` with stderr kept, to look for tracebacks."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        *args,
        cwd=ROOT,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    return Child(proc, args[0])


async def _stop_cleanly(child: Child, sig: signal.Signals) -> None:
    try:
        child.signal(sig)
        await child.expect("STOPPED", timeout_s=30)
        assert await child.wait(30) == 0
        assert child.proc.stderr is not None
        stderr = await child.proc.stderr.read()
        assert b"Traceback" not in stderr, stderr.decode()
    finally:
        child.kill9()
        await child.proc.communicate()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_service_and_scheduler_in_one_process_stop_together(
    tmp_path: Path, sig: signal.Signals
) -> None:
    """The documented example: one signal ends the service and the scheduler, exit 0."""
    url = f"sqlite:///{tmp_path / 'keel.db'}"
    child = await _start("examples.together", "--store", url)
    await child.expect("READY", timeout_s=30)
    await child.expect("TICK", timeout_s=30)
    await _stop_cleanly(child, sig)
    async with keel.connect(url) as store, Discovery(store) as discovery:
        assert await discovery.all_instances("together") == []


@pytest.mark.slow
async def test_scheduler_run_as_documented_exits_0_on_sigterm(tmp_path: Path) -> None:
    """``await scheduler.run()`` alone ends cleanly on SIGTERM: no CancelledError traceback."""
    child = await _start("tests.service._scheduler_child", f"sqlite:///{tmp_path / 'keel.db'}")
    await child.expect("TICK", timeout_s=30)
    await _stop_cleanly(child, signal.SIGTERM)
