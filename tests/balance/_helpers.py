"""A small instance type for the balancer tests (satisfies keel.balance.Endpoint)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Node:
    """An instance with just what a balancer needs."""

    id: str
    weight: int = 100
    zone: str = ""


def nodes(n: int, *, zone: str = "", prefix: str = "n") -> tuple[Node, ...]:
    """``n`` nodes named ``{prefix}0``, ``{prefix}1``... in ``zone``."""
    return tuple(Node(f"{prefix}{i}", zone=zone) for i in range(n))
