"""Client health for canary analysis: the application's verdict, sampled beside its version.

A live binding given ``health=`` calls it every ``health_interval_s`` and
whenever it takes a new version. The check returns a bool or a
:class:`ClientHealth` with cumulative counters (errors, requests, as the
application counts them); the reporter subtracts the counters it saw when the
version changed, so the report says what happened *under this version*, which
is what a canary compares. A check that raises or hangs is a failed check (it
is the application saying it cannot tell).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from keel.clock import Clock

__all__ = ["ClientHealth", "HealthProbe", "HealthReporter"]

_DETAIL_MAX = 200


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientHealth:
    """One health verdict from the application.

    Attributes:
        healthy: whether the application is fine on the config it runs.
        errors: errors counted so far (cumulative; the binding takes differences).
        requests: requests counted so far (cumulative).
        detail: why, in a few words (shown in ``keel config status``).
    """

    healthy: bool
    errors: int = 0
    requests: int = 0
    detail: str = ""


HealthProbe = Callable[[], "bool | ClientHealth | Awaitable[bool | ClientHealth]"]
"""A health check: a plain or async callable returning a bool or a :class:`ClientHealth`."""


class HealthReporter:
    """Samples a :data:`HealthProbe`; keeps counters relative to the current version.

    Args:
        probe: the application's check.
        interval_s: how often to sample (also the longest a sample may take).
        clock: time source.
    """

    def __init__(self, probe: HealthProbe, interval_s: float, clock: Clock) -> None:
        if interval_s <= 0:
            raise ValueError("health_interval_s must be positive")
        self.probe = probe
        self.interval_s = interval_s
        self.clock = clock
        self._base = (0, 0)
        self.current = ClientHealth(healthy=True)
        self.checked_at = 0.0

    async def _call(self) -> ClientHealth:
        try:
            async with asyncio.timeout(self.interval_s):
                result = self.probe()
                if inspect.isawaitable(result):
                    result = await result
        except TimeoutError:
            return ClientHealth(healthy=False, detail=f"check took over {self.interval_s}s")
        except Exception as exc:  # the application's check: any failure is a failed check
            return ClientHealth(healthy=False, detail=f"check raised {type(exc).__name__}: {exc}")
        if isinstance(result, ClientHealth):
            return result
        return ClientHealth(healthy=bool(result))

    async def sample(self, *, new_version: bool = False) -> bool:
        """Call the check; return whether the verdict or counters changed.

        Args:
            new_version: the binding just took a new version: counters restart here.
        """
        raw = await self._call()
        errors, requests = max(0, int(raw.errors)), max(0, int(raw.requests))
        if new_version:
            self._base = (errors, requests)
        base_errors, base_requests = self._base
        if errors < base_errors or requests < base_requests:  # the application restarted counting
            self._base = base_errors, base_requests = (0, 0)
        current = ClientHealth(
            healthy=raw.healthy,
            errors=errors - base_errors,
            requests=requests - base_requests,
            detail=str(raw.detail)[:_DETAIL_MAX],
        )
        self.checked_at = self.clock.time()
        changed = current != self.current
        self.current = current
        return changed or new_version

    def __repr__(self) -> str:
        c = self.current
        return f"<HealthReporter healthy={c.healthy} errors={c.errors} requests={c.requests}>"
