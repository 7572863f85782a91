"""Service registry and discovery over the store contract.

Services register an :class:`Instance` (readable JSON at
``services/<service>/<instance-id>`` on the process's session lease) and find
each other through :class:`Discovery`, a watch-fed local cache. A
leader-elected :class:`HealthChecker` marks failing instances under
``health/<service>/<instance-id>``. Operators override an instance's weight,
or disable or drain it, with :class:`Overrides` (``overrides/<service>/<instance-id>``,
apart from the owner's record so it survives re-registration); discovery
merges them. See ``docs/registry.md``.
"""

from keel.registry._decode import HealthMark, decode_health_mark, decode_instance
from keel.registry._discovery import Discovery, DiscoveryStatistics, ServiceStatistics, select
from keel.registry._health import CheckState, HealthChecker, probe
from keel.registry._model import (
    DRAINING,
    MAX_CHECK_INTERVAL_S,
    MIN_CHECK_INTERVAL_S,
    MIN_CHECK_TIMEOUT_S,
    UP,
    HealthCheck,
    Instance,
    Status,
    encode_instance,
)
from keel.registry._overrides import Override, Overrides, decode_override, encode_override
from keel.registry._registry import (
    InstanceDeregistered,
    InstanceRegistered,
    InstanceReregistered,
    InstanceUpdated,
    Registration,
    Registry,
    RegistryEvent,
)

__all__ = [
    "DRAINING",
    "MAX_CHECK_INTERVAL_S",
    "MIN_CHECK_INTERVAL_S",
    "MIN_CHECK_TIMEOUT_S",
    "UP",
    "CheckState",
    "Discovery",
    "DiscoveryStatistics",
    "HealthCheck",
    "HealthChecker",
    "HealthMark",
    "Instance",
    "InstanceDeregistered",
    "InstanceRegistered",
    "InstanceReregistered",
    "InstanceUpdated",
    "Override",
    "Overrides",
    "Registration",
    "Registry",
    "RegistryEvent",
    "ServiceStatistics",
    "Status",
    "decode_health_mark",
    "decode_instance",
    "decode_override",
    "encode_instance",
    "encode_override",
    "probe",
    "select",
]
