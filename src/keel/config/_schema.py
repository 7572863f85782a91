"""Schemas: a JSON Schema stored with a config name, checked before anything is published.

Layout::

    config-schema/<name>                     the current schema (JSON record)
    config-schema-history/<name>/<version>   every schema version, immutable

A schema is plain JSON Schema (draft 2020-12 unless the document says
``$schema``), so it can come from a pydantic model
(:func:`schema_of` uses ``TypeAdapter(model).json_schema()``), from another
language's tooling, or be written by hand. Documents are checked with the
``jsonschema`` library: writing a JSON Schema validator is not something to
do by hand. Every violation is reported with its path (``$.limits.rps``) and
message, sorted by path, so a CI log shows them all at once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import jsonschema
from jsonschema.exceptions import SchemaError as JsonSchemaError
from pydantic import TypeAdapter
from pydantic.errors import PydanticUserError

from keel._records import Rejected, decode, load_json_object, report
from keel.config._fields import integer, number, text
from keel.config._formats import Format, parse
from keel.config._model import MalformedConfigError, check_config_name
from keel.errors import ConflictError, NotFoundError, ValidationError
from keel.store import Compare, Get, KeyValue, Put, Store

__all__ = [
    "MAX_SCHEMA_BYTES",
    "ConfigSchema",
    "SchemaViolation",
    "SchemaViolationError",
    "check_document",
    "current_schema",
    "delete_schema",
    "put_schema",
    "schema_guard",
    "schema_history",
    "schema_key",
    "schema_of",
    "violations",
]

MAX_SCHEMA_BYTES = 256 * 1024
_SHOWN = 20  # violations named in one error message (all are on the exception)


def schema_key(name: str) -> str:
    """``config-schema/<name>``."""
    return f"config-schema/{name}"


def schema_history_key(name: str, version: int) -> str:
    """``config-schema-history/<name>/<version, zero-padded>``."""
    return f"config-schema-history/{name}/{version:010d}"


@dataclass(frozen=True, slots=True)
class SchemaViolation:
    """One way a document fails its schema.

    Attributes:
        path: where, as a JSONPath (``$`` is the whole document).
        message: what is wrong there.
    """

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class SchemaViolationError(ValidationError):
    """A document fails its config's schema; nothing was written.

    Attributes:
        violations: every violation (path and message), sorted by path.
    """

    def __init__(self, message: str, violations: tuple[SchemaViolation, ...]) -> None:
        super().__init__(message)
        self.violations = violations


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfigSchema:
    """One version of a config's schema.

    Attributes:
        name: the config.
        schema: the JSON Schema document.
        version: 1, 2, 3... per config.
        author: who set it.
        comment: why.
        published_at: when (epoch seconds).
    """

    name: str
    schema: Mapping[str, Any] = field(default_factory=dict)
    version: int
    author: str = ""
    comment: str = ""
    published_at: float = 0.0

    def encode(self) -> bytes:
        """The JSON record."""
        return json.dumps(
            {
                "name": self.name,
                "schema": dict(self.schema),
                "version": self.version,
                "author": self.author,
                "comment": self.comment,
                "published_at": self.published_at,
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def decode(cls, value: bytes) -> ConfigSchema:
        """Parse a stored schema record (the schema itself must be a valid JSON Schema).

        Raises:
            ValueError: not a JSON object, a field missing or of the wrong type,
                or a schema that is not a valid JSON Schema.
        """
        record = load_json_object(value)
        schema = record.get("schema")
        if not isinstance(schema, dict):
            raise ValueError("field 'schema' must be a JSON object")
        _check_schema(schema, "stored schema")
        return cls(
            name=check_config_name(text(record, "name")),
            schema=schema,
            version=integer(record, "version", minimum=1),
            author=text(record, "author", ""),
            comment=text(record, "comment", ""),
            published_at=number(record, "published_at", 0.0),
        )


def schema_of(model: object) -> dict[str, Any]:
    """The JSON Schema of ``model``: a mapping is taken as a schema, anything else as a type.

    Raises:
        ValidationError: the mapping is not a valid JSON Schema, or the type
            has no JSON Schema (pydantic cannot describe it).
    """
    if isinstance(model, Mapping):
        schema = json.loads(json.dumps(model))  # a plain JSON copy (refuses non-JSON values)
    else:
        try:
            schema = TypeAdapter(cast(Any, model)).json_schema()
        except (PydanticUserError, TypeError) as exc:
            raise ValidationError(
                f"{model!r} has no JSON Schema ({exc}): pass a pydantic model, a dataclass "
                f"or a JSON Schema mapping"
            ) from exc
    _check_schema(schema, "schema")
    return dict(schema)


def _check_schema(schema: Mapping[str, Any], what: str) -> None:
    try:
        jsonschema.validators.validator_for(schema).check_schema(dict(schema))
    except JsonSchemaError as exc:
        where = "$" + "".join(f"[{p!r}]" for p in exc.path)
        raise ValidationError(
            f"{what} is not a valid JSON Schema at {where}: {exc.message}"
        ) from exc


def _path(parts: Iterable[str | int]) -> str:
    out = "$"
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def violations(schema: Mapping[str, Any], document: object) -> tuple[SchemaViolation, ...]:
    """Every violation of ``schema`` by ``document`` (parsed), sorted by path; () when valid."""
    validator = jsonschema.validators.validator_for(schema)(schema)
    found = [
        SchemaViolation(_path(error.absolute_path), error.message)
        for error in validator.iter_errors(cast(Any, document))
    ]
    return tuple(sorted(found, key=lambda v: (v.path, v.message)))


def check_document(
    schema: ConfigSchema, content: str, fmt: Format, *, what: str = "document"
) -> None:
    """Raise :class:`SchemaViolationError` if ``content`` fails ``schema``.

    Raises:
        ValidationError: the content does not parse (line and column named).
        SchemaViolationError: it parses but fails the schema (paths and messages named).
    """
    found = violations(schema.schema, parse(fmt, content, name=schema.name))
    if not found:
        return
    shown = "; ".join(map(str, found[:_SHOWN]))
    more = f" (and {len(found) - _SHOWN} more)" if len(found) > _SHOWN else ""
    which = f"schema version {schema.version}" if schema.version else "the given schema"
    raise SchemaViolationError(
        f"{what} fails the schema of {schema.name} ({which}): "
        f"{shown}{more}; fix the document, or change the schema with "
        f"'keel config schema set {schema.name} FILE'",
        found,
    )


async def current_schema(store: Store, name: str) -> tuple[ConfigSchema | None, Compare]:
    """The schema of ``name`` (or None) and a compare that holds while it is unchanged.

    Put the compare in the transaction that writes a checked document, so a
    schema changed between the check and the write makes the write fail.

    Raises:
        MalformedConfigError: the schema record cannot be read (set it again, or remove it).
    """
    kv = await store.get(schema_key(name))
    if kv is None:
        return None, Compare.absent(schema_key(name))
    return _decoded(name, kv), Compare.mod_revision(schema_key(name), "==", kv.mod_revision)


async def schema_guard(store: Store, name: str, content: str, fmt: Format, what: str) -> Compare:
    """Check ``content`` against the schema of ``name``; return the compare that keeps it true."""
    schema, guard = await current_schema(store, name)
    if schema is not None:
        check_document(schema, content, fmt, what=what)
    return guard


def _decoded(name: str, kv: KeyValue) -> ConfigSchema:
    schema = decode("config", kv.key, kv.value, ConfigSchema.decode)
    if isinstance(schema, Rejected):
        report(schema)
        raise MalformedConfigError(
            f"{schema.key} holds a malformed schema record ({schema.reason}): set it again "
            f"with 'keel config schema set {name} FILE' or remove it with "
            f"'keel config schema rm {name}'"
        )
    return schema


async def put_schema(
    store: Store, name: str, schema: Mapping[str, Any], *, author: str, comment: str
) -> ConfigSchema:
    """Write the next schema version and its history entry in one transaction.

    Raises:
        ValidationError: the schema is too large.
        ConflictError: someone changed the schema at the same time.
    """
    body = json.dumps(dict(schema))
    if len(body.encode()) > MAX_SCHEMA_BYTES:
        raise ValidationError(
            f"the schema of {name} is over {MAX_SCHEMA_BYTES} bytes: split or simplify it"
        )
    kv = await store.get(schema_key(name))
    last = await _last_version(store, name)
    record = ConfigSchema(
        name=name,
        schema=schema,
        version=last + 1,
        author=author,
        comment=comment,
        published_at=time.time(),
    )
    guard = (
        Compare.mod_revision(schema_key(name), "==", kv.mod_revision)
        if kv is not None
        else Compare.absent(schema_key(name))
    )
    entry = schema_history_key(name, record.version)
    result = await store.txn(
        [guard, Compare.absent(entry)],
        [Put(schema_key(name), record.encode()), Put(entry, record.encode())],
        [Get(schema_key(name))],
    )
    if not result.succeeded:
        raise ConflictError(f"the schema of {name} changed while setting it: retry")
    return record


async def _last_version(store: Store, name: str) -> int:
    prefix = f"config-schema-history/{name}/"
    kvs, _ = await store.range(prefix)
    suffixes = (kv.key.removeprefix(prefix) for kv in kvs)
    return max((int(s) for s in suffixes if len(s) == 10 and s.isdigit()), default=0)


async def delete_schema(store: Store, name: str) -> bool:
    """Remove the schema of ``name`` (its history is kept); False when there was none."""
    return await store.delete(schema_key(check_config_name(name))) > 0


async def schema_history(store: Store, name: str) -> list[ConfigSchema]:
    """Every readable schema version of ``name``, oldest first (malformed ones reported)."""
    kvs, _ = await store.range(f"config-schema-history/{check_config_name(name)}/")
    out = []
    for kv in kvs:
        schema = decode("config", kv.key, kv.value, ConfigSchema.decode)
        if isinstance(schema, Rejected):
            report(schema)
        else:
            out.append(schema)
    return out


def require(schema: ConfigSchema | None, name: str) -> ConfigSchema:
    """``schema``, or NotFoundError naming how to set one."""
    if schema is None:
        raise NotFoundError(
            f"{name} has no schema: set one with 'keel config schema set {name} FILE'"
        )
    return schema
