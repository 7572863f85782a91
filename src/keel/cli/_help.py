"""Two adjustments of typer: help in the usual form, and no pydantic for plain text.

Help: the typer release keel uses writes required arguments as ``{key}`` and
value placeholders as ``<str>``; this module makes them ``KEY`` and ``TEXT``
(or the parameter's own metavar, such as ``NAME``, ``FILE`` or ``SECONDS``),
the form of click, git and kubectl (``Usage: keel store put [OPTIONS] KEY
[VALUE]``).

Start-up: that release checks every parameter's value with a pydantic
``TypeAdapter``, and importing pydantic costs about 0.1 s, a third of a
command's start. A ``str`` parameter needs no check (argv is text already)
and a ``bool`` one only reads a flag or an environment variable's
``1``/``0``/``true``/``false``, so those skip it; ints, floats, paths and
ranges still go through typer's own check.

:func:`install` patches typer's parameter classes, and leaves typer as it is
if a later release no longer has these methods.
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

    _plain_text_without_pydantic(parameter)
    parameter.display_type = display_type
    argument._usage_display_name = usage_name
    argument._rich_display_name = help_name
    argument.display_type_rich = lambda self, ctx: None
    parameter._keel_help = True


_TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})
_FALSE = frozenset({"0", "false", "f", "no", "n", "off", ""})


def _plain_text_without_pydantic(parameter: Any) -> None:
    """Make ``str`` and ``bool`` parameters skip the TypeAdapter (and the pydantic import)."""
    try:
        from typer._click.exceptions import BadParameter
        from typer._coercion import PassThroughRuntimeParam
    except ImportError:  # another typer release: keep its own coercion
        return
    original = getattr(parameter, "get_runtime_param", None)
    if original is None:
        return

    class _Flag(PassThroughRuntimeParam):
        """A bool: a flag's own True/False, or an environment variable's text."""

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
                return value.strip().lower() in _TRUE
            if isinstance(value, bool):
                return value
            raise BadParameter(f"{value!r} is not a boolean: use 1 or 0", ctx=ctx, param=param)

    def get_runtime_param(self: Any) -> Any:
        desc = self.type_descriptor
        if self._runtime_param is None and desc.file_annotation is None:
            if desc.annotation is str:
                self._runtime_param = PassThroughRuntimeParam(
                    annotation=str, parameter_info=desc.parameter_info
                )
            elif desc.annotation is bool:
                self._runtime_param = _Flag(annotation=bool, parameter_info=desc.parameter_info)
        return original(self)

    parameter.get_runtime_param = get_runtime_param
