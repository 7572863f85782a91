"""The engines behind the store contract: memory, sqlite and etcd.

Each backend imports :mod:`keel.store` (the contract it implements) and the
leaves (:mod:`keel.errors`, :mod:`keel.clock`), nothing above. Pick one with
:func:`keel.connect`.
"""

__all__: list[str] = []
