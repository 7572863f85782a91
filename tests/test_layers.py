"""The architecture's arrows point down: imports between keel's layers are checked here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "keel"

# The service runtime and the HTTP client sit on every capability below them.
_INTEGRATION = {
    "clock",
    "errors",
    "store",
    "coord",
    "registry",
    "balance",
    "resilience",
    "config",
    "observe",
}

# What each area may import of keel (besides itself). ARCHITECTURE.md §1.
ALLOWED: dict[str, set[str]] = {
    "_aio": set(),
    "_records": {"observe"},
    "_signals": set(),
    "_redis_wire": set(),
    "errors": set(),
    "clock": set(),
    "observe": {"clock", "errors"},
    "resilience": {"clock", "errors", "observe"},
    "balance": {"clock", "errors", "observe"},
    "store": {"clock", "errors", "observe"},
    "backends": {"clock", "errors", "store", "observe"},
    "coord": {"clock", "errors", "store", "observe"},
    "testing": {"clock", "errors"},
    "config": {"clock", "errors", "store", "coord", "observe"},
    "registry": {"clock", "errors", "store", "coord", "observe", "balance"},
    "schedule": {"clock", "errors", "store", "coord", "registry", "resilience", "observe"},
    "service": _INTEGRATION,
    "http": _INTEGRATION,
    "grpc": _INTEGRATION | {"service"},  # the gRPC server reuses the service runtime's settings
    "saga": _INTEGRATION | {"http", "grpc", "events"},  # steps call services through keel's clients
    "idempotency": _INTEGRATION,
    "events": {
        "clock",
        "errors",
        "store",
        "coord",
        "observe",
        "resilience",
        "connect",
    },  # events.connect(url)
    "gateway": _INTEGRATION | {"service", "http"},  # an application: the runtime and clients
    "console": _INTEGRATION | {"service", "http", "schedule", "saga", "events", "connect"},
}


def _area(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py")


def _keel_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "keel" and len(parts) > 1:
                found.add(parts[1].removeprefix("_") if parts[1] == "_connect" else parts[1])
    return found


@pytest.mark.parametrize("area", sorted(ALLOWED))
def test_area_imports_only_layers_below(area: str) -> None:
    """Each area imports only the layers under it (a capability never imports a backend)."""
    files = (
        [SRC / f"{area}.py"]
        if (SRC / f"{area}.py").exists()
        else sorted((SRC / area).rglob("*.py"))
    )
    for path in files:
        helpers = {"_aio", "_signals", "_redis_wire"} | (
            {"_records"} if "observe" in ALLOWED[area] else set()
        )
        wrong = _keel_imports(path) - ALLOWED[area] - {area} - helpers
        assert not wrong, f"{path.relative_to(SRC)} imports keel.{sorted(wrong)}: arrows point down"


def test_every_public_package_declares_its_names() -> None:
    """Each package has an __all__ whose names all exist."""
    import importlib

    for init in sorted(SRC.rglob("__init__.py")):
        module_name = ".".join(("keel", *init.parent.relative_to(SRC).parts))
        module = importlib.import_module(module_name)
        names = getattr(module, "__all__", None)
        assert names is not None, f"{module_name} has no __all__"
        missing = [n for n in names if not hasattr(module, n)]
        assert not missing, f"{module_name}.__all__ names missing attributes {missing}"
