"""The guard of ``keel lock NAME -- CMD``: runs CMD so that it cannot outlive the lock.

``keel lock`` starts this file as a script (``python -I _lockguard.py KEEL_PID
GRACE_S -- CMD...``), not as a module, so it imports only the standard library
and starts in milliseconds. The guard:

- asks Linux to send it SIGTERM when keel dies (``prctl(PR_SET_PDEATHSIG)``;
  the signal follows the death of the *thread* that forked the guard, which
  is why keel starts it from its main thread), and checks keel did not die
  before that;
- becomes a child subreaper (``PR_SET_CHILD_SUBREAPER``), so what CMD forks
  and orphans is reparented to the guard and reaped by it;
- runs CMD in a new process group, with ``PR_SET_PDEATHSIG=SIGKILL`` in case
  the guard itself is killed;
- on SIGTERM (keel asks, or keel died) sends SIGTERM to the whole group, then
  SIGKILL after GRACE_S; SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 are
  passed on to the group;
- when CMD exits, terminates whatever CMD left running in its group the same
  way, then exits with CMD's code (128 + N if a signal N ended it).

So once the guard has exited, nothing of CMD's process group is running,
and the guard exits at most GRACE_S (plus a moment) after keel dies.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
_FORWARDED = (signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
_HANDLED = {signal.SIGTERM, *_FORWARDED}
_POLL_S = 0.01


class _Stop(Exception):
    """SIGTERM arrived: stop the command's group."""


def _prctl(libc: ctypes.CDLL, option: int, value: int) -> None:
    if libc.prctl(option, value, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl({option}) failed: {os.strerror(errno)}")


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _reap(block: bool) -> tuple[int, int]:
    """Reap one child (ours or an orphan handed to us); ``(0, 0)`` if none is ready."""
    try:
        return os.waitpid(-1, 0 if block else os.WNOHANG)
    except ChildProcessError:
        return 0, 0


class _Guard:
    def __init__(self, command: list[str], grace_s: float, libc: ctypes.CDLL) -> None:
        self.grace_s = grace_s
        self.status: int | None = None

        def in_child() -> None:
            _prctl(libc, PR_SET_PDEATHSIG, signal.SIGKILL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _HANDLED)

        self.proc = subprocess.Popen(command, process_group=0, preexec_fn=in_child)
        self.pgid = self.proc.pid

    def _note(self, pid: int, status: int) -> None:
        if pid == self.proc.pid:
            self.status = status
            self.proc.returncode = os.waitstatus_to_exitcode(status)

    def forward(self, signum: int, _frame: object) -> None:
        """Pass a signal on to the command's group."""
        _signal_group(self.pgid, signum)

    def wait_command(self) -> None:
        """Block until the command itself exits (reaping orphans on the way)."""
        while self.status is None:
            pid, status = _reap(block=True)
            if pid == 0:
                return
            self._note(pid, status)

    def _drain(self, deadline: float) -> bool:
        """Reap until the group is empty or the deadline; True if it is empty."""
        while _group_alive(self.pgid):
            pid, status = _reap(block=False)
            if pid:
                self._note(pid, status)
                continue
            if time.monotonic() >= deadline:
                return False
            time.sleep(_POLL_S)
        return True

    def stop_group(self) -> None:
        """SIGTERM to the group, SIGKILL after the grace period; reap everything."""
        if _group_alive(self.pgid):
            _signal_group(self.pgid, signal.SIGTERM)
            if not self._drain(time.monotonic() + self.grace_s):
                _signal_group(self.pgid, signal.SIGKILL)
                self._drain(time.monotonic() + 5.0)
        while _reap(block=False)[0]:
            pass
        self.wait_command()

    def exit_code(self) -> int:
        """The command's exit code, shells' way: 128 + N for a signal N."""
        code = self.proc.returncode if self.proc.returncode is not None else -signal.SIGKILL
        return 128 - code if code < 0 else code


def _on_term(_signum: int, _frame: object) -> None:
    raise _Stop


def main(argv: list[str]) -> int:
    """Run the command of ``argv`` (``KEEL_PID GRACE_S -- CMD...``); return its exit code."""
    keel_pid, grace_s, command = int(argv[1]), float(argv[2]), argv[4:]
    libc = ctypes.CDLL(None, use_errno=True)
    # Signals wait (blocked) until the command runs and its group can receive them.
    signal.pthread_sigmask(signal.SIG_BLOCK, _HANDLED)
    signal.signal(signal.SIGTERM, _on_term)
    _prctl(libc, PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != keel_pid:  # keel died before the line above: run nothing
        return 128 + signal.SIGTERM
    _prctl(libc, PR_SET_CHILD_SUBREAPER, 1)
    try:
        guard = _Guard(command, grace_s, libc)
    except OSError as exc:
        print(f"keel: error: cannot run {command[0]!r}: {exc.strerror}", file=sys.stderr)
        return 127
    for signum in _FORWARDED:
        signal.signal(signum, guard.forward)
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _HANDLED)
        guard.wait_command()
    except _Stop:
        pass
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # stopping now; a second SIGTERM changes nothing
    guard.stop_group()
    return guard.exit_code()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
