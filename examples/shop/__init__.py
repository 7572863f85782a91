"""The shop example: ``orders`` calls ``inventory`` (2 instances) and ``payment`` by name.

Each service is a keel :class:`~keel.service.Service` (registered when ready,
``/healthz`` ``/readyz`` ``/metrics``, drained on exit) and hot-reloads one
setting from the config center. ``python -m examples.shop`` runs all four
instances; ``examples.shop.run_shop`` runs them inside a caller's event loop
(what ``keel up`` uses). See ``examples/shop/README.md``.
"""

from examples.shop._apps import inventory_app, orders_app, payment_app
from examples.shop._run import Shop, run_shop

__all__ = ["Shop", "inventory_app", "orders_app", "payment_app", "run_shop"]
