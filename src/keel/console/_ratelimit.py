"""Login rate limiting: failed attempts per (user, address) and per address.

A sliding log of failure times, in memory, for the one console process: after
``per_user`` failures for one name from one address within ``window_s``, or
``per_address`` failures from one address for any names, further attempts are
refused (HTTP 429 with Retry-After) until the oldest failure leaves the
window, without checking the password (no argon2 work for an attacker to
spend). A success clears the (user, address) log. The tables are bounded:
past ``max_keys`` entries the oldest are forgotten.

keel.resilience's limiters meter *all* calls; a login limit counts only
*failures*, so this small log is written here.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import TypeVar

__all__ = ["LoginLimiter"]

K = TypeVar("K")


class LoginLimiter:
    """Counts failed logins and says when to refuse the next attempt.

    Args:
        per_user: failures allowed for one (name, address) in the window.
        per_address: failures allowed for one address in the window.
        window_s: the sliding window.
        clock: monotonic seconds (tests pass a fake one).
        max_keys: entries remembered per table.
    """

    def __init__(
        self,
        *,
        per_user: int = 5,
        per_address: int = 20,
        window_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 10_000,
    ) -> None:
        self.per_user = per_user
        self.per_address = per_address
        self.window_s = window_s
        self._clock = clock
        self._max_keys = max_keys
        self._users: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()
        self._addresses: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, name: str, address: str) -> float:
        """Seconds until an attempt is allowed (0.0: allowed now)."""
        now = self._clock()
        waits = [
            self._wait(self._users.get((name, address)), self.per_user, now),
            self._wait(self._addresses.get(address), self.per_address, now),
        ]
        return max(waits)

    def failed(self, name: str, address: str) -> None:
        """Record a failed attempt."""
        now = self._clock()
        _append(self._users, (name, address), now, self._max_keys)
        _append(self._addresses, address, now, self._max_keys)

    def succeeded(self, name: str, address: str) -> None:
        """Forget the failures of ``name`` from ``address``."""
        self._users.pop((name, address), None)

    def _wait(self, log: deque[float] | None, limit: int, now: float) -> float:
        if log is None:
            return 0.0
        while log and log[0] <= now - self.window_s:
            log.popleft()
        if len(log) < limit:
            return 0.0
        return max(0.001, log[-limit] + self.window_s - now)

    def __repr__(self) -> str:
        return (
            f"LoginLimiter(per_user={self.per_user}, per_address={self.per_address}, "
            f"window_s={self.window_s}, tracked={len(self._users)})"
        )


def _append(table: OrderedDict[K, deque[float]], key: K, now: float, max_keys: int) -> None:
    log = table.get(key)
    if log is None:
        log = table[key] = deque(maxlen=1000)
        while len(table) > max_keys:
            table.popitem(last=False)
    else:
        table.move_to_end(key)
    log.append(now)
