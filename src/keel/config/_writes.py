"""The write path of the config center: read the current record, commit a version.

Kept apart from :mod:`keel.config._center` so the compare-and-swap rules sit
in one place: every write is one transaction guarded by the current record's
``mod_revision`` (or its absence) and by the absence of the new history entry,
so two publishers never both win and a killed one leaves all or nothing.
"""

from __future__ import annotations

from keel._records import Rejected, decode, report
from keel.config._model import (
    ConfigDocument,
    GrayRelease,
    MalformedConfigError,
    current_key,
    history_key,
    history_prefix,
)
from keel.errors import ConflictError
from keel.store import Compare, Delete, Get, KeyValue, Op, Put, Store

__all__ = ["commit", "gray_of", "kept_history", "malformed_error", "read_current"]


async def kept_history(store: Store, name: str) -> list[ConfigDocument]:
    """Every readable history entry of ``name``, oldest first (malformed ones reported)."""
    kvs, _ = await store.range(history_prefix(name))
    out = []
    for kv in kvs:
        doc = decode("config", kv.key, kv.value, ConfigDocument.decode)
        if isinstance(doc, Rejected):
            report(doc)
        else:
            out.append(doc)
    return out


async def malformed_error(store: Store, name: str, rejected: Rejected) -> MalformedConfigError:
    """The error for a malformed current record, naming the repairs that work."""
    good = [d.version for d in await kept_history(store, name)]
    back = (
        f", or roll back to version {good[-1]} with 'keel config rollback {name} "
        f"{good[-1]} --force' (rollback(..., force=True))"
        if good
        else f", or delete it with 'keel config rm {name}'"
    )
    return MalformedConfigError(
        f"{rejected.key} holds a malformed record ({rejected.reason}): overwrite it with "
        f"'keel config publish {name} FILE --force' (publish(..., force=True)){back}"
    )


async def read_current(
    store: Store, name: str, *, force: bool
) -> tuple[KeyValue | None, int, bool]:
    """The current record, its version and whether it is readable.

    A malformed record is refused, or with ``force`` taken at the last
    version in history (as is an absent one: history survives delete).
    """
    kv = await store.get(current_key(name))
    if kv is not None:
        doc = decode("config", kv.key, kv.value, ConfigDocument.decode)
        if not isinstance(doc, Rejected):
            return kv, doc.version, True
        if not force:
            raise await malformed_error(store, name, doc)
    return kv, await _last_kept(store, name), kv is None


async def _last_kept(store: Store, name: str) -> int:
    """The last version in history, read from the keys (history survives delete)."""
    kept, _ = await store.range(history_prefix(name))
    suffixes = (kv.key.removeprefix(history_prefix(name)) for kv in kept)
    return max((int(s) for s in suffixes if len(s) == 10 and s.isdigit()), default=0)


async def commit(
    store: Store,
    retention: int,
    doc: ConfigDocument,
    compares: list[Compare],
    extra: tuple[Op, ...],
) -> None:
    """Write current + history (+ retention prune + extra ops) in one transaction."""
    ops: list[Op] = [
        Put(current_key(doc.name), doc.encode()),
        Put(history_key(doc.name, doc.version), doc.encode()),
        *extra,
    ]
    stale = doc.version - retention
    if stale > 0:
        ops.append(Delete(history_key(doc.name, stale)))
    entry = history_key(doc.name, doc.version)
    checks = [*compares, Compare.absent(entry)]
    result = await store.txn(checks, ops, [Get(current_key(doc.name)), Get(entry)])
    if result.succeeded:
        return
    now, stray = result.results
    have = (
        decode("config", now.key, now.value, ConfigDocument.decode)
        if isinstance(now, KeyValue)
        else None
    )
    if isinstance(stray, KeyValue) and not (
        isinstance(have, ConfigDocument) and have.version >= doc.version
    ):
        raise ConflictError(
            f"{entry} already exists, though {doc.name} is not at version {doc.version}: "
            f"a record written outside keel; delete that key and publish again"
        )
    state = "malformed" if isinstance(have, Rejected) else f"version {have.version if have else 0}"
    raise ConflictError(
        f"{doc.name} changed while publishing (now {state}): read it again and retry"
    )


def gray_of(name: str, kv: KeyValue) -> GrayRelease:
    """Decode a gray record, or raise MalformedConfigError naming the repair."""
    gray = decode("config", kv.key, kv.value, GrayRelease.decode)
    if isinstance(gray, Rejected):
        raise MalformedConfigError(
            f"{gray.key} holds a malformed gray record ({gray.reason}): end it with "
            f"'keel config abort {name}' and start the gray again"
        )
    return gray
