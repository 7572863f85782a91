"""Store browser: keys by prefix and their values; admins may put and delete (with CAS).

Every write is a compare-and-swap on the ``mod_revision`` the admin saw, so
an edit never overwrites a change made meanwhile (the conflict says so), and
is audited with the version before and after. Secrets are never rendered and
the console's own records are read-only (see :mod:`._store_data`).
"""

from __future__ import annotations

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keel.console._pages import Done, Nav, action, console, render
from keel.console._users import Role
from keel.console.pages._store_data import (
    FORMATS,
    LIST_LIMIT,
    UNLISTED,
    check_writable,
    entry,
    redacted,
    render_value,
)
from keel.errors import ConflictError, ValidationError
from keel.store import Compare, Delete, Put

__all__ = ["NAV", "ROUTES"]

NAV = Nav("Store", "/store")


async def store_page(request: Request) -> Response:
    """GET /store?prefix=P: the first keys under ``P``."""
    prefix = request.query_params.get("prefix", "")
    store = console(request).store
    try:
        kvs, revision = await store.range(prefix, limit=LIST_LIMIT + 1)
    except ValidationError as exc:
        return render(request, "error.html", status_code=400, title="Bad prefix", message=str(exc))
    entries = [entry(kv) for kv in kvs[:LIST_LIMIT] if not kv.key.startswith(UNLISTED)]
    return render(
        request,
        "store.html",
        prefix=prefix,
        entries=entries,
        more=len(kvs) > LIST_LIMIT,
        revision=revision,
        limit=LIST_LIMIT,
        parents=_parents(prefix),
    )


async def key_page(request: Request) -> Response:
    """GET /store/key?key=K&as=json|yaml|text: one value."""
    key = request.query_params.get("key", "")
    fmt = request.query_params.get("as", "json")
    store = console(request).store
    try:
        kv = await store.get(key) if key else None
    except ValidationError as exc:
        return render(request, "error.html", status_code=400, title="Bad key", message=str(exc))
    shown, text = render_value(kv, fmt) if kv is not None else ("text", "")
    return render(
        request,
        "store_key.html",
        key=key,
        kv=kv,
        shown=shown,
        text=text,
        formats=FORMATS,
        hidden=redacted(key),
        editable=not key.startswith("console/"),
        parents=_parents(key),
        status_code=200 if kv is not None else 404,
    )


@action(Role.ADMIN, "store.put")
async def put_key(request: Request, form: FormData) -> Done:
    """POST /store/put: key, value, expected (mod_revision seen; 0 = must not exist)."""
    key = check_writable(str(form.get("key", "")))
    value = str(form.get("value", "")).replace("\r\n", "\n").encode()
    expected = _revision(form.get("expected"))
    store = console(request).store
    seen = await store.get(key) if expected else None
    lease = seen.lease if seen is not None and seen.mod_revision == expected else None
    put = Put(key, value, lease=lease or None)  # an edit keeps the key on its owner's lease
    result = await store.txn([Compare.mod_revision(key, "==", expected)], [put], [])
    if not result.succeeded:
        await _conflict(request, key, expected)
    return Done(
        target=f"store/{key}",
        before={"mod_revision": expected} if expected else None,
        after={"mod_revision": result.revision, "size": len(value)},
        message=f"{key} saved at revision {result.revision}",
        redirect=f"/store/key?key={_q(key)}",
    )


@action(Role.ADMIN, "store.delete")
async def delete_key(request: Request, form: FormData) -> Done:
    """POST /store/delete: key, expected mod_revision."""
    key = check_writable(str(form.get("key", "")))
    expected = _revision(form.get("expected"))
    store = console(request).store
    result = await store.txn([Compare.mod_revision(key, "==", expected)], [Delete(key)], [])
    if not result.succeeded:
        await _conflict(request, key, expected)
    parent = key.rpartition("/")[0]
    return Done(
        target=f"store/{key}",
        before={"mod_revision": expected},
        after=None,
        message=f"{key} deleted",
        redirect=f"/store?prefix={_q(parent + '/' if parent else '')}",
    )


async def _conflict(request: Request, key: str, expected: int) -> None:
    kv = await console(request).store.get(key)
    now = "deleted" if kv is None else f"at revision {kv.mod_revision}"
    raise ConflictError(
        f"{key} changed since you loaded it (you saw revision {expected}, it is now {now}): "
        "reload and apply your change again"
    )


def _revision(raw: object) -> int:
    try:
        value = int(str(raw))
    except ValueError:
        raise ValidationError("expected: the revision you loaded (0 for a new key)") from None
    if value < 0:
        raise ValidationError("expected must be >= 0")
    return value


def _q(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


def _parents(key: str) -> list[tuple[str, str]]:
    """Breadcrumbs: (label, prefix) for each folder above ``key``."""
    crumbs = [("/", "")]
    parts = key.split("/")[:-1]
    for i, part in enumerate(parts):
        crumbs.append((part, "/".join(parts[: i + 1]) + "/"))
    return crumbs


ROUTES = [
    Route("/store", store_page),
    Route("/store/key", key_page),
    Route("/store/put", put_key, methods=["POST"]),
    Route("/store/delete", delete_key, methods=["POST"]),
]
