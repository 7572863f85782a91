"""keel: a toolkit for distributed Python services.

Service registry and discovery, a config center, locks and leader election,
a distributed scheduler and resilience policies, all written once against one
small store contract (:mod:`keel.store`) that runs on memory, an embedded
SQLite file, or a real etcd cluster::

    import keel

    async with keel.connect("sqlite://") as store:
        await store.put("greeting", b"hello")
"""

from keel._connect import connect

__all__ = ["__version__", "connect"]

__version__ = "0.1.0"
