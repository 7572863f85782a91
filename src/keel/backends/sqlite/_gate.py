"""A fair write gate shared by every process (and every store) on one database.

Why not SQLite's busy timeout: its busy handler sleeps with growing delays
(1, 2, 5 ... 100 ms). A writer in a tight loop commits and begins its next
``BEGIN IMMEDIATE`` within microseconds, so a sleeping rival almost never
finds the lock free: the issue measured one of two processes starved to a few
ops/s. Plain retry loops with jitter have the same flaw, since the releaser
asks again sooner than any sleeper wakes.

The gate is the classic two-lock turnstile, on two bytes of a lock file
(``<db>-lock``) with Linux open-file-description locks (``F_OFD_SETLK``, per
open file, so two stores of one process exclude each other too, and the
kernel drops them when a process dies, even by ``kill -9``):

1. take the *queue* byte ``Q``;
2. take the *write* byte ``W``;
3. release ``Q``; run the SQLite transaction; release ``W``.

A writer that just released ``W`` must take ``Q`` again before ``W``, and a
waiter already holds ``Q`` while it waits for ``W``: so the releaser cannot
overtake it, and two busy writers alternate. Waits poll the lock without
blocking, with jitter (the next in line every 0.02-0.2 ms, the others every
0.1-1 ms), so each wait honours ``busy_timeout_s``: a process frozen by
``SIGSTOP`` while holding ``W`` makes the others fail with
StoreUnavailableError instead of hanging. With three or more writers the ones
polling for ``Q`` race, which is fair in expectation, not FIFO.

Measured on the 2-core test machine (synchronous=FULL, tight put loops, 3 s):
two processes made 789 and 792 puts/s with the gate; without it (SQLite's busy
handler only) 784 and 626, and the issue author saw one starved to a few/s.
"""

from __future__ import annotations

import errno
import fcntl
import os
import random
import struct
import time
from typing import Final

__all__ = ["GateTimeoutError", "WriteGate"]

# struct flock on Linux (x86_64, aarch64): short type, short whence, off_t start, off_t len,
# pid_t pid (0 for OFD locks), padded to 32 bytes.
_FLOCK: Final = struct.Struct("@hhqqi4x")
_W_BYTE: Final = 0
_Q_BYTE: Final = 1
# Poll delays (jittered, uniform): the next in line (holding Q) polls W often, because a
# write takes about a millisecond; the others poll Q less often.
_NEXT_POLL_S: Final = (0.00002, 0.0002)
_QUEUE_POLL_S: Final = (0.0001, 0.001)


class GateTimeoutError(Exception):
    """The gate was not free before the deadline."""


class WriteGate:
    """The turnstile lock of one open file description (one per writer thread).

    Args:
        path: the lock file (created with mode 0600 if missing).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._held = False

    def _try(self, byte: int, kind: int, length: int = 1) -> bool:
        try:
            fcntl.fcntl(
                self._fd, fcntl.F_OFD_SETLK, _FLOCK.pack(kind, os.SEEK_SET, byte, length, 0)
            )
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                return False
            raise
        return True

    def _wait(self, byte: int, deadline: float, delays: tuple[float, float]) -> None:
        while not self._try(byte, fcntl.F_WRLCK):
            if time.monotonic() >= deadline:
                raise GateTimeoutError(f"write lock of {self.path} busy")
            time.sleep(random.uniform(*delays))

    def acquire(self, timeout_s: float) -> None:
        """Take the write byte through the queue byte, or raise GateTimeoutError."""
        # Uncontended: take both bytes in one call (the same as taking Q then W at
        # once), then let go of Q; one system call fewer per write.
        if self._try(_W_BYTE, fcntl.F_WRLCK, length=2):
            self._try(_Q_BYTE, fcntl.F_UNLCK)
            self._held = True
            return
        deadline = time.monotonic() + timeout_s
        self._wait(_Q_BYTE, deadline, _QUEUE_POLL_S)
        try:
            self._wait(_W_BYTE, deadline, _NEXT_POLL_S)
        finally:
            self._try(_Q_BYTE, fcntl.F_UNLCK)
        self._held = True

    def release(self) -> None:
        """Release the write byte (idempotent)."""
        if self._held:
            self._held = False
            self._try(_W_BYTE, fcntl.F_UNLCK)

    def close(self) -> None:
        """Close the lock file (dropping any lock it holds); idempotent."""
        self._held = False
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def __repr__(self) -> str:
        return f"<WriteGate {self.path!r} {'held' if self._held else 'free'}>"
