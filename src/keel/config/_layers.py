"""What a live binding layers and reports: the source of its value, merging, env overrides."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["ENV_PREFIX", "Source", "env_overrides", "merge"]

ENV_PREFIX = "KEEL_CFG"


@dataclass(frozen=True, slots=True)
class Source:
    """Where the running value came from.

    Attributes:
        version: the main version it is based on (0: none yet).
        gray: whether it is the gray content.
        md5: md5 of the document applied.
        from_snapshot: True when loaded from the local snapshot (store unreachable).
    """

    version: int
    gray: bool
    md5: str
    from_snapshot: bool = False


def merge(base: Any, top: Any) -> Any:
    """Deep-merge ``top`` over ``base`` (mappings merge key by key; anything else replaces)."""
    if isinstance(base, Mapping) and isinstance(top, Mapping):
        out = dict(base)
        for key, value in top.items():
            out[key] = merge(out.get(key), value) if key in out else value
        return out
    return top


def env_overrides(config: str, environ: Mapping[str, str]) -> dict[str, Any]:
    """The ``KEEL_CFG__<CONFIG>__...`` variables for ``config`` as a nested dict."""
    stem = config.rsplit(".", 1)[0] if "." in config else config
    prefix = f"{ENV_PREFIX}__{re.sub(r'[^A-Za-z0-9]', '_', stem).upper()}__"
    out: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(prefix):
            continue
        path = [p.lower() for p in name[len(prefix) :].split("__") if p]
        if not path:
            continue
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        try:
            node[path[-1]] = json.loads(raw)
        except ValueError:
            node[path[-1]] = raw
    return out
