"""Config formats: parse and validate yaml, json, toml, properties and text documents.

Parsing happens on publish (a document that does not parse is refused with
the parser's line and column, and nothing is written) and on every load by a
live binding. YAML goes through the safe loader only, so a tag such as
``!!python/object`` is an error, never code run.

Every structured document is capped before it becomes Python objects a
binding would walk: at most :data:`MAX_DEPTH` levels of nesting and
:data:`MAX_NODES` values once YAML aliases are expanded. A YAML alias costs
nothing to store and everything to bind (nine levels of ten aliases each, the
"billion laughs", is a billion strings to a typed model), so YAML is composed
into its node graph first and measured with aliases followed, before anything
is constructed. Deep JSON and TOML would otherwise end in ``RecursionError``.
Java ``.properties`` has no
well-kept Python parser, so :func:`parse_properties` is written here (the
format is small: ``key=value``, ``key: value``, ``key value``, comments with
``#``/``!``, backslash continuations and escapes, ``\\u`` and four hex digits).
"""

from __future__ import annotations

import json
import tomllib
from typing import Any, Literal

import yaml

from keel._records import check_depth
from keel.config._measure import MAX_DEPTH, MAX_NODES, count_values, measure_yaml
from keel.errors import ValidationError

__all__ = [
    "FORMATS",
    "MAX_DEPTH",
    "MAX_NODES",
    "Format",
    "guess_format",
    "parse",
    "parse_properties",
]

Format = Literal["yaml", "json", "toml", "properties", "text"]
FORMATS: tuple[Format, ...] = ("yaml", "json", "toml", "properties", "text")
_EXTENSIONS: dict[str, Format] = {
    "yaml": "yaml",
    "yml": "yaml",
    "json": "json",
    "toml": "toml",
    "properties": "properties",
    "props": "properties",
    "txt": "text",
}
_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


def guess_format(name: str) -> Format:
    """The format named by a config's extension (``orders.yaml`` → ``yaml``); else ``text``."""
    _, dot, ext = name.rpartition(".")
    return _EXTENSIONS.get(ext.lower(), "text") if dot else "text"


def check_format(fmt: object) -> Format:
    """Return ``fmt`` if it is a known format, else raise ValidationError."""
    for known in FORMATS:
        if fmt == known:
            return known
    raise ValidationError(f"format {fmt!r} is not known: use one of {', '.join(FORMATS)}")


def parse(fmt: Format, content: str, *, name: str = "document") -> Any:
    """Parse ``content``; raise ValidationError naming the line and column on a syntax error.

    Raises:
        ValidationError: the document does not parse, nests deeper than
            :data:`MAX_DEPTH` or holds more than :data:`MAX_NODES` values
            (YAML aliases expanded); the message names the fix.
    """
    if fmt == "text":
        return content
    if fmt == "properties":
        return parse_properties(content, name=name)
    if fmt == "yaml":
        return _parse_yaml(content, name)
    try:
        document = json.loads(content) if fmt == "json" else tomllib.loads(content)
    except json.JSONDecodeError as exc:
        raise _error(name, fmt, exc.lineno, exc.colno, exc.msg) from exc
    except RecursionError as exc:
        raise _too_deep(name) from exc
    except ValueError as exc:  # TOMLDecodeError, and numbers past Python's digit limit
        raise ValidationError(f"{name} is not valid {fmt}: {exc}; fix the document") from exc
    try:
        check_depth(document, MAX_DEPTH)
    except ValueError as exc:
        raise _too_deep(name) from exc
    if count_values(document, MAX_NODES + 1) > MAX_NODES:
        raise _too_large(name)
    return document


def _error(name: str, fmt: str, line: int, column: int, message: str) -> ValidationError:
    return ValidationError(
        f"{name} is not valid {fmt}: line {line}, column {column}: {message}; "
        f"fix the document and publish again"
    )


def _too_deep(name: str) -> ValidationError:
    return ValidationError(
        f"{name} nests deeper than {MAX_DEPTH} levels: flatten the document "
        f"(configs are rarely more than a few levels deep)"
    )


def _too_large(name: str) -> ValidationError:
    return ValidationError(
        f"{name} would expand to more than {MAX_NODES} values (YAML aliases count each time "
        f"they are used): write the values out, or split the document"
    )


class _Loader(yaml.SafeLoader):
    """The safe loader, refusing to compose nodes deeper than MAX_DEPTH collections."""

    depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH + 1:  # + 1: the scalars inside the deepest collection
                raise _TooDeepError
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


class _TooDeepError(Exception):
    """Raised inside the composer at MAX_DEPTH + 1 levels."""


def _parse_yaml(content: str, name: str) -> Any:
    loader = _Loader(content)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        found = measure_yaml(node, max_depth=MAX_DEPTH, max_nodes=MAX_NODES)
        if found == "deep":
            raise _too_deep(name)
        if found == "large":
            raise _too_large(name)
        if found == "cycle":
            raise ValidationError(
                f"{name} has an alias that refers to itself (a node inside its own anchor): "
                f"write the value out"
            )
        return loader.construct_document(node)
    except _TooDeepError as exc:
        raise _too_deep(name) from exc
    except ValidationError:
        raise
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)
        problem = exc.problem or str(exc)
        if "could not determine a constructor" in str(exc):
            problem = f"{problem} (only plain YAML is accepted: no language-specific tags)"
        raise _error(name, "yaml", line, column, problem) from exc
    except (yaml.YAMLError, ValueError) as exc:
        raise ValidationError(f"{name} is not valid yaml: {exc}; fix the document") from exc
    finally:
        loader.dispose()


def _logical_lines(content: str) -> list[tuple[int, str]]:
    """Join backslash-continued lines; drop comments and blanks; keep line numbers."""
    out: list[tuple[int, str]] = []
    pending: str | None = None
    start = 0
    for number, raw in enumerate(content.splitlines(), 1):
        line = raw.lstrip() if pending is not None else raw.strip()
        if pending is None:
            if not line or line[0] in "#!":
                continue
            start = number
        text = (pending or "") + line
        trailing = len(text) - len(text.rstrip("\\"))
        if trailing % 2 == 1:
            pending = text[:-1]
            continue
        pending = None
        out.append((start, text))
    if pending is not None:
        out.append((start, pending))
    return out


def _unescape(text: str, name: str, line: int) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch != "\\" or i + 1 == len(text):
            out.append(ch)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "u":
            digits = text[i + 2 : i + 6]
            if len(digits) != 4 or any(c not in "0123456789abcdefABCDEF" for c in digits):
                raise _error(
                    name, "properties", line, i + 1, "bad \\u escape: write \\u and four hex digits"
                )
            out.append(chr(int(digits, 16)))
            i += 6
            continue
        out.append(_ESCAPES.get(nxt, nxt))
        i += 2
    return "".join(out)


def _split_pair(text: str) -> tuple[str, str]:
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch in "=: \t\f":
            key, rest = text[:i], text[i:].lstrip(" \t\f")
            if (ch in " \t\f" and rest[:1] in ("=", ":")) or ch in "=:":
                rest = rest[1:].lstrip(" \t\f")
            return key, rest
        i += 1
    return text, ""


def parse_properties(content: str, *, name: str = "document") -> dict[str, str]:
    """Parse Java ``.properties`` text into a flat ``dict`` (later keys win)."""
    result: dict[str, str] = {}
    for line, text in _logical_lines(content):
        key, value = _split_pair(text)
        key = _unescape(key, name, line)
        if not key:
            raise _error(name, "properties", line, 1, "a line has a value but no key")
        result[key] = _unescape(value, name, line)
    return result
