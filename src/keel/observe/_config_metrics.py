"""Prometheus series for live config bindings.

``keel_config_reloads_total{config,outcome}`` counts applied and invalid
publishes seen by a binding; ``keel_config_version{config}`` is the version a
binding runs.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

__all__ = ["ConfigMetrics", "config_metrics"]


class ConfigMetrics:
    """The config series on one registry.

    Args:
        registry: where to register (default: a new private registry).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._reloads = Counter(
            "keel_config_reloads",
            "Config publishes seen by live bindings, by outcome (applied, invalid).",
            ("config", "outcome"),
            registry=self.registry,
        )
        self._version = Gauge(
            "keel_config_version",
            "Config version a live binding runs.",
            ("config",),
            registry=self.registry,
        )

    def applied(self, config: str, version: int) -> None:
        """A new value was applied."""
        self._reloads.labels(config, "applied").inc()
        self._version.labels(config).set(version)

    def invalid(self, config: str) -> None:
        """A publish was refused by the binding's validation."""
        self._reloads.labels(config, "invalid").inc()

    def invalid_count(self, config: str) -> float:
        """How many invalid publishes this registry has counted for ``config``."""
        return float(self._reloads.labels(config, "invalid")._value.get())

    def __repr__(self) -> str:
        return f"ConfigMetrics(registry={self.registry!r})"


_default: ConfigMetrics | None = None


def config_metrics() -> ConfigMetrics:
    """The process-wide config series on ``prometheus_client.REGISTRY`` (created once)."""
    global _default
    if _default is None:
        _default = ConfigMetrics(REGISTRY)
    return _default
