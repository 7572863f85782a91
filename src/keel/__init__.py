"""keel: a toolkit for distributed Python services.

Service registry and discovery, a config center, locks and leader election,
a distributed scheduler and resilience policies, all written once against one
small store contract (:mod:`keel.store`) that runs on memory, an embedded
SQLite file, or a real etcd cluster::

    import keel

    async with keel.connect("sqlite://") as store:
        await store.put("greeting", b"hello")

``import keel`` itself imports nothing else: ``keel.connect`` (and the store
layer under it) is loaded on first use, so tools such as ``keel --help``
start fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keel._connect import connect

__all__ = ["__version__", "connect"]

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """Load ``keel.connect`` on first use."""
    if name == "connect":
        from keel._connect import connect

        return connect
    raise AttributeError(f"module 'keel' has no attribute {name!r}")
