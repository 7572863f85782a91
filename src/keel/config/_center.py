"""ConfigCenter: publish with compare-and-swap, history, diff, rollback, gray release.

Every change is ONE transaction: a publish writes the current record and its
history entry (and prunes the oldest history entry past retention) together,
guarded by a compare on the current record's version, so two admins cannot
overwrite each other and a publisher killed mid-way leaves either everything
or nothing. A promote writes the new version and removes the gray release in
the same transaction.

Records are read through one boundary (:mod:`keel._records`): a listing skips
(and marks) a malformed record; an operation that needs a malformed record
raises :class:`MalformedConfigError` naming the key and the repair, and a
publish with ``force=True`` overwrites a malformed current record, still
guarded by that record's revision.
"""

from __future__ import annotations

import builtins
import difflib
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from keel._aio import Opening
from keel._records import Rejected, decode, report
from keel.clock import SYSTEM_CLOCK, Clock
from keel.config._formats import Format, check_format, guess_format, parse
from keel.config._gray_api import GrayMethods
from keel.config._health import HealthProbe, HealthReporter
from keel.config._live import LiveConfig
from keel.config._model import (
    ConfigDocument,
    MalformedConfigError,
    check_config_name,
    current_key,
    gray_key,
    history_key,
    md5_of,
)
from keel.config._schema import schema_guard
from keel.config._schema_api import SchemaMethods
from keel.config._writes import commit, kept_history, malformed_error, read_current
from keel.coord import Session
from keel.errors import ConflictError, NotFoundError, ValidationError
from keel.observe import ConfigMetrics, config_metrics
from keel.store import Compare, Delete, Store

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_RETENTION", "ConfigCenter", "ConfigSummary"]

T = TypeVar("T")
DEFAULT_MAX_BYTES = 256 * 1024
DEFAULT_RETENTION = 100


@dataclass(frozen=True, slots=True)
class ConfigSummary:
    """One config in :meth:`ConfigCenter.list`.

    Attributes:
        name: the config.
        version: its current version.
        format: its format.
        md5: md5 of the current content.
        published_at: when the current version was published.
        gray: whether a gray release is in progress.
        rejected: why the current record could not be read (empty when it is
            fine; then version is 0 and the other fields are empty).
    """

    name: str
    version: int
    format: Format
    md5: str
    published_at: float
    gray: bool
    rejected: str = ""


class ConfigCenter(GrayMethods, SchemaMethods):
    """Publish and read configs on a store.

    Args:
        store: the store (its root is the namespace: dev, staging, prod...).
        max_bytes: largest document accepted (default 256 KiB).
        retention: history versions kept per config (default 100).
        clock: time source of canary records (tests pass a fake one).
    """

    def __init__(
        self,
        store: Store,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        retention: int = DEFAULT_RETENTION,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if retention < 1:
            raise ValidationError("retention must keep at least 1 version")
        self.store = store
        self.max_bytes = max_bytes
        self.retention = retention
        self.clock = clock

    def _validate(self, name: str, content: str, fmt: Format | None) -> Format:
        check_config_name(name)
        if not isinstance(content, str):
            raise ValidationError("config content must be text (str): decode it first")
        size = len(content.encode())
        if size > self.max_bytes:
            raise ValidationError(
                f"{name} is {size} bytes, over the limit of {self.max_bytes}: split it, "
                f"or raise max_bytes"
            )
        chosen = check_format(fmt) if fmt is not None else guess_format(name)
        parse(chosen, content, name=name)
        return chosen

    async def get(self, name: str) -> ConfigDocument | None:
        """The current version of ``name``, or None.

        Raises:
            MalformedConfigError: the current record cannot be read (the message says how
                to repair it).
        """
        kv = await self.store.get(current_key(check_config_name(name)))
        if kv is None:
            return None
        doc = decode("config", kv.key, kv.value, ConfigDocument.decode)
        if isinstance(doc, Rejected):
            raise await malformed_error(self.store, name, doc)
        return doc

    async def publish(
        self,
        name: str,
        content: str,
        *,
        format: Format | None = None,
        author: str = "",
        comment: str = "",
        expected_version: int | None = None,
        force: bool = False,
    ) -> ConfigDocument:
        """Publish ``content`` as the next version of ``name``.

        Args:
            format: the document format (default: from the name's extension).
            expected_version: publish only if the current version is this one
                (0: only if the config does not exist yet).
            force: overwrite a current record that cannot be read (malformed);
                the write is still guarded by that record's revision, so a
                concurrent change is a conflict. A readable record is never
                forced: ``expected_version`` still applies to it.

        Raises:
            ValidationError: the document does not parse (the message names the
                line and column), nests deeper than 64 levels, expands to more
                than 100,000 values, is too large, or the name is bad; nothing is written.
            ConflictError: the current version is not ``expected_version``.
            MalformedConfigError: the current record is malformed and ``force`` is False.
        """
        fmt = self._validate(name, content, format)
        schema_ok = await schema_guard(self.store, name, content, fmt, f"{name} (publish)")
        kv, last, readable = await read_current(self.store, name, force=force)
        version = last if kv is not None else 0
        if expected_version is not None and expected_version != version and readable:
            raise ConflictError(
                f"{name} is at version {version}, not {expected_version}: someone published "
                f"first; read it again and retry with --expected-version {version}"
            )
        doc = ConfigDocument(
            name=name,
            content=content,
            format=fmt,
            version=last + 1,
            md5=md5_of(content),
            author=author,
            comment=comment,
            published_at=time.time(),
        )
        guard = (
            Compare.mod_revision(current_key(name), "==", kv.mod_revision)
            if kv is not None
            else Compare.absent(current_key(name))
        )
        await commit(self.store, self.retention, doc, [guard, schema_ok], ())
        return doc

    async def list(self) -> list[ConfigSummary]:
        """Every config with its current version, sorted by name.

        A malformed current record is listed with ``rejected`` set (and reported).
        """
        kvs, _ = await self.store.range("config/")
        grays, _ = await self.store.range("config-gray/")
        on_gray = {kv.key.removeprefix("config-gray/") for kv in grays}
        out = []
        for kv in kvs:
            name = kv.key.removeprefix("config/")
            doc = decode("config", kv.key, kv.value, ConfigDocument.decode)
            if isinstance(doc, Rejected):
                report(doc)
                out.append(ConfigSummary(name, 0, "text", "", 0.0, name in on_gray, doc.reason))
                continue
            out.append(
                ConfigSummary(
                    doc.name, doc.version, doc.format, doc.md5, doc.published_at, name in on_gray
                )
            )
        return out

    async def history(self, name: str) -> builtins.list[ConfigDocument]:
        """Every kept version of ``name``, oldest first (malformed entries skipped, reported)."""
        return await kept_history(self.store, check_config_name(name))

    async def version(self, name: str, version: int) -> ConfigDocument:
        """One version of ``name`` from history.

        Raises:
            NotFoundError: the version was never published or is past retention.
            MalformedConfigError: that history entry cannot be read.
        """
        kv = await self.store.get(history_key(check_config_name(name), version))
        if kv is None:
            raise NotFoundError(
                f"{name} has no version {version} (never published, or past retention): "
                f"see 'keel config history {name}'"
            )
        doc = decode("config", kv.key, kv.value, ConfigDocument.decode)
        if isinstance(doc, Rejected):
            raise MalformedConfigError(
                f"{doc.key} holds a malformed record ({doc.reason}): pick another version "
                f"from 'keel config history {name}'"
            )
        return doc

    async def diff(self, name: str, a: int, b: int) -> str:
        """A unified diff from version ``a`` to version ``b``."""
        old, new = await self.version(name, a), await self.version(name, b)
        return "".join(
            difflib.unified_diff(
                old.content.splitlines(keepends=True),
                new.content.splitlines(keepends=True),
                fromfile=f"{name}@{a}",
                tofile=f"{name}@{b}",
            )
        )

    async def rollback(
        self, name: str, to_version: int, *, author: str = "", force: bool = False
    ) -> ConfigDocument:
        """Publish the content of an old version as a new version (history is never rewritten).

        Args:
            force: overwrite a malformed current record (as :meth:`publish`).
        """
        old = await self.version(name, to_version)
        return await self.publish(
            name,
            old.content,
            format=old.format,
            author=author,
            comment=f"rollback to version {to_version}",
            force=force,
        )

    async def delete(self, name: str) -> bool:
        """Delete the current record and any gray release; history is kept."""
        check_config_name(name)
        result = await self.store.txn([], [Delete(current_key(name)), Delete(gray_key(name))])
        deleted = result.results[0]
        return isinstance(deleted, int) and deleted > 0

    # -- live binding ---------------------------------------------------------

    def bind(
        self,
        name: str,
        model: type[T] | Any = dict,
        *,
        labels: Mapping[str, str] | None = None,
        client_id: str | None = None,
        file: str | os.PathLike[str] | None = None,
        snapshot_dir: str | os.PathLike[str] | None = None,
        session: Session | None = None,
        environ: Mapping[str, str] | None = None,
        metrics: ConfigMetrics | None = None,
        health: HealthProbe | None = None,
        health_interval_s: float = 5.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> Opening[LiveConfig[T]]:
        """Bind ``name`` to ``model`` (a pydantic model, dataclass, ``dict``...) and follow it.

        ``live = await center.bind(...)`` or ``async with center.bind(...) as live``.

        Args:
            labels: this client's labels, matched by gray rules (``zone``, ``version``...).
            client_id: this client's id for gray rules (default: host-pid).
            file: a local document layered under the store's.
            snapshot_dir: where to keep the last good document for cold starts.
            session: when given, the binding reports its version under
                ``config-clients/<name>/<client-id>`` on this session's lease.
            environ: the environment for ``KEEL_CFG__...`` overrides (default: os.environ).
            metrics: where to count reloads (default: the process-wide registry).
            health: the application's health check (a plain or async callable
                returning a bool or :class:`ClientHealth`), reported beside the
                version every ``health_interval_s`` for canary analysis (needs ``session``).
            clock: time source of the health checks.

        Raises:
            ValidationError: the current document does not validate and there is
                no earlier value to keep.
            StoreUnavailableError: the store is down and there is no snapshot.
            MalformedConfigError: the current record is malformed and there is no
                snapshot (later malformed records are skipped: the value is kept).
        """
        check_config_name(name)
        if health is not None and session is None:
            raise ValidationError(
                "bind(health=...) reports through the session's lease: pass session= too"
            )
        reporter = HealthReporter(health, health_interval_s, clock) if health else None
        live: LiveConfig[T] = LiveConfig(
            self.store,
            name,
            model,
            client_id=client_id or f"{socket.gethostname()}-{os.getpid()}",
            labels=labels or {},
            file=Path(file) if file is not None else None,
            snapshot_dir=Path(snapshot_dir) if snapshot_dir is not None else None,
            session=session,
            environ=environ if environ is not None else os.environ,
            metrics=metrics or config_metrics(),
            health=reporter,
        )
        return Opening(live.start, lambda opened: opened.close())

    def __repr__(self) -> str:
        return f"<ConfigCenter root={self.store.root!r} retention={self.retention}>"
