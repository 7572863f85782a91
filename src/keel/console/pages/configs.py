"""The configs page: list, one config's history and side-by-side diff, publish, rollback, gray.

Every change goes through :class:`keel.config.ConfigCenter`, so the console
gets the same guarantees as the CLI: a publish is a compare-and-swap on the
version the operator was looking at (a conflict names who published which
version meanwhile), a rollback publishes an old version as a new one, and a
gray release is promoted or aborted in one transaction.
"""

from __future__ import annotations

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keel.config import ConfigCenter, MalformedConfigError
from keel.console._pages import Done, Nav, action, console, current_user, render
from keel.console._users import Role
from keel.console.pages._configs_data import (
    config_detail,
    config_list,
    conflict_message,
    gray_rule_from_form,
)
from keel.console.pages._forms import field, not_found, number, text_block
from keel.errors import ConflictError, NotFoundError, ValidationError

__all__ = ["NAV", "ROUTES"]

NAV = Nav("Configs", "/configs")


def _center(request: Request) -> ConfigCenter:
    return ConfigCenter(console(request).store)


def _version(text: str | None) -> int | None:
    return int(text) if text and text.isascii() and text.isdigit() and len(text) < 19 else None


async def configs_page(request: Request) -> Response:
    """GET /configs: every config with its version, format, publish time and gray flag."""
    return render(request, "configs.html", **await config_list(_center(request)))


async def config_page(request: Request) -> Response:
    """GET /configs/{name}: current version, history, diff ``?a=&b=``, gray and clients."""
    name = request.path_params["name"]
    query = request.query_params
    try:
        ctx = await config_detail(
            _center(request), name, a=_version(query.get("a")), b=_version(query.get("b"))
        )
    except (NotFoundError, ValidationError) as exc:
        return not_found(request, str(exc))
    return render(request, "config.html", **ctx)


@action(Role.OPERATOR, "config.publish")
async def publish(request: Request, form: FormData) -> Done:
    """POST /configs/{name}/publish: publish ``content`` if the config is still at
    ``expected_version`` (0 creates it)."""
    name = request.path_params.get("name") or field(form, "name").strip()
    center = _center(request)
    expected = number(form, "expected_version")
    try:
        doc = await center.publish(
            name,
            text_block(form, "content"),
            author=current_user(request).name,
            comment=field(form, "comment").strip(),
            expected_version=expected,
        )
    except MalformedConfigError:
        raise
    except ConflictError as exc:
        raise ConflictError(await conflict_message(center, name, expected)) from exc
    return Done(
        target=f"config/{name}",
        before=expected or None,
        after=doc.version,
        detail={"comment": doc.comment, "md5": doc.md5},
        message=f"published {name} version {doc.version}",
        redirect=f"/configs/{name}",
        data={"version": doc.version},
    )


@action(Role.OPERATOR, "config.rollback")
async def rollback(request: Request, form: FormData) -> Done:
    """POST /configs/{name}/rollback: publish old ``version``'s content as a new version."""
    name = request.path_params["name"]
    center = _center(request)
    to = number(form, "version")
    current = await center.get(name)
    doc = await center.rollback(name, to, author=current_user(request).name)
    return Done(
        target=f"config/{name}",
        before=current.version if current else None,
        after=doc.version,
        detail={"rollback_to": to},
        message=f"rolled {name} back to version {to}'s content, as version {doc.version}",
        redirect=f"/configs/{name}",
        data={"version": doc.version},
    )


@action(Role.OPERATOR, "config.gray")
async def gray(request: Request, form: FormData) -> Done:
    """POST /configs/{name}/gray: start (or replace) a gray release for the rule's clients."""
    name = request.path_params["name"]
    rule = gray_rule_from_form(field(form, "ids"), field(form, "labels"), field(form, "percent"))
    release = await _center(request).publish_gray(
        name,
        text_block(form, "content"),
        rule,
        author=current_user(request).name,
        comment=field(form, "comment").strip(),
        replace=field(form, "replace") == "1",
    )
    return Done(
        target=f"config/{name}",
        before=release.base_version,
        after="gray",
        detail={"rule": rule.to_json(), "md5": release.md5},
        message=f"gray release of {name} started",
        redirect=f"/configs/{name}",
    )


@action(Role.OPERATOR, "config.promote")
async def promote(request: Request, form: FormData) -> Done:
    """POST /configs/{name}/promote: the gray content becomes the next main version."""
    name = request.path_params["name"]
    center = _center(request)
    current = await center.get(name)
    doc = await center.promote(name, author=current_user(request).name)
    return Done(
        target=f"config/{name}",
        before=current.version if current else None,
        after=doc.version,
        message=f"promoted the gray release of {name} to version {doc.version}",
        redirect=f"/configs/{name}",
        data={"version": doc.version},
    )


@action(Role.OPERATOR, "config.abort")
async def abort(request: Request, form: FormData) -> Done:
    """POST /configs/{name}/abort: end the gray release; gray clients return to the main."""
    name = request.path_params["name"]
    ended = await _center(request).abort_gray(name)
    return Done(
        target=f"config/{name}",
        before="gray" if ended else None,
        after=None,
        message=f"gray release of {name} aborted" if ended else f"{name} had no gray release",
        redirect=f"/configs/{name}",
    )


ROUTES = [
    Route("/configs", configs_page),
    Route("/configs/new", publish, methods=["POST"]),
    Route("/configs/{name}", config_page),
    Route("/configs/{name}/publish", publish, methods=["POST"]),
    Route("/configs/{name}/rollback", rollback, methods=["POST"]),
    Route("/configs/{name}/gray", gray, methods=["POST"]),
    Route("/configs/{name}/promote", promote, methods=["POST"]),
    Route("/configs/{name}/abort", abort, methods=["POST"]),
]
