"""The gray-release half of :class:`~keel.config.ConfigCenter`: start, promote, abort, canary.

A gray started with an :class:`~keel.config.Analysis` also writes its canary
record (same transaction), which the elected
:class:`~keel.config.CanaryController` then drives. Promote and abort by hand
end a running canary in the same transaction as the gray, guarded by the
canary record's revision, so a manual decision always wins over the
controller's: the controller's next write is guarded by the revision it read
and fails.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from keel._records import Rejected, decode, report
from keel.clock import Clock
from keel.config._analysis import Analysis
from keel.config._canary import Canary, CanaryEntry, canary_key, canary_log_key, canary_log_prefix
from keel.config._formats import Format
from keel.config._model import (
    ConfigDocument,
    GrayRelease,
    GrayRule,
    MalformedConfigError,
    check_config_name,
    current_key,
    gray_key,
    md5_of,
)
from keel.config._schema import schema_guard
from keel.config._writes import commit, gray_of, read_current
from keel.errors import ConflictError, NotFoundError
from keel.store import Compare, Delete, KeyValue, Op, Put, Store

__all__ = ["LOG_RETENTION", "GrayMethods", "end_canary_ops", "promote_gray"]

LOG_RETENTION = 500
"""Canary decisions kept per config (the oldest go when a new canary starts)."""


async def promote_gray(
    store: Store,
    retention: int,
    name: str,
    gray_kv: KeyValue,
    *,
    author: str,
    comment: str,
    guards: list[Compare],
    extra: tuple[Op, ...],
) -> ConfigDocument:
    """Commit the gray content as the next main version and delete the gray, in one txn."""
    gray = gray_of(name, gray_kv)
    schema_ok = await schema_guard(store, name, gray.content, gray.format, "the gray")
    kv, last, _ = await read_current(store, name, force=False)
    doc = ConfigDocument(
        name=name,
        content=gray.content,
        format=gray.format,
        version=last + 1,
        md5=gray.md5,
        author=author or gray.author,
        comment=comment,
        published_at=time.time(),
    )
    checks = [*guards, Compare.mod_revision(gray_key(name), "==", gray_kv.mod_revision), schema_ok]
    checks.append(
        Compare.mod_revision(current_key(name), "==", kv.mod_revision)
        if kv is not None
        else Compare.absent(current_key(name))
    )
    await commit(store, retention, doc, checks, (Delete(gray_key(name)), *extra))
    return doc


async def end_canary_ops(
    store: Store, name: str, gray_md5: str, status: str, reason: str
) -> tuple[list[Compare], list[Op]]:
    """The compares and ops that end ``name``'s running canary by hand (none if none runs)."""
    kv = await store.get(canary_key(name))
    if kv is None:
        return [], []
    guard = Compare.mod_revision(kv.key, "==", kv.mod_revision)
    canary = decode("config", kv.key, kv.value, Canary.decode)
    if isinstance(canary, Rejected):
        report(canary)
        return [guard], [Delete(kv.key)]  # a manual decision is never blocked by a bad record
    if canary.status != "running" or canary.gray_md5 != gray_md5:
        return [], []
    now = time.time()
    entry = CanaryEntry(at=now, step=canary.step, kind=status, reasons=(reason,), by="manual")
    ended = canary.decided(entry, status="promoted" if status == "promote" else "aborted")
    return [guard], [
        Put(kv.key, ended.encode()),
        Put(canary_log_key(name, now, status), entry.encode()),
    ]


class GrayMethods:
    """Gray release and canary operations (mixed into :class:`ConfigCenter`)."""

    store: Store
    retention: int
    clock: Clock

    if TYPE_CHECKING:  # provided by ConfigCenter, which mixes these methods in

        def _validate(self, name: str, content: str, fmt: Format | None) -> Format: ...

        async def get(self, name: str) -> ConfigDocument | None: ...

    async def publish_gray(
        self,
        name: str,
        content: str,
        rule: GrayRule,
        *,
        author: str = "",
        comment: str = "",
        replace: bool = False,
        analysis: Analysis | None = None,
    ) -> GrayRelease:
        """Start a gray release: clients matching ``rule`` get ``content``; others keep the main.

        Args:
            analysis: run it as a canary: the rule's percent follows the
                analysis' steps (starting at the first), and the elected
                :class:`~keel.config.CanaryController` promotes or rolls back.

        Raises:
            NotFoundError: the config has no main version yet (publish it first).
            ConflictError: a gray release is already running (``replace=True`` replaces it).
            SchemaViolationError: the content fails the config's schema.
        """
        current = await self.get(name)
        if current is None:
            raise NotFoundError(f"{name} does not exist: publish a first version before a gray")
        fmt = self._validate(name, content, current.format)
        schema_ok = await schema_guard(self.store, name, content, fmt, f"{name} (gray)")
        now = self.clock.time()
        if analysis is not None:
            rule = GrayRule(ids=rule.ids, labels=rule.labels, percent=analysis.steps[0].percent)
        gray = GrayRelease(
            name=name,
            content=content,
            format=fmt,
            md5=md5_of(content),
            rule=rule,
            base_version=current.version,
            author=author,
            comment=comment,
            published_at=now,
        )
        compares = [schema_ok] if replace else [schema_ok, Compare.absent(gray_key(name))]
        ops: list[Op] = [Put(gray_key(name), gray.encode()), Delete(canary_key(name))]
        if analysis is not None:
            ops[1:] = _start_ops(name, gray, analysis, now, author)
            ops.extend(await _prune_log(self.store, name))
        result = await self.store.txn(compares, ops)
        if not result.succeeded:
            raise ConflictError(
                f"{name} already has a gray release (or its schema changed meanwhile): "
                f"promote or abort it first (or replace it)"
            )
        return gray

    async def gray(self, name: str) -> GrayRelease | None:
        """The gray release of ``name`` in progress, or None.

        Raises:
            MalformedConfigError: the gray record cannot be read (abort it and start again).
        """
        kv = await self.store.get(gray_key(check_config_name(name)))
        return gray_of(name, kv) if kv else None

    async def promote(self, name: str, *, author: str = "") -> ConfigDocument:
        """Make the gray content the next main version and end the gray (and its canary),
        in one transaction."""
        gray_kv = await self.store.get(gray_key(check_config_name(name)))
        if gray_kv is None:
            raise NotFoundError(f"{name} has no gray release to promote")
        gray = gray_of(name, gray_kv)
        guards, ops = await end_canary_ops(self.store, name, gray.md5, "promote", "by hand")
        return await promote_gray(
            self.store,
            self.retention,
            name,
            gray_kv,
            author=author,
            comment=f"promote gray: {gray.comment}".rstrip(": "),
            guards=guards,
            extra=tuple(ops),
        )

    async def abort_gray(self, name: str) -> bool:
        """End the gray release (and its canary); gray clients go back to the main version."""
        kv = await self.store.get(gray_key(check_config_name(name)))
        if kv is None:
            return False
        try:
            md5 = gray_of(name, kv).md5
        except MalformedConfigError:
            md5 = ""
        guards, ops = await end_canary_ops(self.store, name, md5, "abort", "by hand")
        guards.append(Compare.mod_revision(kv.key, "==", kv.mod_revision))
        result = await self.store.txn(guards, [Delete(kv.key), *ops])
        if not result.succeeded:
            raise ConflictError(f"{name}'s gray changed while aborting it: look again and retry")
        return True

    async def canary(self, name: str) -> Canary | None:
        """The canary of ``name`` (running, or the last one ended), or None.

        Raises:
            MalformedConfigError: the canary record cannot be read (abort the gray).
        """
        kv = await self.store.get(canary_key(check_config_name(name)))
        if kv is None:
            return None
        canary = decode("config", kv.key, kv.value, Canary.decode)
        if isinstance(canary, Rejected):
            raise MalformedConfigError(
                f"{canary.key} holds a malformed canary record ({canary.reason}): end it "
                f"with 'keel config abort {name}'"
            )
        return canary

    async def canary_log(self, name: str) -> list[CanaryEntry]:
        """Every recorded canary decision of ``name``, oldest first (malformed ones skipped)."""
        kvs, _ = await self.store.range(canary_log_prefix(check_config_name(name)))
        out = []
        for kv in kvs:
            entry = decode("config", kv.key, kv.value, CanaryEntry.decode)
            if isinstance(entry, Rejected):
                report(entry)
            else:
                out.append(entry)
        return out


async def _prune_log(store: Store, name: str) -> list[Op]:
    """Deletes of the oldest decisions past :data:`LOG_RETENTION` (a new canary adds some)."""
    kvs, _ = await store.range(canary_log_prefix(name))
    stale = kvs[: max(0, len(kvs) - LOG_RETENTION)]
    return [Delete(kv.key) for kv in stale]


def _start_ops(
    name: str, gray: GrayRelease, analysis: Analysis, now: float, author: str
) -> list[Op]:
    first = analysis.steps[0]
    entry = CanaryEntry(
        at=now,
        step=0,
        kind="start",
        reasons=(f"canary started at {first.percent:g}%",),
        evidence={"analysis": analysis.to_json()},
        by=author or "manual",
    )
    canary = Canary(
        name=name,
        analysis=analysis,
        gray_md5=gray.md5,
        step=0,
        step_started_at=now,
        started_at=now,
        deadline_at=now + analysis.deadline_s,
        decisions=(entry,),
    )
    return [
        Put(canary_key(name), canary.encode()),
        Put(canary_log_key(name, now, "start"), entry.encode()),
    ]
