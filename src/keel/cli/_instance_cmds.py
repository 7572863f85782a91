"""``keel instance weight|disable|enable|drain|undrain|clear``: operator overrides from a shell.

Each command changes the instance's override at ``overrides/<service>/<id>``
(see :class:`keel.registry.Overrides`), which every keel client honours, and
records the change in the console's audit log (actor ``--by``, default the
login name; ``via: cli`` in the entry's detail). The instance must be
registered unless ``--force`` (an override may wait for an instance that is
not up yet); ``clear`` needs an override to remove. Exit codes: 0 done, 1 no
such instance (or override), 2 bad input (nothing changed).
"""

from __future__ import annotations

import getpass
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.text import Text

from keel.cli._common import EXIT_NOT_FOUND, err_console, fail, run, with_store
from keel.cli._output import JsonFlag, OutputOption, emit, output_format
from keel.errors import KeelError, ValidationError

if TYPE_CHECKING:
    from keel.registry import Override
    from keel.store import Store

__all__ = ["app"]

app = typer.Typer(
    help="Operator overrides of one instance: weight, disable/enable, drain/undrain, clear.\n\n"
    "Overrides live apart from the instance's own record, so they survive its "
    "re-registration; 'keel instances SERVICE' shows them.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

Service = Annotated[str, typer.Argument(metavar="SERVICE")]
InstanceId = Annotated[str, typer.Argument(metavar="ID", help="The instance id.")]
Note = Annotated[str, typer.Option("--note", "-m", help="Why (kept with the override).")]
By = Annotated[
    str | None, typer.Option("--by", metavar="NAME", help="Who (default: your login name).")
]
Force = Annotated[
    bool, typer.Option("--force", help="Set it even if the instance is not registered.")
]


def _who(by: str | None) -> str:
    if by:
        return by
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (a container without a passwd entry)
        return "cli"


def _change(
    op: str,
    service: str,
    instance_id: str,
    fields: dict[str, Any],
    *,
    note: str,
    by: str | None,
    force: bool,
    fmt: str,
) -> None:
    """Check the input, apply one change, audit it, print before and after."""
    from keel.registry._overrides import Override

    who = _who(by)
    try:  # every bad input before the store is opened: nothing is changed
        Override(service=service, instance_id=instance_id, by=who, note=note, **fields)
    except ValidationError as exc:
        fail(str(exc))

    @with_store
    async def go(store: Store) -> tuple[Override | None, Override | None]:
        from keel.registry import Overrides
        from keel.registry._model import instance_key

        overrides = Overrides(store)
        if op == "clear":
            before, after = await overrides.clear(service, instance_id), None
            if before is None:
                return None, None
        else:
            if not force and await store.get(instance_key(service, instance_id)) is None:
                _unknown(service, instance_id)
            before, after = await overrides.set(service, instance_id, **fields, by=who, note=note)
        await _audit(store, who, op, service, instance_id, before, after)
        return before, after

    before, after = run(go())
    if op == "clear" and before is None:
        fail(
            f"no override of {service}/{instance_id}: list them with 'keel instances {service}'",
            EXIT_NOT_FOUND,
        )
    record = {
        "service": service,
        "id": instance_id,
        "before": None if before is None else before.to_record(),
        "after": None if after is None else after.to_record(),
    }
    line = (
        f"{service}/{instance_id}: {_describe(after)} (was {_describe(before)})"
        if op != "clear"
        else f"{service}/{instance_id}: override cleared (was {_describe(before)})"
    )
    emit(fmt, record, lambda wide: Text(line))


def _describe(override: Override | None) -> str:
    return "no override" if override is None else override.describe()


def _unknown(service: str, instance_id: str) -> None:
    fail(
        f"no instance {service}/{instance_id} is registered: check 'keel instances {service}', "
        f"or add --force to set the override for when it registers",
        EXIT_NOT_FOUND,
    )


async def _audit(
    store: Store,
    who: str,
    op: str,
    service: str,
    instance_id: str,
    before: Override | None,
    after: Override | None,
) -> None:
    """Record the change in the console's audit log; a failure is a warning, not an error."""
    from keel.console._audit import Audit

    try:
        await Audit(store).record(
            who,
            "instance.override",
            f"instance/{service}/{instance_id}",
            before=None if before is None else before.to_record(),
            after=None if after is None else after.to_record(),
            detail={"op": op, "via": "cli"},
        )
    except KeelError as exc:
        err_console.print(
            f"keel: warning: the change is made but not in the audit log ({exc})",
            markup=False,
            highlight=False,
        )


@app.command("weight")
def weight_cmd(
    service: Service,
    instance_id: InstanceId,
    weight: Annotated[int, typer.Argument(metavar="N", help="The new weight, 1-1000.")],
    note: Note = "",
    by: By = None,
    force: Force = False,
    output: OutputOption = "table",
    as_json: JsonFlag = False,
) -> None:
    """Give instance ID of SERVICE the weight N in place of its registered one."""
    fmt = output_format(output, as_json)
    _change(
        "weight", service, instance_id, {"weight": weight}, note=note, by=by, force=force, fmt=fmt
    )


def _flag_command(name: str, field: str, value: bool, doc: str) -> None:
    def command(
        service: Service,
        instance_id: InstanceId,
        note: Note = "",
        by: By = None,
        force: Force = False,
        output: OutputOption = "table",
        as_json: JsonFlag = False,
    ) -> None:
        fmt = output_format(output, as_json)
        _change(name, service, instance_id, {field: value}, note=note, by=by, force=force, fmt=fmt)

    command.__doc__ = doc
    app.command(name)(command)


_flag_command(
    "disable", "disabled", True, "Take instance ID of SERVICE out of every balanced list."
)
_flag_command(
    "enable", "disabled", False, "Undo 'disable': instance ID of SERVICE gets traffic again."
)
_flag_command("drain", "draining", True, "Drain instance ID of SERVICE: no new traffic (DRAINING).")
_flag_command("undrain", "draining", False, "Undo 'drain': instance ID of SERVICE is UP again.")


@app.command("clear")
def clear_cmd(
    service: Service,
    instance_id: InstanceId,
    by: By = None,
    output: OutputOption = "table",
    as_json: JsonFlag = False,
) -> None:
    """Remove every override of instance ID of SERVICE (exit 1 when it has none)."""
    fmt = output_format(output, as_json)
    _change("clear", service, instance_id, {}, note="", by=by, force=True, fmt=fmt)
