"""Store browser data: keys by prefix, values rendered as JSON, YAML or text, secrets redacted.

Values under :data:`REDACTED` prefixes (password hashes, session records,
API key digests) are never rendered, to anyone. Keys under
:data:`READ_ONLY` (the console's own users, sessions and audit log) cannot
be written from the browser: users have their own page, and the audit log
must not be editable by the people it records.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import yaml

from keel.errors import ValidationError
from keel.store import KeyValue

__all__ = [
    "LIST_LIMIT",
    "READ_ONLY",
    "REDACTED",
    "UNLISTED",
    "Entry",
    "check_writable",
    "render_value",
]

LIST_LIMIT = 500
REDACTED = ("console/users/", "console/sessions/", "gateway/keys/")
READ_ONLY = ("console/",)
UNLISTED = ("console/sessions/",)
"""Never listed: one record per login, of no use to anyone browsing."""
FORMATS = ("json", "yaml", "text")
_PREVIEW = 120


@dataclass(frozen=True, slots=True)
class Entry:
    """One key as the browser lists it."""

    key: str
    version: int
    mod_revision: int
    create_revision: int
    lease: int
    size: int
    preview: str
    redacted: bool


def redacted(key: str) -> bool:
    """Whether ``key``'s value is never shown."""
    return key.startswith(REDACTED)


def entry(kv: KeyValue) -> Entry:
    """The listing row of ``kv`` (a short preview unless redacted)."""
    hidden = redacted(kv.key)
    preview = "" if hidden else _text(kv.value)[:_PREVIEW]
    return Entry(
        kv.key,
        kv.version,
        kv.mod_revision,
        kv.create_revision,
        kv.lease or 0,
        len(kv.value),
        " ".join(preview.split()),
        hidden,
    )


def _text(value: bytes) -> str:
    return value.decode("utf-8", errors="replace")


def parse_json(value: bytes) -> Any:
    """``value`` as JSON, or raise ValueError."""
    return json.loads(value)


def render_value(kv: KeyValue, fmt: str) -> tuple[str, str]:
    """``(format used, text)``: JSON pretty-printed, YAML, or the raw text.

    A value that is not JSON is shown as text whatever was asked.
    """
    if redacted(kv.key):
        return "text", "(hidden: this record holds a secret or a hash)"
    if fmt not in FORMATS:
        fmt = "json"
    if fmt == "text":
        return "text", _text(kv.value)
    try:
        document = parse_json(kv.value)
    except (ValueError, RecursionError):
        return "text", _text(kv.value)
    if fmt == "yaml":
        return "yaml", yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    return "json", json.dumps(document, indent=2, ensure_ascii=False)


def check_writable(key: str) -> str:
    """Return ``key`` if the browser may write it.

    Raises:
        ValidationError: empty, or under the console's own records.
    """
    if not key or key != key.strip():
        raise ValidationError("key: give a key without surrounding spaces")
    if key.startswith(READ_ONLY):
        raise ValidationError(
            f"{key!r} belongs to the console: manage users on the Users page; "
            "the audit log is not editable"
        )
    return key
