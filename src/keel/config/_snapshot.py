"""The local snapshot of a live binding: the last good document, for a cold start.

Written atomically (a temporary file, then ``os.replace``) after each applied
change; read when the store is unreachable at start, or its record malformed.
The file is local but may be stale, truncated or edited, so it is read as
strictly as a store record.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from keel._records import load_json_object
from keel.config._fields import integer, text
from keel.config._formats import Format, check_format
from keel.config._layers import Source
from keel.config._model import ConfigDocument

__all__ = ["read_snapshot", "write_snapshot"]


def write_snapshot(path: Path, content: str, fmt: Format, source: Source) -> None:
    """Keep ``content`` (applied from ``source``) in ``path``, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    body = {"content": content, "format": fmt, "version": source.version}
    tmp.write_text(json.dumps({**body, "gray": source.gray, "md5": source.md5}))
    os.replace(tmp, path)


def read_snapshot(path: Path, name: str) -> ConfigDocument:
    """The document kept in ``path`` for config ``name``.

    Raises:
        OSError: the file cannot be read.
        ValueError: it is not a snapshot (not JSON, fields of the wrong type).
    """
    data = load_json_object(path.read_bytes())
    return ConfigDocument(
        name=name,
        content=text(data, "content"),
        format=check_format(text(data, "format")),
        version=integer(data, "version", minimum=0),
        md5=text(data, "md5"),
    )
