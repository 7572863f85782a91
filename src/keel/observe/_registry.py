"""keel's collectors join ``prometheus_client``'s default registry when it is imported.

Importing ``prometheus_client`` takes about 35 ms (its package imports the
exposition module, which pulls in ``http.server``, ``urllib`` and ``ssl``).
A command that reads one key, or a program that never exports metrics,
should not pay that for the store's counters. keel's hot-path series are
plain numbers read by a collector at scrape time, so they need the library
only when someone scrapes; :func:`register_default` registers a collector on
``prometheus_client.REGISTRY`` now when the library is loaded already, and
otherwise as soon as its import finishes, whoever imports it (an
application calling ``start_http_server``, keel's own ``/metrics``).

Written here: the "post-import hook" needs a finder on ``sys.meta_path``
that wraps one module's loader. ``wrapt`` has one, but importing ``wrapt``
costs more than the import it would save.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    from importlib.machinery import ModuleSpec

    from prometheus_client import CollectorRegistry
    from prometheus_client.registry import Collector

__all__ = ["LateCollector", "cumulative", "register_default"]

_MODULE = "prometheus_client"
_pending: list[Collector] = []
_lock = threading.Lock()


def register_default(collector: Collector) -> None:
    """Put ``collector`` on ``prometheus_client.REGISTRY`` now, or when the library is imported."""
    with _lock:
        loaded = sys.modules.get(_MODULE)
        if loaded is None or not hasattr(loaded, "REGISTRY"):
            _pending.append(collector)
            _install()
            return
    loaded.REGISTRY.register(collector)


def _flush(module: ModuleType) -> None:
    """Register what waited, on the registry of the just-imported library."""
    with _lock:
        waiting = list(_pending)
        _pending.clear()
        if _finder in sys.meta_path:
            sys.meta_path.remove(_finder)
    for collector in waiting:
        module.REGISTRY.register(collector)


class _Loader:
    """The library's own loader, then :func:`_flush` once its package has run."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        created: ModuleType | None = self._loader.create_module(spec)
        return created

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        _flush(module)

    def __getattr__(self, name: str) -> Any:  # resource readers and the like: the real loader's
        return getattr(self._loader, name)


class _Finder:
    """Finds ``prometheus_client`` through the other finders and wraps its loader."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        if fullname != _MODULE:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec: ModuleSpec | None = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _Loader(spec.loader)  # type: ignore[assignment]
                return spec
        return None


_finder = _Finder()


def _install() -> None:
    if _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)


class LateCollector:
    """A collector of plain numbers: on a given registry now, or on the default one later.

    ``Cls(registry)`` registers on ``registry`` (a new private one when None);
    ``Cls.on_default_registry()`` on ``prometheus_client.REGISTRY`` once the
    library is loaded. Subclasses set their numbers up in :meth:`_start`.
    """

    _registry: CollectorRegistry | None

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        if registry is None:
            from prometheus_client import CollectorRegistry

            registry = CollectorRegistry()
        self._registry = registry
        self._start()
        registry.register(self)  # type: ignore[arg-type]  # subclasses define collect()

    def _start(self) -> None:
        """Set up the numbers (before any registration reads them)."""

    @classmethod
    def on_default_registry(cls) -> Self:
        """New series on ``prometheus_client.REGISTRY``, registered when the library loads."""
        made = cls.__new__(cls)
        made._registry = None
        made._start()
        register_default(made)  # type: ignore[arg-type]
        return made

    @property
    def registry(self) -> CollectorRegistry:
        """Where the series are registered (``prometheus_client.REGISTRY`` for the default)."""
        if self._registry is None:
            from prometheus_client import REGISTRY

            return REGISTRY
        return self._registry


def cumulative(counts: list[int], bounds: tuple[float, ...]) -> list[tuple[str, float]]:
    """Histogram buckets as Prometheus wants them: (upper bound, running count), +Inf last."""
    out: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip((*bounds, float("inf")), counts, strict=True):
        running += count
        out.append(("+Inf" if bound == float("inf") else repr(bound), running))
    return out
