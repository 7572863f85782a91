"""Operator overrides of instances: weight, disabled, draining, set by people, not owners.

An instance record (``services/<service>/<instance-id>``) belongs to its
owner: it lives on the owner's session lease and is rewritten whenever the
owner re-registers. An operator's decision ("send this one less traffic",
"take it out", "drain it") must outlive that, so it is stored apart, at
``overrides/<service>/<instance-id>``, on no lease::

    {"weight": 20, "disabled": false, "draining": true,
     "by": "alice", "at": "2026-12-06T08:00:00+00:00", "note": "disk alarm"}

Every reader applies it (:class:`~keel.registry.Discovery` merges it into the
instances it returns, so HTTP, gRPC and gateway clients all honour it):

- ``weight`` replaces the registered weight;
- ``draining`` makes the instance ``DRAINING`` (no new traffic, as when the
  owner drains itself at shutdown);
- ``disabled`` takes it out of every balanced list.

An override may name an instance that is not registered (yet, or any more):
it waits for the instance and applies when it (re)appears; ``keel instance
clear`` removes it. Records are decoded at one boundary,
:func:`decode_override`; a malformed one is skipped, counted and changes
nothing (the instance is served as registered).
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any

from keel._records import Rejected, decode, load_json_object, report
from keel.clock import SYSTEM_CLOCK, Clock
from keel.errors import ConflictError, ValidationError
from keel.registry._decode import _guarded, split_key
from keel.registry._model import DRAINING, ID_RE, Instance, check_service_name, show
from keel.store import Compare, Delete, Get, KeyValue, Put, Store

__all__ = [
    "OVERRIDES",
    "OVERRIDE_AREA",
    "Override",
    "Overrides",
    "apply_override",
    "decode_override",
    "encode_override",
    "override_key",
    "override_prefix",
    "read_override",
]

OVERRIDES = "overrides/"
OVERRIDE_AREA = "override"
"""The ``area`` label of rejected override records."""
MAX_BY = 256
MAX_NOTE = 1024
_ATTEMPTS = 16  # compare-and-swap rounds before a contended set() gives up


def override_prefix(service: str) -> str:
    """``overrides/<service>/``."""
    return f"{OVERRIDES}{service}/"


def override_key(service: str, instance_id: str) -> str:
    """``overrides/<service>/<instance-id>``."""
    return f"{OVERRIDES}{service}/{instance_id}"


def _check_weight(weight: object) -> None:
    if weight is not None and not (
        isinstance(weight, int) and not isinstance(weight, bool) and 1 <= weight <= 1000
    ):
        raise ValidationError(
            f"override weight {show(weight)}: use a whole number from 1 to 1000 "
            f"(to stop traffic, disable or drain the instance)"
        )


def _check_text(name: str, value: object, limit: int) -> None:
    if not isinstance(value, str) or len(value) > limit:
        raise ValidationError(f"override {name} must be a string of at most {limit} characters")


@dataclass(frozen=True, slots=True, kw_only=True)
class Override:
    """An operator's override of one instance (``overrides/<service>/<instance-id>``).

    Attributes:
        service: the service.
        instance_id: the instance id.
        weight: replaces the registered weight (1-1000); None keeps it.
        disabled: True takes the instance out of every balanced list.
        draining: True makes the instance DRAINING (no new traffic).
        by: who set it (free text: a user name).
        at: when it was last set (UTC).
        note: why.
        revision: the store revision of the record (0 when not read from the store).

    Raises:
        ValidationError: a field is invalid; the message names it.
    """

    service: str
    instance_id: str
    weight: int | None = None
    disabled: bool = False
    draining: bool = False
    by: str = ""
    at: datetime | None = None
    note: str = ""
    revision: int = 0

    def __post_init__(self) -> None:
        check_service_name(self.service)
        if not isinstance(self.instance_id, str) or not ID_RE.fullmatch(self.instance_id):
            raise ValidationError(
                f"instance id {show(self.instance_id)}: use letters, digits and . _ : @ [ ] - "
                f"(at most 200)"
            )
        _check_weight(self.weight)
        for name in ("disabled", "draining"):
            if not isinstance(getattr(self, name), bool):
                raise ValidationError(f"override {name} must be true or false")
        _check_text("by", self.by, MAX_BY)
        _check_text("note", self.note, MAX_NOTE)
        if self.at is not None and not isinstance(self.at, datetime):
            raise ValidationError("override at must be a datetime or None")

    @property
    def empty(self) -> bool:
        """True when it changes nothing (no weight, not disabled, not draining)."""
        return self.weight is None and not self.disabled and not self.draining

    @property
    def key(self) -> str:
        """The store key of this override."""
        return override_key(self.service, self.instance_id)

    def describe(self) -> str:
        """A short text of what it changes: ``weight=20 draining``, or ``-``."""
        parts = [] if self.weight is None else [f"weight={self.weight}"]
        parts += [name for name in ("disabled", "draining") if getattr(self, name)]
        return " ".join(parts) or "-"

    def to_record(self) -> dict[str, Any]:
        """The documented JSON record (also what ``-o json`` prints)."""
        return {
            "weight": self.weight,
            "disabled": self.disabled,
            "draining": self.draining,
            "by": self.by,
            "at": None if self.at is None else self.at.isoformat(),
            "note": self.note,
        }


def encode_override(override: Override) -> bytes:
    """The override as its JSON record."""
    return json.dumps(override.to_record(), separators=(",", ":"), sort_keys=True).encode()


def decode_override(key: str, value: bytes, revision: int = 0) -> Override:
    """Decode a record from ``overrides/<service>/<instance-id>``.

    Raises:
        ValidationError: the key or the record is malformed (every failure).
    """
    decoder: Callable[[str, bytes], Override] = partial(_override, revision=revision)
    return _guarded(decoder, key, value)


def _override(key: str, value: bytes, revision: int) -> Override:
    service, instance_id = split_key(key, OVERRIDES)
    record = load_json_object(value)
    return Override(
        service=service,
        instance_id=instance_id,
        weight=record.get("weight"),
        disabled=_flag(record, "disabled"),
        draining=_flag(record, "draining"),
        by=_text(record, "by"),
        at=_when(record.get("at")),
        note=_text(record, "note"),
        revision=revision,
    )


def _flag(record: dict[str, Any], name: str) -> bool:
    value = record.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ValidationError(f"{name} must be true or false, not {show(value)}")
    return value


def _text(record: dict[str, Any], name: str) -> str:
    value = record.get(name)
    return "" if value is None else value  # type checked by Override


def _when(raw: object) -> datetime | None:
    if raw is None:
        return None
    if not isinstance(raw, str) or len(raw) > 64:
        raise ValidationError("at must be an ISO 8601 date-time string")
    when = datetime.fromisoformat(raw)
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def apply_override(instance: Instance, override: Override | None) -> Instance:
    """``instance`` as readers see it with ``override`` applied (pure).

    The weight is replaced, ``draining`` makes it DRAINING, and the override
    rides along as :attr:`Instance.override` (``disabled`` is honoured by
    :func:`~keel.registry.select`). An empty or absent override changes nothing.
    """
    if override is None or override.empty:
        return instance
    return instance.with_changes(
        weight=instance.weight if override.weight is None else override.weight,
        status=DRAINING if override.draining else instance.status,
        override=override,
    )


def read_override(kv: KeyValue | None) -> Override | None:
    """Decode a stored override; a malformed one is reported and read as none."""
    if kv is None:
        return None
    decoder = partial(decode_override, kv.key, revision=kv.mod_revision)
    decoded = decode(OVERRIDE_AREA, kv.key, kv.value, decoder)
    if isinstance(decoded, Rejected):
        report(decoded)
        return None
    return decoded


class Overrides:
    """Read and change operator overrides: ``Overrides(store)``.

    Args:
        store: the store.
        clock: time source for the ``at`` field.
    """

    def __init__(self, store: Store, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.store = store
        self._clock = clock

    async def get(self, service: str, instance_id: str) -> Override | None:
        """The override of one instance, or None (also for a malformed record, reported)."""
        return read_override(await self.store.get(_key(service, instance_id)))

    async def list(self, service: str | None = None) -> builtins.list[Override]:
        """Every override (of ``service``), sorted by key; malformed records skipped and counted."""
        prefix = OVERRIDES if service is None else override_prefix(check_service_name(service))
        kvs, _ = await self.store.range(prefix)
        return [o for o in map(read_override, kvs) if o is not None]

    async def set(
        self,
        service: str,
        instance_id: str,
        *,
        weight: int | None = None,
        disabled: bool | None = None,
        draining: bool | None = None,
        by: str = "",
        note: str = "",
    ) -> tuple[Override | None, Override | None]:
        """Change some fields of an instance's override (None leaves a field as it is).

        The write is a compare-and-swap on the record, so concurrent operators
        never lose each other's fields. An override left with nothing to change
        (``disabled=False`` on one that only disabled) is deleted.

        Returns:
            ``(before, after)``: the override before and after the change (None: none).

        Raises:
            ValidationError: a bad name, id, weight, flag, ``by`` or ``note`` (nothing written).
            ConflictError: the record kept changing under us (16 attempts).
        """
        key = _key(service, instance_id)
        _check_weight(weight)
        for name, flag in (("disabled", disabled), ("draining", draining)):
            if flag is not None and not isinstance(flag, bool):
                raise ValidationError(f"override {name} must be True, False or None")
        _check_text("by", by, MAX_BY)
        _check_text("note", note, MAX_NOTE)
        for _ in range(_ATTEMPTS):
            kv = await self.store.get(key)
            before = read_override(kv)
            base = before or Override(service=service, instance_id=instance_id)
            after = replace(
                base,
                weight=base.weight if weight is None else weight,
                disabled=base.disabled if disabled is None else disabled,
                draining=base.draining if draining is None else draining,
                by=by,
                note=note,
                at=self._clock.now(),
                revision=0,
            )
            if kv is None and after.empty:
                return None, None
            guard = Compare.mod_revision(key, "==", 0 if kv is None else kv.mod_revision)
            op = Delete(key) if after.empty else Put(key, encode_override(after))
            result = await self.store.txn([guard], [op])
            if result.succeeded:
                return before, None if after.empty else replace(after, revision=result.revision)
        raise ConflictError(
            f"override of {service}/{instance_id} changed {_ATTEMPTS} times while being set: "
            f"try again"
        )

    async def clear(self, service: str, instance_id: str) -> Override | None:
        """Remove an instance's override; return what it was (None: there was none)."""
        key = _key(service, instance_id)
        result = await self.store.txn([], [Get(key), Delete(key)])
        kv = result.results[0]
        assert kv is None or isinstance(kv, KeyValue)
        return read_override(kv)

    def __repr__(self) -> str:
        return f"<Overrides store={self.store!r}>"


def _key(service: str, instance_id: str) -> str:
    check_service_name(service)
    if not isinstance(instance_id, str) or not ID_RE.fullmatch(instance_id):
        raise ValidationError(
            f"instance id {show(instance_id)}: use letters, digits and . _ : @ [ ] - (at most 200)"
        )
    return override_key(service, instance_id)
