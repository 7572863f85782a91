"""Help text in the usual form: ``Usage: keel store put [OPTIONS] KEY [VALUE]``.

The typer release keel uses writes required arguments as ``{key}`` and value
placeholders as ``<str>``; this module makes them ``KEY`` and ``TEXT`` (or the
parameter's own metavar, such as ``NAME``, ``FILE`` or ``SECONDS``), the form
of click, git and kubectl. It patches three display methods of typer's
parameter classes when :func:`install` is called, and leaves typer as it is
if a later release no longer has them (help then keeps typer's own form).
"""

from __future__ import annotations

from typing import Any

__all__ = ["install"]

_TYPES = {"str": "TEXT", "int": "INTEGER", "float": "FLOAT", "path": "PATH"}


def _name(param: Any) -> str:
    """An argument's metavar, else its name in capitals (``KEY``)."""
    return str(param.metavar or (param.name or "").upper())


def install() -> None:
    """Patch typer's help display (idempotent; a no-op on a typer without these methods)."""
    try:
        from typer import core
    except ImportError:  # pragma: no cover - typer is a dependency
        return
    parameter = getattr(core, "_TyperParameter", None)
    argument = getattr(core, "TyperArgument", None)
    if parameter is None or argument is None or getattr(parameter, "_keel_help", False):
        return
    original = getattr(parameter, "display_type", None)
    if original is None or not hasattr(argument, "_usage_display_name"):
        return

    def display_type(self: Any, ctx: Any) -> str:
        label = str(original(self, ctx))
        inner = label[1:-1] if label.startswith("<") and label.endswith(">") else label
        return _TYPES.get(inner, inner.upper())

    def usage_name(self: Any) -> str:
        name = _name(self) if self.required else f"[{_name(self)}]"
        return name + ("..." if self.nargs != 1 and not name.endswith("...") else "")

    def help_name(self: Any) -> str:
        return _name(self)

    parameter.display_type = display_type
    argument._usage_display_name = usage_name
    argument._rich_display_name = help_name
    argument.display_type_rich = lambda self, ctx: None
    parameter._keel_help = True
