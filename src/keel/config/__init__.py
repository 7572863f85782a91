"""Config center: named documents with history, rollback, gray release and typed hot reload.

``ConfigCenter(store)`` publishes (compare-and-swap on the version; current
record and history in one transaction), lists, diffs, rolls back and runs gray
releases; ``await center.bind(name, Model)`` gives a :class:`LiveConfig` whose
``value`` follows every valid publish. A config can carry a JSON Schema
(``center.set_schema``) that every publish, gray and rollback is checked
against, and a gray release can run as a canary (``analysis=Analysis(...)``)
that the elected :class:`CanaryController` promotes or rolls back from the
health the bindings report (``bind(..., health=...)``). See ``docs/config.md``.
"""

from keel.config._analysis import Analysis, Evaluation, PromQuery, Step, evaluate
from keel.config._canary import Canary, CanaryEntry, decide
from keel.config._center import (
    DEFAULT_MAX_BYTES,
    DEFAULT_RETENTION,
    ConfigCenter,
    ConfigSummary,
)
from keel.config._controller import CanaryController, ControllerStatistics
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
    "Analysis",
    "Canary",
    "CanaryController",
    "CanaryEntry",
    "ClientHealth",
    "ClientReport",
    "ConfigCenter",
    "ConfigDocument",
    "ConfigSchema",
    "ConfigSummary",
    "ControllerStatistics",
    "Evaluation",
    "Format",
    "GrayRelease",
    "GrayRule",
    "HealthProbe",
    "LiveConfig",
    "MalformedConfigError",
    "PromQuery",
    "SchemaViolation",
    "SchemaViolationError",
    "Source",
    "Step",
    "decide",
    "env_overrides",
    "evaluate",
    "guess_format",
    "merge",
    "parse",
    "parse_properties",
    "schema_of",
]
