"""Users (admins only): add users, change roles, reset passwords, remove users.

Every change is audited with the role before and after (never a hash). A
password change or removal ends the user's sessions at once. The last admin
cannot be demoted or removed.
"""

from __future__ import annotations

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keel.console._pages import Done, Nav, action, console, current_user, render, require
from keel.console._users import Role
from keel.errors import ValidationError

__all__ = ["NAV", "ROUTES"]

NAV = Nav("Users", "/users", role=Role.ADMIN)
ROLES = [role.label for role in Role]


@require(Role.ADMIN)
async def users_page(request: Request) -> Response:
    """GET /users: every user and the forms to manage them."""
    users = await console(request).users.list()
    return render(request, "users.html", users=users, roles=ROLES, me=current_user(request).name)


def _password(form: FormData) -> str:
    password = str(form.get("password", ""))
    if password != str(form.get("confirm", "")):
        raise ValidationError("the two passwords differ: type the same password twice")
    return password


@action(Role.ADMIN, "user.add")
async def add_user(request: Request, form: FormData) -> Done:
    """POST /users/add: name, role, password, confirm."""
    name = str(form.get("name", "")).strip().lower()
    role = Role.parse(str(form.get("role", "")))
    user = await console(request).users.add(name, _password(form), role)
    return Done(
        target=f"user/{user.name}",
        after={"role": role.label},
        message=f"user {user.name} added ({role.label})",
        redirect="/users",
    )


@action(Role.ADMIN, "user.role")
async def set_role(request: Request, form: FormData) -> Done:
    """POST /users/{name}/role: role."""
    name = request.path_params["name"]
    before, after = await console(request).users.set_role(
        name, Role.parse(str(form.get("role", "")))
    )
    return Done(
        target=f"user/{name}",
        before={"role": before.role.label},
        after={"role": after.role.label},
        message=f"{name} is now {after.role.label}",
        redirect="/users",
    )


@action(Role.ADMIN, "user.passwd")
async def reset_password(request: Request, form: FormData) -> Done:
    """POST /users/{name}/passwd: password, confirm (ends the user's sessions)."""
    name = request.path_params["name"]
    app = console(request)
    await app.users.passwd(name, _password(form))
    ended = await app.sessions.end_all(name) if name != current_user(request).name else 0
    return Done(
        target=f"user/{name}",
        detail={"sessions_ended": ended},
        message=f"password of {name} changed",
        redirect="/users",
    )


@action(Role.ADMIN, "user.remove")
async def remove_user(request: Request, form: FormData) -> Done:
    """POST /users/{name}/remove (ends the user's sessions)."""
    name = request.path_params["name"]
    if name == current_user(request).name:
        raise ValidationError("you cannot remove yourself: another admin can")
    app = console(request)
    user = await app.users.remove(name)
    ended = await app.sessions.end_all(name)
    return Done(
        target=f"user/{name}",
        before={"role": user.role.label},
        detail={"sessions_ended": ended},
        message=f"user {name} removed",
        redirect="/users",
    )


ROUTES = [
    Route("/users", users_page),
    Route("/users/add", add_user, methods=["POST"]),
    Route("/users/{name}/role", set_role, methods=["POST"]),
    Route("/users/{name}/passwd", reset_password, methods=["POST"]),
    Route("/users/{name}/remove", remove_user, methods=["POST"]),
]
