"""Rendezvous hashing of partitions over members (pure)."""

from __future__ import annotations

from keel.events._member import owned_partitions


def _assign(partitions: int, members: list[str]) -> dict[int, str]:
    return {p: m for m in members for p in owned_partitions(partitions, members, m)}


def test_every_partition_has_exactly_one_owner() -> None:
    """Each partition goes to one member, whoever computes it."""
    members = [f"m{i}" for i in range(5)]
    owners = _assign(64, members)
    assert sorted(owners) == list(range(64))
    assert len(set(owners.values())) == 5  # 64 partitions reach every one of 5 members


def test_a_member_leaving_moves_only_its_own_partitions() -> None:
    """When a member leaves, only the partitions it owned change hands."""
    members = [f"m{i}" for i in range(4)]
    before = _assign(32, members)
    after = _assign(32, [m for m in members if m != "m2"])
    moved = {p for p in before if before[p] != after[p]}
    assert moved == {p for p, m in before.items() if m == "m2"}


def test_a_member_not_yet_listed_still_computes_its_share() -> None:
    """A member counts itself even before its heartbeat shows up in the list."""
    assert owned_partitions(4, [], "solo") == {0, 1, 2, 3}
