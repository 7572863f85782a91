"""Round robin and random: the stateless balancers.

Round robin starts at a random offset (as gRPC's ``round_robin`` picker does),
so a fleet of clients that start together does not send its first calls to
the same instance. Both ignore outcomes; wrap them in
:class:`~keel.balance.OutlierEjection` to avoid failing instances.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

from keel.balance._base import BalancerStatistics, E, FeedbackBase, require
from keel.clock import Clock

__all__ = ["RandomChoice", "RoundRobin"]


class RoundRobin(FeedbackBase):
    """Each pick takes the next instance of the list, in order.

    Args:
        rng: source of the random starting offset (seed it in tests).
        clock: time source for tickets.
    """

    __slots__ = ("_counter",)

    def __init__(self, *, rng: random.Random | None = None, clock: Clock | None = None) -> None:
        super().__init__(clock)
        start = (rng if rng is not None else random.Random()).randrange(1 << 30)
        self._counter = itertools.count(start)

    def pick(self, instances: Sequence[E], key: str | bytes | None = None) -> E:
        """Return the next instance in turn (``key`` is ignored).

        Args:
            instances: the candidates; the list may differ from call to call.
            key: unused.

        Returns:
            One of ``instances``.

        Raises:
            NoInstanceError: when ``instances`` is empty.
        """
        n = require(instances)
        self._picks += 1
        return instances[next(self._counter) % n]

    def statistics(self) -> BalancerStatistics:
        """Counters of picks and reported outcomes."""
        return BalancerStatistics(self._picks, 0, 0, self._successes, self._failures)

    def __repr__(self) -> str:
        return f"RoundRobin(picks={self._picks})"


class RandomChoice(FeedbackBase):
    """Each pick is a random instance, uniformly or in proportion to the weights.

    Args:
        weighted: pick in proportion to ``weight`` instead of uniformly.
        rng: the random source (seed it in tests).
        clock: time source for tickets.
    """

    __slots__ = ("_cum", "_cum_for", "_rng", "weighted")

    def __init__(
        self,
        *,
        weighted: bool = False,
        rng: random.Random | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(clock)
        self.weighted = weighted
        self._rng = rng if rng is not None else random.Random()
        self._cum: list[int] = []
        self._cum_for: object = None

    def pick(self, instances: Sequence[E], key: str | bytes | None = None) -> E:
        """Return a random instance (``key`` is ignored).

        Args:
            instances: the candidates.
            key: unused.

        Returns:
            One of ``instances``.

        Raises:
            NoInstanceError: when ``instances`` is empty.
        """
        n = require(instances)
        self._picks += 1
        if not self.weighted:
            return instances[int(self._rng.random() * n)]
        # Cumulative weights are reused while the caller passes the same tuple.
        if instances is not self._cum_for or type(instances) is not tuple:
            self._cum = list(itertools.accumulate(inst.weight for inst in instances))
            self._cum_for = instances
        return self._rng.choices(instances, cum_weights=self._cum)[0]

    def statistics(self) -> BalancerStatistics:
        """Counters of picks and reported outcomes."""
        return BalancerStatistics(self._picks, 0, 0, self._successes, self._failures)

    def __repr__(self) -> str:
        return f"RandomChoice(weighted={self.weighted}, picks={self._picks})"
