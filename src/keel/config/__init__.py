"""Config center: named documents with history, rollback, gray release and typed hot reload.

``ConfigCenter(store)`` publishes (compare-and-swap on the version; current
record and history in one transaction), lists, diffs, rolls back and runs gray
releases; ``await center.bind(name, Model)`` gives a :class:`LiveConfig` whose
``value`` follows every valid publish. See ``docs/config.md``.
"""

from keel.config._center import (
    DEFAULT_MAX_BYTES,
    DEFAULT_RETENTION,
    ConfigCenter,
    ConfigSummary,
)
from keel.config._formats import (
    FORMATS,
    MAX_DEPTH,
    MAX_NODES,
    Format,
    guess_format,
    parse,
    parse_properties,
)
from keel.config._health import ClientHealth, HealthProbe
from keel.config._layers import ENV_PREFIX, Source, env_overrides, merge
from keel.config._live import LiveConfig
from keel.config._model import (
    ClientReport,
    ConfigDocument,
    GrayRelease,
    GrayRule,
    MalformedConfigError,
)
from keel.config._schema import ConfigSchema, SchemaViolation, SchemaViolationError, schema_of

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_RETENTION",
    "ENV_PREFIX",
    "FORMATS",
    "MAX_DEPTH",
    "MAX_NODES",
    "ClientHealth",
    "ClientReport",
    "ConfigCenter",
    "ConfigDocument",
    "ConfigSchema",
    "ConfigSummary",
    "Format",
    "GrayRelease",
    "GrayRule",
    "HealthProbe",
    "LiveConfig",
    "MalformedConfigError",
    "SchemaViolation",
    "SchemaViolationError",
    "Source",
    "env_overrides",
    "guess_format",
    "merge",
    "parse",
    "parse_properties",
    "schema_of",
]
