"""Small helpers shared by the configs, jobs, coordination and sagas pages: form fields, 404."""

from __future__ import annotations

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from keel.console._pages import render
from keel.errors import ValidationError

__all__ = ["field", "not_found", "number", "text_block"]


def field(form: FormData, name: str) -> str:
    """The text of form field ``name`` ('' when absent or a file)."""
    value = form.get(name, "")
    return value if isinstance(value, str) else ""


def text_block(form: FormData, name: str) -> str:
    """A textarea's text with LF line ends (browsers send CRLF)."""
    return field(form, name).replace("\r\n", "\n")


def number(form: FormData, name: str) -> int:
    """Form field ``name`` as a whole number >= 0.

    Raises:
        ValidationError: it is not one.
    """
    text = field(form, name).strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise ValidationError(f"{name} {text[:20]!r} is not a whole number: reload the page")
    return int(text)


def not_found(request: Request, message: str) -> Response:
    """The 404 page naming what is missing."""
    return render(request, "error.html", status_code=404, title="Not found", message=message)
