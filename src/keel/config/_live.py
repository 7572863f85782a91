"""Live binding: a typed config value that follows publishes, and never breaks the service.

``live.value`` is a plain attribute holding the last *valid* value: reading it
costs an attribute lookup, nothing is parsed on read. A publish that does not
validate against the binding's model keeps the old value, logs one clear
error, counts ``keel_config_reloads_total{outcome="invalid"}`` and calls the
``on_invalid`` callbacks. A record that cannot be decoded at all (not JSON,
fields of the wrong type) is skipped the same way, through the one boundary
of :mod:`keel._records` (logged, counted in
``keel_records_rejected_total{area="config"}``): the binding keeps its value
and keeps following, and applies the next valid record.

Layers, lowest first: the model's defaults < a local ``file`` < the store's
document (the gray one if this client is on gray) < environment variables
``KEEL_CFG__<CONFIG>__<FIELD>[__<SUB>...]`` (``<CONFIG>`` is the config name
without its extension, upper-cased, other characters as ``_``: ``orders.yaml``
→ ``KEEL_CFG__ORDERS__TIMEOUT_S=3``). A snapshot file keeps the last good
document so a service starts with it while the store is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

from pydantic import TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from keel._records import Rejected, decode, report
from keel.config._formats import Format, guess_format, parse
from keel.config._health import HealthReporter
from keel.config._layers import Source, env_overrides, merge
from keel.config._model import (
    ClientReport,
    ConfigDocument,
    GrayRelease,
    MalformedConfigError,
    client_key,
    current_key,
    gray_key,
)
from keel.config._snapshot import read_snapshot, write_snapshot
from keel.coord import Session
from keel.errors import KeelError, StoreClosedError, ValidationError
from keel.observe import ConfigMetrics
from keel.store import Event, EventType, Get, KeyValue, Store, merged

__all__ = ["LiveConfig"]

log = logging.getLogger("keel.config")
T = TypeVar("T")
_RETRY_S = 0.5
_REPORT_RETRY_MAX_S = 5.0


class LiveConfig(Generic[T]):
    """A config bound to a model; see the module docstring.

    Attributes:
        value: the last valid value (read it freely: it is a plain attribute).
        source: which version (and whether gray) ``value`` came from.
        invalid: how many publishes this binding refused.
    """

    value: T

    def __init__(
        self,
        store: Store,
        name: str,
        model: Any,
        *,
        client_id: str,
        labels: Mapping[str, str],
        file: Path | None,
        snapshot_dir: Path | None,
        session: Session | None,
        environ: Mapping[str, str],
        metrics: ConfigMetrics,
        health: HealthReporter | None = None,
    ) -> None:
        self.store = store
        self.health = health
        self._health_task: asyncio.Task[None] | None = None
        self.name = name
        self.client_id = client_id
        self.labels = dict(labels)
        self._adapter: TypeAdapter[T] = TypeAdapter(model)
        self._file = file
        self._snapshot = snapshot_dir / f"{name}.json" if snapshot_dir else None
        self._session = session
        self._unreported = False  # the last report failed: written again on the next check
        self._report_task: asyncio.Task[None] | None = None  # that, without a health check
        self._environ = environ
        self._metrics = metrics
        self._main: ConfigDocument | None = None
        self._gray: GrayRelease | None = None
        self._bad_main: Rejected | None = None
        self.source = Source(0, False, "")
        self.invalid = 0
        self._on_change: list[Callable[[T, T], object]] = []
        self._on_invalid: list[Callable[[Exception, Source], object]] = []
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    # -- callbacks ------------------------------------------------------------

    def on_change(self, callback: Callable[[T, T], object]) -> None:
        """Call ``callback(old, new)`` after each applied change."""
        self._on_change.append(callback)

    def on_invalid(self, callback: Callable[[Exception, Source], object]) -> None:
        """Call ``callback(error, source)`` when a publish fails validation."""
        self._on_invalid.append(callback)

    async def changes(self) -> AsyncIterator[T]:
        """Yield each new value as it is applied."""
        seen = self.source

        def moved() -> bool:
            return self.source != seen

        while True:
            async with self._changed:
                await self._changed.wait_for(moved)
            seen = self.source
            yield self.value

    # -- building a value -------------------------------------------------------

    def _effective(self) -> tuple[str, Format, Source] | None:
        gray = self._gray
        if gray is not None and gray.rule.matches(self.name, self.client_id, self.labels):
            base = self._main.version if self._main else gray.base_version
            return gray.content, gray.format, Source(base, True, gray.md5)
        if self._main is not None:
            m = self._main
            return m.content, m.format, Source(m.version, False, m.md5)
        return None

    def _build(self, content: str | None, fmt: Format) -> T:
        layers: Any = {}
        if self._file is not None and self._file.exists():
            text = self._file.read_text()
            layers = parse(guess_format(self._file.name), text, name=str(self._file))
        if content is not None:
            document = parse(fmt, content, name=self.name)
            layers = merge(layers, document) if isinstance(document, Mapping) else document
        overrides = env_overrides(self.name, self._environ)
        if overrides:
            layers = merge(layers if isinstance(layers, Mapping) else {}, overrides)
        return self._adapter.validate_python(layers)

    def _apply(self, source_hint: bool = False) -> None:
        effective = self._effective()
        content: str | None = None
        fmt: Format = "text"
        source = Source(0, False, "")
        if effective is not None:
            content, fmt, source = effective
        if source_hint:
            source = Source(source.version, source.gray, source.md5, from_snapshot=True)
        if source == self.source and hasattr(self, "value"):
            return
        try:
            new = self._build(content, fmt)
        except (PydanticValidationError, ValidationError, OSError) as exc:
            self._refuse(exc, source)
            return
        except Exception as exc:  # a model's own validator may raise anything: refuse, go on
            self._refuse(exc, source)
            return
        old = getattr(self, "value", new)
        had_value = hasattr(self, "value")
        self.value = new
        self.source = source
        self._metrics.applied(self.name, source.version)
        if had_value:
            for callback in self._on_change:
                with contextlib.suppress(Exception):
                    callback(old, new)

    def _refuse(self, exc: Exception, source: Source) -> None:
        self.invalid += 1
        self._metrics.invalid(self.name)
        log.error(
            "config %s version %s%s is invalid for this service, keeping version %s: %s",
            self.name,
            source.version,
            " (gray)" if source.gray else "",
            self.source.version,
            str(exc).replace("\n", "; "),
        )
        for callback in self._on_invalid:
            with contextlib.suppress(Exception):
                callback(exc, source)

    # -- loading and following ------------------------------------------------------

    async def _load(self) -> int:
        result = await self.store.txn([], [Get(current_key(self.name)), Get(gray_key(self.name))])
        main, gray = result.results
        self._take(main if isinstance(main, KeyValue) else None, current_key(self.name))
        self._take(gray if isinstance(gray, KeyValue) else None, gray_key(self.name))
        return result.revision

    def _take(self, kv: KeyValue | None, key: str) -> None:
        """Decode the main or gray record at ``key``; a malformed one is skipped, the last kept."""
        is_main = key == current_key(self.name)
        if kv is None:
            if is_main:
                self._main, self._bad_main = None, None
            else:
                self._gray = None
            return
        decoded = decode(
            "config", key, kv.value, ConfigDocument.decode if is_main else GrayRelease.decode
        )
        if isinstance(decoded, Rejected):
            report(decoded)
            if is_main:
                self._bad_main = decoded
        elif isinstance(decoded, ConfigDocument):
            self._main, self._bad_main = decoded, None
        elif isinstance(decoded, GrayRelease):
            self._gray = decoded

    @property
    def following(self) -> bool:
        """Whether the binding is following the store (False once closed)."""
        return self._task is not None and not self._task.done()

    async def start(self) -> Self:
        """Load the value (from the store, or the snapshot if the store is down) and follow it."""
        try:
            revision = await self._load()
        except KeelError as exc:
            if not self._load_snapshot():
                raise
            log.warning("config %s: store unreachable (%s); running the snapshot", self.name, exc)
            revision = 0
        else:
            if self._bad_main is None:
                self._apply()
            elif not self._load_snapshot():
                raise MalformedConfigError(
                    f"{self._bad_main}, and no earlier value exists: repair it with 'keel config "
                    f"publish {self.name} FILE --force' (or rollback --force), then start again"
                )
            if not hasattr(self, "value"):
                raise ValidationError(
                    f"config {self.name} does not validate and no earlier value exists: fix it "
                    f"and publish again"
                )
            await self._after_change()
        self._task = asyncio.ensure_future(self._follow(revision))
        if self.health is not None:
            self._health_task = asyncio.ensure_future(self._check_health(self.health))
        return self

    async def _follow(self, revision: int) -> None:
        while True:
            try:
                if revision == 0:
                    revision = await self._load()
                    await self._changed_now()
                await self._watch(revision + 1)
            except StoreClosedError:
                return
            except KeelError as exc:
                log.info("config %s: watch interrupted (%s); reloading", self.name, exc)
                await asyncio.sleep(_RETRY_S)
                revision = 0
            except Exception:  # a bug must not end the binding for good: log, reload, go on
                log.exception("config %s: follow failed; reloading", self.name)
                await asyncio.sleep(_RETRY_S)
                revision = 0

    async def _watch(self, start: int) -> None:
        keys = (current_key(self.name), gray_key(self.name))
        async with (
            self.store.watch(keys[0], start_revision=start) as main,
            self.store.watch(keys[1], start_revision=start) as gray,
        ):
            async for event, more in merged([main, gray]):
                self._fold(event)
                if not more:
                    await self._changed_now()

    def _fold(self, event: Event) -> None:
        self._take(None if event.type is EventType.DELETE else event.kv, event.kv.key)

    async def _changed_now(self) -> None:
        before = self.source
        self._apply()
        if self.source != before:
            await self._after_change()

    async def _after_change(self) -> None:
        try:
            self._save_snapshot()
        except OSError as exc:
            log.warning("config %s: cannot save the snapshot (%s); running on", self.name, exc)
        async with self._changed:
            self._changed.notify_all()
        if self.health is not None:
            await self.health.sample(new_version=True)
        await self._report()

    async def _check_health(self, health: HealthReporter) -> None:
        """Sample the application's check on its interval; report when the verdict moves."""
        while True:
            await health.clock.sleep(health.interval_s)
            if await health.sample() or self._unreported:
                await self._report()

    async def _report(self) -> None:
        if self._session is None or self._session.lost.is_set():
            return
        h = self.health
        body = ClientReport(
            version=self.source.version,
            gray=self.source.gray,
            md5=self.source.md5,
            labels=self.labels,
            healthy=h.current.healthy if h else None,
            errors=h.current.errors if h else 0,
            requests=h.current.requests if h else 0,
            detail=h.current.detail if h else "",
            checked_at=h.checked_at if h else 0.0,
        )
        try:
            await self.store.put(
                client_key(self.name, self.client_id),
                body.encode(),
                lease=self._session.lease_id,
            )
        except KeelError:  # the store is away: a canary must not judge by the old report
            self._unreported = True
            if self.health is None and (self._report_task is None or self._report_task.done()):
                self._report_task = asyncio.ensure_future(self._report_again())
        else:
            self._unreported = False

    async def _report_again(self) -> None:
        """Write a failed report again, backing off (a health check does it when there is one)."""
        delay = _RETRY_S
        while self._unreported:
            await asyncio.sleep(delay)
            await self._report()
            delay = min(delay * 2, _REPORT_RETRY_MAX_S)

    def _save_snapshot(self) -> None:
        effective = self._effective()
        if self._snapshot is not None and effective is not None:
            content, fmt, source = effective
            write_snapshot(self._snapshot, content, fmt, source)

    def _load_snapshot(self) -> bool:
        if self._snapshot is None or not self._snapshot.exists():
            return False
        try:
            self._main = read_snapshot(self._snapshot, self.name)
        except (OSError, ValueError) as exc:
            log.warning("config %s: snapshot %s unreadable (%s)", self.name, self._snapshot, exc)
            return False
        self._apply(source_hint=True)
        return hasattr(self, "value")

    async def close(self) -> None:
        """Stop following the store (the value stays readable)."""
        for task in (self._health_task, self._report_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._health_task = self._report_task = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        s = self.source
        return (
            f"<LiveConfig {self.name} v{s.version}{' gray' if s.gray else ''}"
            f"{' snapshot' if s.from_snapshot else ''} invalid={self.invalid}>"
        )
