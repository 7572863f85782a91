"""Config records and gray rules: what is stored, as readable JSON, and who is on gray.

Layout::

    config/<name>                     the current version (JSON document record)
    config-history/<name>/<version>   every published version, immutable (zero-padded)
    config-gray/<name>                the gray (canary) release, at most one per config
    config-clients/<name>/<client>    what each live binding runs, on its session lease
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from keel._records import load_json_object
from keel.config._fields import integer, number, optional_number, string_list, string_map, text
from keel.config._formats import Format, check_format
from keel.errors import ConflictError, ValidationError

__all__ = [
    "ClientReport",
    "ConfigDocument",
    "GrayRelease",
    "GrayRule",
    "MalformedConfigError",
    "check_config_name",
    "client_key",
    "current_key",
    "gray_key",
    "history_key",
    "history_prefix",
    "md5_of",
]

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


class MalformedConfigError(ConflictError):
    """A config record in the store cannot be read (written by hand, by another tool, or
    corrupted); the message names the key and how to repair it."""


def check_config_name(name: object) -> str:
    """Return ``name`` if valid (``orders.yaml``, ``feature-flags.json``), else raise."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ValidationError(
            f"config name {name!r} is not valid: use letters, digits, '.', '_' and '-' "
            f"(at most 200), e.g. 'orders.yaml'"
        )
    return name


def current_key(name: str) -> str:
    """``config/<name>``."""
    return f"config/{name}"


def history_prefix(name: str) -> str:
    """``config-history/<name>/``."""
    return f"config-history/{name}/"


def history_key(name: str, version: int) -> str:
    """``config-history/<name>/<version, zero-padded to 10 digits>``."""
    return f"{history_prefix(name)}{version:010d}"


def gray_key(name: str) -> str:
    """``config-gray/<name>``."""
    return f"config-gray/{name}"


def client_key(name: str, client_id: str) -> str:
    """``config-clients/<name>/<client-id>``."""
    return f"config-clients/{name}/{client_id}"


def md5_of(content: str) -> str:
    """The md5 hex digest of the content's UTF-8 bytes (as Nacos reports it)."""
    return hashlib.md5(content.encode(), usedforsecurity=False).hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfigDocument:
    """One published version of a config.

    Attributes:
        name: the config's name.
        content: the document text.
        format: ``yaml``, ``json``, ``toml``, ``properties`` or ``text``.
        version: 1, 2, 3... per config.
        md5: md5 of the content.
        author: who published it.
        comment: why.
        published_at: when (epoch seconds).
    """

    name: str
    content: str
    format: Format
    version: int
    md5: str
    author: str = ""
    comment: str = ""
    published_at: float = 0.0

    def encode(self) -> bytes:
        """The JSON record."""
        return json.dumps(
            {
                "name": self.name,
                "content": self.content,
                "format": self.format,
                "version": self.version,
                "md5": self.md5,
                "author": self.author,
                "comment": self.comment,
                "published_at": self.published_at,
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def decode(cls, value: bytes) -> ConfigDocument:
        """Parse a stored current or history record, strict about every field's type.

        Raises:
            ValueError: not a JSON object, nested too deep, or a field missing
                or of the wrong type (readers decode through ``keel._records.decode``).
        """
        record = load_json_object(value)
        content = text(record, "content")
        return cls(
            name=check_config_name(text(record, "name")),
            content=content,
            format=check_format(text(record, "format", "text")),
            version=integer(record, "version", minimum=1),
            md5=_md5(record, content),
            author=text(record, "author", ""),
            comment=text(record, "comment", ""),
            published_at=number(record, "published_at", 0.0),
        )


def _md5(record: Mapping[str, Any], content: str) -> str:
    """The record's md5 (computed when absent or null: older records may lack it)."""
    return (text(record, "md5") if record.get("md5") is not None else "") or md5_of(content)


@dataclass(frozen=True, slots=True, kw_only=True)
class GrayRule:
    """Which clients get the gray content.

    A client is on gray when its id is listed in ``ids``, or when it matches
    every ``labels`` pattern (glob: ``version=2.*``) and its stable bucket
    (a hash of config name and client id, 0-99) is under ``percent``. With no
    labels and no percent, only the listed ids are on gray.

    Attributes:
        ids: client (instance) ids on gray.
        labels: label patterns that must all match.
        percent: share of the matching clients, 0-100 (None: all of them).
    """

    ids: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    percent: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "ids", tuple(self.ids))
        object.__setattr__(self, "labels", dict(self.labels))
        if self.percent is not None and not 0 <= self.percent <= 100:
            raise ValidationError(f"gray percent {self.percent!r}: use 0-100")
        if not self.ids and not self.labels and self.percent is None:
            raise ValidationError("a gray rule needs ids, labels or a percent: say who gets it")

    def matches(self, config: str, client_id: str, labels: Mapping[str, str]) -> bool:
        """Whether a client with this id and these labels is on gray (pure)."""
        if client_id in self.ids:
            return True
        if not self.labels and self.percent is None:
            return False
        for key, pattern in self.labels.items():
            if key not in labels or not fnmatch.fnmatchcase(labels[key], pattern):
                return False
        return self.percent is None or bucket(config, client_id) < self.percent

    def to_json(self) -> dict[str, Any]:
        """The rule as JSON-ready data."""
        return {"ids": list(self.ids), "labels": dict(self.labels), "percent": self.percent}

    @classmethod
    def from_json(cls, data: object) -> GrayRule:
        """Parse a rule from stored data, strict about every field's type.

        Raises:
            ValueError: not a mapping, a field of the wrong type, or an empty rule.
        """
        if not isinstance(data, dict):
            raise ValueError(f"the gray rule must be a mapping, not a {type(data).__name__}")
        return cls(
            ids=string_list(data, "ids"),
            labels=string_map(data, "labels"),
            percent=optional_number(data, "percent"),
        )

    @classmethod
    def parse_labels(cls, text: str) -> dict[str, str]:
        """Parse ``zone=a, version=2.*`` into a dict; raise ValidationError if malformed."""
        labels: dict[str, str] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, value = part.partition("=")
            if not sep or not key.strip():
                raise ValidationError(f"label {part!r}: write key=pattern, e.g. zone=a")
            labels[key.strip()] = value.strip()
        return labels


def bucket(config: str, client_id: str) -> float:
    """A client's stable place 0-99.99 for percentage rules (crc32 of config and id)."""
    return (zlib.crc32(f"{config}\0{client_id}".encode()) % 10_000) / 100


@dataclass(frozen=True, slots=True, kw_only=True)
class GrayRelease:
    """A gray release in progress.

    Attributes:
        name: the config.
        content: the gray content.
        format: its format.
        md5: its md5.
        rule: who gets it.
        base_version: the main version it was published against.
        author: who published it.
        comment: why.
        published_at: when (epoch seconds).
    """

    name: str
    content: str
    format: Format
    md5: str
    rule: GrayRule
    base_version: int
    author: str = ""
    comment: str = ""
    published_at: float = 0.0

    def encode(self) -> bytes:
        """The JSON record."""
        return json.dumps(
            {
                "name": self.name,
                "content": self.content,
                "format": self.format,
                "md5": self.md5,
                "rule": self.rule.to_json(),
                "base_version": self.base_version,
                "author": self.author,
                "comment": self.comment,
                "published_at": self.published_at,
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def decode(cls, value: bytes) -> GrayRelease:
        """Parse a stored gray record, strict about every field's type.

        Raises:
            ValueError: not a JSON object, or a field missing or of the wrong type.
        """
        r = load_json_object(value)
        content = text(r, "content")
        return cls(
            name=check_config_name(text(r, "name")),
            content=content,
            format=check_format(text(r, "format")),
            md5=_md5(r, content),
            rule=GrayRule.from_json(r.get("rule")),
            base_version=integer(r, "base_version", minimum=0),
            author=text(r, "author", ""),
            comment=text(r, "comment", ""),
            published_at=number(r, "published_at", 0.0),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientReport:
    """What one live binding runs, under ``config-clients/<name>/<client-id>``.

    Attributes:
        version: the main version its value is based on (0: none).
        gray: whether it runs the gray content.
        md5: md5 of the document it applied.
        labels: its labels, as gray rules see them.
        healthy: the application's health verdict (None: no health check given).
        errors: errors counted since it took this version.
        requests: requests counted since it took this version.
        detail: the check's own words (why unhealthy), at most 200 characters.
        checked_at: when the verdict was taken (epoch seconds; 0: never).
    """

    version: int
    gray: bool
    md5: str
    labels: Mapping[str, str] = field(default_factory=dict)
    healthy: bool | None = None
    errors: int = 0
    requests: int = 0
    detail: str = ""
    checked_at: float = 0.0

    def encode(self) -> bytes:
        """The JSON record (health fields only when a health check is given)."""
        body: dict[str, Any] = {"version": self.version, "gray": self.gray, "md5": self.md5}
        body["labels"] = dict(self.labels)
        if self.healthy is not None:
            body.update(
                healthy=self.healthy,
                errors=self.errors,
                requests=self.requests,
                detail=self.detail,
                checked_at=self.checked_at,
            )
        return json.dumps(body).encode()

    @classmethod
    def decode(cls, value: bytes) -> ClientReport:
        """Parse a stored client report, strict about every field's type.

        Raises:
            ValueError: not a JSON object, or a field of the wrong type.
        """
        r = load_json_object(value)
        return cls(
            version=integer(r, "version", minimum=0),
            gray=_flag(r, "gray", False),
            md5=text(r, "md5", ""),
            labels=string_map(r, "labels"),
            healthy=_flag(r, "healthy", None),
            errors=integer(r, "errors", minimum=0, default=0),
            requests=integer(r, "requests", minimum=0, default=0),
            detail=text(r, "detail", "")[:200],
            checked_at=number(r, "checked_at", 0.0),
        )


def _flag(record: Mapping[str, Any], key: str, default: bool | None) -> Any:
    value = record.get(key, default)
    if value is None and default is None:
        return None
    if not isinstance(value, bool):
        raise ValueError(f"field {key!r} must be true or false, not a {type(value).__name__}")
    return value
