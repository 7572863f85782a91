"""The schema half of :class:`~keel.config.ConfigCenter`: set, read, remove, check.

A mixin so the center's module stays about publishing; the record layout and
the checking live in :mod:`keel.config._schema`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from keel.config._formats import Format, check_format, guess_format
from keel.config._model import check_config_name
from keel.config._schema import (
    ConfigSchema,
    check_document,
    current_schema,
    delete_schema,
    put_schema,
    require,
    schema_history,
    schema_of,
)
from keel.store import Store

__all__ = ["SchemaMethods"]


class SchemaMethods:
    """Schema operations of the config center (mixed into :class:`ConfigCenter`)."""

    store: Store

    async def set_schema(
        self, name: str, schema: Mapping[str, Any] | type, *, author: str = "", comment: str = ""
    ) -> ConfigSchema:
        """Set the schema of ``name`` (a new schema version; earlier ones stay in history).

        Args:
            schema: a JSON Schema mapping, or a pydantic model / dataclass / type
                whose JSON Schema is taken.

        Raises:
            ValidationError: not a valid JSON Schema, or too large.
            ConflictError: the schema changed at the same time.
        """
        check_config_name(name)
        document = schema_of(schema)
        return await put_schema(self.store, name, document, author=author, comment=comment)

    async def schema(self, name: str) -> ConfigSchema | None:
        """The current schema of ``name``, or None.

        Raises:
            MalformedConfigError: the schema record cannot be read.
        """
        found, _ = await current_schema(self.store, check_config_name(name))
        return found

    async def schema_history(self, name: str) -> list[ConfigSchema]:
        """Every kept schema version of ``name``, oldest first."""
        return await schema_history(self.store, name)

    async def delete_schema(self, name: str) -> bool:
        """Remove the schema of ``name`` (history kept); False when it had none."""
        return await delete_schema(self.store, name)

    async def validate(self, name: str, content: str, *, format: Format | None = None) -> None:
        """Check ``content`` against the schema of ``name`` without writing anything.

        Raises:
            NotFoundError: ``name`` has no schema.
            ValidationError: the content does not parse.
            SchemaViolationError: it fails the schema (every path and message named).
        """
        schema = require(await self.schema(name), name)
        fmt = check_format(format) if format is not None else guess_format(name)
        check_document(schema, content, fmt)
