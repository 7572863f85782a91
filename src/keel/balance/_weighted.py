"""Smooth weighted round robin: nginx's algorithm (``ngx_http_upstream_get_peer``).

Each pick adds every instance's effective weight to its current weight, takes
the instance with the highest current weight (the first one on ties) and
subtracts the total from it. The order is deterministic and spreads heavy
instances out: weights 5:1:1 give ``a a b a c a a``, never ``a a a a a b c``.

Failures lower an instance's effective weight by ``weight / max_fails`` (as
nginx does); each pick restores one point, so a failing instance gets less
traffic and earns it back gradually. State is keyed by instance id, so a list
that changes keeps the rhythm of the instances that stay.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass

from keel.balance._base import BalancerStatistics, E, Endpoint, FeedbackBase, StateTable, require
from keel.clock import Clock
from keel.errors import ValidationError

__all__ = ["SmoothWeightedRoundRobin", "WeightedSettings"]


@dataclass(frozen=True, slots=True, kw_only=True)
class WeightedSettings:
    """How failures lower an instance's share.

    Attributes:
        max_fails: a failure lowers the effective weight by ``weight / max_fails``
            (nginx's ``max_fails``); ``0`` ignores failures.
    """

    max_fails: int = 1

    def __post_init__(self) -> None:
        if self.max_fails < 0:
            raise ValidationError(
                f"max_fails must be >= 0 (0 ignores failures), got {self.max_fails!r}"
            )


class _Peer:
    __slots__ = ("current", "effective", "weight")

    def __init__(self) -> None:
        self.current = 0
        self.effective = 0
        self.weight = 0  # 0: never seen


class SmoothWeightedRoundRobin(FeedbackBase):
    """Weighted round robin in nginx's smooth, deterministic order.

    While the same instances come back (the same tuple, or a list with the same
    ids and weights) their state lives in parallel lists, so a pick is a few
    C-level passes over them (``map``, ``max``, ``index``) instead of a Python
    loop; it is parked per instance id when the list changes.

    Args:
        settings: failure handling (defaults: :class:`WeightedSettings`).
        clock: time source for tickets.
    """

    __slots__ = ("_cur", "_degraded", "_eff", "_for", "_ids", "_parked", "_pos", "_wts", "settings")

    def __init__(self, settings: WeightedSettings | None = None, *, clock: Clock | None = None):
        super().__init__(clock)
        self.settings = settings if settings is not None else WeightedSettings()
        self._parked: StateTable[_Peer] = StateTable(_Peer)
        self._for: object = None
        self._ids: list[str] = []
        self._wts: list[int] = []
        self._cur: list[int] = []
        self._eff: list[int] = []
        self._pos: dict[str, int] = {}
        self._degraded = 0  # instances whose effective weight is below their weight

    def pick(self, instances: Sequence[E], key: str | bytes | None = None) -> E:
        """Return the instance whose turn it is (``key`` is ignored).

        Args:
            instances: the candidates, with their weights.
            key: unused.

        Returns:
            One of ``instances``.

        Raises:
            NoInstanceError: when ``instances`` is empty.
        """
        require(instances)
        self._picks += 1
        if instances is not self._for or type(instances) is not tuple:
            self._sync(instances)
        eff = self._eff
        total = sum(eff)
        cur = self._cur = list(map(operator.add, self._cur, eff))
        if self._degraded:
            self._restore()
        # The first highest current weight, as nginx's strict ">" comparison.
        best = cur.index(max(cur))
        cur[best] -= total
        return instances[best]

    def _restore(self) -> None:
        """nginx: each pick gives one point back to every weakened instance."""
        eff, still = self._eff, 0
        for i, (e, w) in enumerate(zip(eff, self._wts, strict=True)):
            if e < w:
                eff[i] = e + 1
                still += e + 1 < w
        self._degraded = still

    def _sync(self, instances: Sequence[E]) -> None:
        """Line the parallel lists up with ``instances``, parking the old state by id."""
        ids = [inst.id for inst in instances]
        wts = [inst.weight for inst in instances]
        self._for = instances
        if ids == self._ids and wts == self._wts:
            return
        parked = self._parked
        for i, inst_id in enumerate(self._ids):
            peer = parked.get(inst_id)
            peer.current, peer.effective, peer.weight = self._cur[i], self._eff[i], self._wts[i]
        parked.prune(instances)
        cur, eff = [], []
        for inst_id, w in zip(ids, wts, strict=True):
            peer = parked.get(inst_id)
            if peer.weight != w:  # new, or its weight changed
                peer.weight, peer.effective = w, w
            cur.append(peer.current)
            eff.append(peer.effective)
        self._ids, self._wts, self._cur, self._eff = ids, wts, cur, eff
        self._pos = {inst_id: i for i, inst_id in enumerate(ids)}
        self._degraded = sum(e < w for e, w in zip(eff, wts, strict=True))

    def _record(self, instance: Endpoint, latency_s: float, ok: bool, tracked: bool) -> None:
        if ok or self.settings.max_fails == 0:
            return
        i = self._pos.get(instance.id)
        if i is not None:
            cut = max(1, self._wts[i] // self.settings.max_fails)
            self._eff[i] = max(0, self._eff[i] - cut)
            self._degraded += 1  # an upper bound; _restore() recounts
            return
        peer = self._parked.map.get(instance.id)
        if peer is not None:
            peer.effective = max(0, peer.effective - max(1, peer.weight // self.settings.max_fails))

    def _tracked(self) -> int:
        return len(self._pos) + sum(1 for k in self._parked.map if k not in self._pos)

    def statistics(self) -> BalancerStatistics:
        """Counters of picks and reported outcomes."""
        return BalancerStatistics(self._picks, self._tracked(), 0, self._successes, self._failures)

    def __repr__(self) -> str:
        return (
            f"SmoothWeightedRoundRobin(picks={self._picks}, tracked={self._tracked()}, "
            f"max_fails={self.settings.max_fails})"
        )
