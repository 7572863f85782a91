"""``-o table|wide|json|yaml``: the one way every read command prints what it read.

A command builds plain data (dicts, lists, strings, numbers: numbers stay
numbers) and a function that draws its table, then calls :func:`emit`:

- ``table`` (the default) and ``wide``: a rich table; ``wide`` shows values
  whole where ``table`` shortens them for a terminal. To a pipe or a file
  nothing is shortened, wrapped or coloured (see :data:`~keel.cli._common.console`).
- ``json``: one JSON document: an object for one thing, an array for a list.
- ``yaml``: the same data as YAML.

Watches print one JSON object per line (:func:`emit_event`). ``--json`` is
kept as an alias of ``-o json``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.console import RenderableType

from keel.cli._common import console, fail

__all__ = ["FORMATS", "JsonFlag", "OutputOption", "emit", "emit_event", "output_format"]

FORMATS = ("table", "wide", "json", "yaml")

OutputOption = Annotated[
    str,
    typer.Option(
        "--output", "-o", metavar="FORMAT", help="Output format: table, wide, json or yaml."
    ),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Same as -o json.")]


def output_format(output: str, as_json: bool = False) -> str:
    """The format asked for (``--json`` wins); an unknown one is bad input (exit 2)."""
    if as_json:
        return "json"
    fmt = output.strip().lower()
    if fmt not in FORMATS:
        fail(f"-o {output!r} is not an output format: use one of {', '.join(FORMATS)}")
    return fmt


def _yaml(data: Any, explicit_start: bool = False) -> str:
    import yaml  # only when asked for

    text: str = yaml.safe_dump(
        data, sort_keys=False, allow_unicode=False, explicit_start=explicit_start
    )
    return text


def emit(fmt: str, data: Any, table: Callable[[bool], RenderableType]) -> None:
    """Print ``data`` as ``fmt``: ``table(wide)`` draws the table for table and wide.

    ``data`` is a dict for one thing, a list for a listing; JSON escapes
    control characters, so what the store holds cannot reach the terminal raw.
    """
    if fmt == "json":
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    elif fmt == "yaml":
        sys.stdout.write(_yaml(data))
    else:
        console.print(table(fmt == "wide"))


def emit_event(fmt: str, record: dict[str, Any], line: str) -> None:
    """One change of a watch: a JSON object per line, a YAML document, or ``line`` as is."""
    if fmt == "json":
        sys.stdout.write(json.dumps(record) + "\n")
    elif fmt == "yaml":
        sys.stdout.write(_yaml(record, explicit_start=True))
    else:
        sys.stdout.write(line + "\n")
    sys.stdout.flush()
