"""Power of two choices: least outstanding requests, and peak-EWMA latency.

Both pick two distinct instances at random and keep the less loaded one
(Mitzenmacher, "The Power of Two Choices in Randomized Load Balancing", 2001):
nearly as good as scanning every instance for the least loaded, in O(1), and
without the herd effect of every client choosing the same "best" instance.

- :class:`LeastOutstanding`: load is the number of calls in flight divided by
  the weight (Envoy's least-request balancer with two choices).
- :class:`PeakEwma`: load is a latency estimate times (outstanding + 1), as
  Finagle's ``PeakEwma`` and go-zero's ``p2c`` balancer. The estimate is an
  exponentially weighted moving average whose weight depends on the time since
  the last sample (``w = exp(-dt / decay_s)``), except that a sample above it
  replaces it at once (the "peak"), so a slowing instance is noticed on its
  first slow reply while recovery is believed only gradually. The estimate
  also decays towards zero while an instance gets no traffic (Finagle reads the
  cost by observing a zero sample), so an instance once slow is probed again
  later. A failure counts as a sample of at least ``failure_penalty_s``. An
  instance never measured has no cost: it is tried at once, but while its first
  call is in flight it carries a large penalty, so a new instance is not
  flooded before anything is known about it (Finagle's ``Penalty``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from keel.balance._base import BalancerStatistics, E, Endpoint, FeedbackBase, StateTable, require
from keel.clock import Clock
from keel.errors import ValidationError

__all__ = ["LeastOutstanding", "PeakEwma", "PeakEwmaSettings", "PeakEwmaStatistics"]

# Finagle's Penalty (Long.MaxValue >> 16 nanoseconds, ~39 hours): larger than any
# real cost, yet adding the outstanding count still orders penalised instances.
_PENALTY_S = float(2**47) / 1e9


class _Load:
    __slots__ = ("outstanding",)

    def __init__(self) -> None:
        self.outstanding = 0


class _P2C(FeedbackBase):
    """Shared parts of the two-choice balancers: the random source and the one-instance case."""

    __slots__ = ("_random",)

    def __init__(self, rng: random.Random | None, clock: Clock | None) -> None:
        super().__init__(clock)
        self._random = (rng if rng is not None else random.Random()).random

    def _single(self, instances: Sequence[E]) -> E:
        """The pick from fewer than two instances (raises on none)."""
        require(instances)
        self._picks += 1
        return instances[0]


class LeastOutstanding(_P2C):
    """The less busy of two random instances (calls in flight per unit of weight).

    Only calls counted with :meth:`track` are outstanding; ``observe`` adds nothing.

    Args:
        rng: the random source (seed it in tests).
        clock: time source for tickets.
    """

    __slots__ = ("_loads",)

    def __init__(self, *, rng: random.Random | None = None, clock: Clock | None = None) -> None:
        super().__init__(rng, clock)
        self._loads: StateTable[_Load] = StateTable(_Load)

    def pick(self, instances: Sequence[E], key: str | bytes | None = None) -> E:
        """Return the less loaded of two random instances (``key`` is ignored).

        Args:
            instances: the candidates.
            key: unused.

        Returns:
            One of ``instances``.

        Raises:
            NoInstanceError: when ``instances`` is empty.
        """
        n = len(instances)
        if n < 2:
            return self._single(instances)
        self._picks += 1
        loads = self._loads
        if len(loads.map) > 2 * n + 16:
            loads.prune(instances)
        get = loads.map.get
        rnd = self._random
        i, j = int(rnd() * n), int(rnd() * (n - 1))
        a, b = instances[i], instances[j + (j >= i)]
        la, lb = get(a.id), get(b.id)
        oa = la.outstanding if la is not None else 0
        ob = lb.outstanding if lb is not None else 0
        # (oa + 1) / wa <= (ob + 1) / wb, without division.
        return a if (oa + 1) * b.weight <= (ob + 1) * a.weight else b

    def outstanding(self, instance: Endpoint) -> int:
        """Calls to ``instance`` tracked and not yet finished."""
        load = self._loads.map.get(instance.id)
        return load.outstanding if load is not None else 0

    def _begin(self, instance: Endpoint) -> None:
        self._loads.get(instance.id).outstanding += 1

    def _record(self, instance: Endpoint, latency_s: float, ok: bool, tracked: bool) -> None:
        load = self._loads.map.get(instance.id)
        if tracked and load is not None and load.outstanding > 0:
            load.outstanding -= 1

    def statistics(self) -> BalancerStatistics:
        """Counters of picks, outstanding calls and reported outcomes."""
        out = sum(load.outstanding for load in self._loads.map.values())
        return BalancerStatistics(
            self._picks, len(self._loads), out, self._successes, self._failures
        )

    def __repr__(self) -> str:
        out = sum(load.outstanding for load in self._loads.map.values())
        return (
            f"LeastOutstanding(picks={self._picks}, tracked={len(self._loads)}, outstanding={out})"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class PeakEwmaSettings:
    """How fast the latency estimate forgets, and what a failure costs.

    Attributes:
        decay_s: time constant of the moving average, seconds (Finagle and
            go-zero use 10 s): after ``decay_s`` without samples an estimate has
            fallen to 1/e of its value.
        failure_penalty_s: a failed call counts as a sample of at least this
            latency, seconds.
    """

    decay_s: float = 10.0
    failure_penalty_s: float = 1.0

    def __post_init__(self) -> None:
        if not (self.decay_s > 0 and math.isfinite(self.decay_s)):
            raise ValidationError(f"decay_s must be a finite number > 0, got {self.decay_s!r}")
        if not (self.failure_penalty_s >= 0 and math.isfinite(self.failure_penalty_s)):
            raise ValidationError(
                f"failure_penalty_s must be a finite number >= 0, got {self.failure_penalty_s!r}"
            )


@dataclass(frozen=True, slots=True)
class PeakEwmaStatistics:
    """A snapshot of a :class:`PeakEwma` balancer.

    Attributes:
        picks: calls to ``pick`` so far.
        tracked: instances with state.
        outstanding: calls tracked and not finished yet.
        successes: outcomes reported as ok.
        failures: outcomes reported as failed.
        costs_s: each tracked instance's latency estimate now, seconds (0: unmeasured).
    """

    picks: int
    tracked: int
    outstanding: int
    successes: int
    failures: int
    costs_s: Mapping[str, float]


class _Cost:
    __slots__ = ("cost", "outstanding", "stamp")

    def __init__(self) -> None:
        self.cost = 0.0
        self.stamp = 0.0
        self.outstanding = 0


class PeakEwma(_P2C):
    """The cheaper of two random instances, cost = peak-EWMA latency x (outstanding + 1).

    Args:
        settings: decay and failure penalty (defaults: :class:`PeakEwmaSettings`).
        rng: the random source (seed it in tests).
        clock: time source for the decay and for tickets.
    """

    __slots__ = ("_costs", "settings")

    def __init__(
        self,
        settings: PeakEwmaSettings | None = None,
        *,
        rng: random.Random | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(rng, clock)
        self.settings = settings if settings is not None else PeakEwmaSettings()
        self._costs: StateTable[_Cost] = StateTable(_Cost)

    def pick(self, instances: Sequence[E], key: str | bytes | None = None) -> E:
        """Return the cheaper of two random instances (``key`` is ignored).

        Args:
            instances: the candidates.
            key: unused.

        Returns:
            One of ``instances``.

        Raises:
            NoInstanceError: when ``instances`` is empty.
        """
        n = len(instances)
        if n < 2:
            return self._single(instances)
        self._picks += 1
        costs = self._costs
        if len(costs.map) > 2 * n + 16:
            costs.prune(instances)
        get = costs.map.get
        rnd = self._random
        i, j = int(rnd() * n), int(rnd() * (n - 1))
        a, b = instances[i], instances[j + (j >= i)]
        now = self._clock.monotonic()
        ca = self._load(get(a.id), now) * b.weight
        cb = self._load(get(b.id), now) * a.weight
        return a if ca <= cb else b

    def _load(self, c: _Cost | None, now: float) -> float:
        if c is None:
            return 0.0
        if c.cost == 0.0:
            return 0.0 if c.outstanding == 0 else _PENALTY_S + c.outstanding
        return c.cost * math.exp((c.stamp - now) / self.settings.decay_s) * (c.outstanding + 1)

    def cost(self, instance: Endpoint) -> float:
        """The latency estimate of ``instance`` now, seconds (0.0 when unmeasured)."""
        c = self._costs.map.get(instance.id)
        if c is None:
            return 0.0
        return c.cost * math.exp((c.stamp - self._clock.monotonic()) / self.settings.decay_s)

    def _begin(self, instance: Endpoint) -> None:
        self._costs.get(instance.id).outstanding += 1

    def _record(self, instance: Endpoint, latency_s: float, ok: bool, tracked: bool) -> None:
        c = self._costs.get(instance.id)
        if tracked and c.outstanding > 0:
            c.outstanding -= 1
        rtt = max(latency_s, 0.0) if ok else max(latency_s, self.settings.failure_penalty_s)
        now = self._clock.monotonic()
        # Weight by elapsed time, not by sample count; the stored cost has been
        # decaying towards zero since its stamp, exactly as pick() reads it.
        w = math.exp(-max(now - c.stamp, 0.0) / self.settings.decay_s)
        decayed = c.cost * w
        c.cost = rtt if rtt > decayed else decayed + rtt * (1.0 - w)  # the peak: bad news at once
        c.stamp = now

    def statistics(self) -> PeakEwmaStatistics:
        """Counters, outstanding calls and each instance's current latency estimate."""
        now = self._clock.monotonic()
        decay = self.settings.decay_s
        items = self._costs.map.items()
        return PeakEwmaStatistics(
            picks=self._picks,
            tracked=len(self._costs),
            outstanding=sum(c.outstanding for _, c in items),
            successes=self._successes,
            failures=self._failures,
            costs_s={k: c.cost * math.exp((c.stamp - now) / decay) for k, c in items},
        )

    def __repr__(self) -> str:
        out = sum(c.outstanding for c in self._costs.map.values())
        return (
            f"PeakEwma(picks={self._picks}, tracked={len(self._costs)}, outstanding={out}, "
            f"decay_s={self.settings.decay_s})"
        )
