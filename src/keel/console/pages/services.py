"""Services: instances with address, zone, version, weight, health, overrides; operator actions.

The actions write operator overrides (:class:`keel.registry.Overrides`,
``overrides/<service>/<instance-id>``), which every keel client honours:
set a weight, disable/enable, drain/undrain, clear. Each one is audited with
the override before and after.
"""

from __future__ import annotations

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keel.console._pages import Done, Nav, action, console, current_user, render
from keel.console._users import Role
from keel.console.pages._services_data import load_services
from keel.errors import ValidationError
from keel.registry._overrides import Overrides

__all__ = ["NAV", "ROUTES"]

NAV = Nav("Services", "/services")

_OPS = {
    "disable": {"disabled": True},
    "enable": {"disabled": False},
    "drain": {"draining": True},
    "undrain": {"draining": False},
}


async def services_page(request: Request) -> Response:
    """GET /services[?service=NAME]: every instance, live."""
    wanted = request.query_params.get("service", "").strip() or None
    try:
        view = await load_services(console(request).store, wanted)
    except ValidationError as exc:
        return render(request, "error.html", status_code=400, title="Bad service", message=str(exc))
    return render(request, "services.html", view=view, wanted=wanted or "")


@action(Role.OPERATOR, "instance.override")
async def override_instance(request: Request, form: FormData) -> Done:
    """POST /services/{service}/{id}/override: op weight, [un]drain, disable, enable, clear."""
    service = request.path_params["service"]
    instance_id = request.path_params["instance_id"]
    op = str(form.get("op", ""))
    note = str(form.get("note", ""))[:500]
    overrides = Overrides(console(request).store)
    by = current_user(request).name
    if op == "clear":
        before = await overrides.clear(service, instance_id)
        after = None
    elif op == "weight":
        before, after = await overrides.set(
            service, instance_id, weight=_weight(form.get("weight")), by=by, note=note
        )
    elif op in _OPS:
        before, after = await overrides.set(service, instance_id, **_OPS[op], by=by, note=note)
    else:
        raise ValidationError(
            f"unknown action {op[:40]!r}: use weight, disable, enable, drain, undrain or clear"
        )
    return Done(
        target=f"instance/{service}/{instance_id}",
        before=None if before is None else before.to_record(),
        after=None if after is None else after.to_record(),
        detail={"op": op},
        message=f"{service}/{instance_id}: {op} done",
        data={"override": None if after is None else after.to_record()},
    )


def _weight(raw: object) -> int:
    try:
        weight = int(str(raw))
    except ValueError:
        raise ValidationError("weight: give a whole number from 1 to 1000") from None
    return weight


ROUTES = [
    Route("/services", services_page),
    Route("/services/{service}/{instance_id}/override", override_instance, methods=["POST"]),
]
