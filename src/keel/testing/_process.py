"""What every launcher of a real server shares: ending its processes, ``with`` support."""

from __future__ import annotations

import abc
import os
import signal
import subprocess
from types import TracebackType
from typing import Self

__all__ = ["Launcher", "end_process", "running"]


def running(process: subprocess.Popen[bytes] | None) -> bool:
    """Whether ``process`` was started and has not exited."""
    return process is not None and process.poll() is None


def end_process(
    process: subprocess.Popen[bytes] | None, timeout_s: float, *, group_signal: int | None = None
) -> None:
    """Ask ``process`` to stop, then kill it if it has not within ``timeout_s``.

    ``group_signal``: send this signal to its process group instead of
    SIGTERM to the process (a server started under ``runuser``).
    """
    if process is None or process.poll() is not None:
        return
    if group_signal is None:
        process.terminate()
    else:
        os.killpg(process.pid, group_signal)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        if group_signal is None:
            process.kill()
        else:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


class Launcher(abc.ABC):
    """``with Server(...) as server:`` starts it and stops it (subclasses define both)."""

    @abc.abstractmethod
    def start(self) -> Self:
        """Start the server(s) and wait until they answer."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop the server(s) and delete their files."""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
