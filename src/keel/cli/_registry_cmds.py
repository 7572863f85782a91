"""Registry commands: services, instances, register, deregister, health-checker."""

from __future__ import annotations

import signal
from collections import Counter
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from keel.cli._common import EXIT_NOT_FOUND, cell, console, err_console, fail, run, with_store
from keel.cli._output import JsonFlag, OutputOption, emit, output_format
from keel.errors import ValidationError

if TYPE_CHECKING:
    from keel._records import Rejected
    from keel.registry import HealthCheck, Instance, Override
    from keel.store import Store

__all__ = ["register"]


@dataclass(frozen=True, slots=True)
class _Listing:
    instances: list[Instance]  # as registered, operators' overrides applied
    failing: set[str]  # "<service>/<id>"
    rejected: list[Rejected]
    overrides: dict[str, Override]  # "<service>/<id>" → override (instance or not)

    def warn_skipped(self) -> None:
        """One line on stderr when malformed records were left out."""
        if self.rejected:
            first = " ".join(str(self.rejected[0]).split())
            n = len(self.rejected)
            err_console.print(
                f"keel: warning: skipped {n} malformed record{'s' if n > 1 else ''} "
                f"(fix or delete them; first: {first})",
                markup=False,
                highlight=False,
            )


async def _read_all(store: Store, service: str | None = None) -> _Listing:
    """Every instance record, health mark and override (of ``service``), decoded at the boundary."""
    from keel._records import Rejected, decode
    from keel.registry import decode_health_mark, decode_instance, decode_override
    from keel.registry._decode import HEALTH_AREA, REGISTRY_AREA
    from keel.registry._model import HEALTH, SERVICES
    from keel.registry._overrides import OVERRIDE_AREA, OVERRIDES, apply_override
    from keel.store import Range

    tail = "" if service is None else f"{service}/"
    prefixes = (SERVICES, HEALTH, OVERRIDES)
    result = await store.txn([], [Range(f"{p}{tail}") for p in prefixes])
    kvs, health, overrides = result.results
    assert isinstance(kvs, list) and isinstance(health, list) and isinstance(overrides, list)
    listing = _Listing([], set(), [], {})
    for kv in overrides:
        decoder = partial(decode_override, kv.key, revision=kv.mod_revision)
        override = decode(OVERRIDE_AREA, kv.key, kv.value, decoder)
        if isinstance(override, Rejected):
            listing.rejected.append(override)
        else:
            listing.overrides[f"{override.service}/{override.instance_id}"] = override
    for kv in kvs:
        instance = decode(REGISTRY_AREA, kv.key, kv.value, partial(decode_instance, kv.key))
        if isinstance(instance, Rejected):
            listing.rejected.append(instance)
        else:
            key = f"{instance.service}/{instance.id}"
            listing.instances.append(apply_override(instance, listing.overrides.get(key)))
    for kv in health:
        mark = decode(HEALTH_AREA, kv.key, kv.value, partial(decode_health_mark, kv.key))
        if isinstance(mark, Rejected):
            listing.rejected.append(mark)
        elif mark.failing:
            listing.failing.add(f"{mark.service}/{mark.instance_id}")
    return listing


def services_cmd(output: OutputOption = "table", as_json: JsonFlag = False) -> None:
    """List services with their instances up, draining, disabled and failing."""
    fmt = output_format(output, as_json)

    @with_store(readonly=True)
    async def go(store: Store) -> _Listing:
        return await _read_all(store)

    listing = run(go())
    listing.warn_skipped()
    counts: dict[str, Counter[str]] = {}
    for i in listing.instances:
        c = counts.setdefault(i.service, Counter())
        c[_state(i, f"{i.service}/{i.id}" in listing.failing)] += 1
    columns = ("up", "draining", "disabled", "failing")
    rows = [
        {"service": name, **{column: c[column] for column in columns}}
        for name, c in sorted(counts.items())
    ]

    def table(wide: bool) -> Table:
        n = len(rows)
        t = Table(title=f"{n} service{'' if n == 1 else 's'}", title_justify="left")
        t.add_column("service")
        for column in columns:
            t.add_column(column, justify="right")
        for r in rows:
            t.add_row(cell(str(r["service"])), *(str(r[column]) for column in columns))
        return t

    emit(fmt, rows, table)


def _state(i: Instance, failing: bool) -> str:
    """``disabled``, ``draining``, ``failing`` or ``up`` (the first that applies)."""
    if i.override is not None and i.override.disabled:
        return "disabled"
    if i.status == "DRAINING":
        return "draining"
    return "failing" if failing else "up"


def _instance_record(i: Instance, failing: bool) -> dict[str, Any]:
    return {
        "service": i.service,
        "id": i.id,
        "url": i.url,
        "zone": i.zone,
        "version": i.version,
        "weight": i.weight,
        "status": i.status,
        "disabled": i.override is not None and i.override.disabled,
        "failing": failing,
        "check": None if i.check is None else i.check.type,
        "tags": list(i.tags),
        "metadata": dict(i.metadata),
        "override": None if i.override is None else i.override.to_record(),
    }


def _override_cell(i: Instance, wide: bool) -> str:
    o = i.override
    if o is None:
        return ""
    text = o.describe() + (f" by {o.by}" if o.by else "")
    return text + (f" ({o.note})" if wide and o.note else "")


def instances_cmd(
    service: Annotated[str, typer.Argument(metavar="SERVICE")],
    output: OutputOption = "table",
    as_json: JsonFlag = False,
) -> None:
    """List the instances of SERVICE with address, zone, weight, status, health and overrides.

    Health: "lease" means the instance is listed while its process keeps its
    session lease alive; "checked" means a health checker also probes it;
    "failing" means the probe fails. Override: what an operator set with 'keel
    instance' (the weight shown is then the override's; DISABLED and DRAINING
    instances get no new traffic). Exit code 1 when SERVICE has no instance.
    """
    from keel.registry._model import check_service_name

    fmt = output_format(output, as_json)
    try:
        check_service_name(service)
    except ValidationError as exc:
        fail(str(exc))

    @with_store(readonly=True)
    async def go(store: Store) -> _Listing:
        return await _read_all(store, service)

    listing = run(go())
    listing.warn_skipped()
    failing = listing.failing
    mine = sorted(listing.instances, key=lambda i: i.id)
    if not mine:
        fail(
            f"no instances of service {service!r}: list services with 'keel services'",
            EXIT_NOT_FOUND,
        )

    def table(wide: bool) -> Table:
        t = Table(
            title=f"{service}: {len(mine)} instance{'' if len(mine) == 1 else 's'}",
            title_justify="left",
        )
        columns = ("id", "url", "zone", "version", "weight", "status", "health", "override")
        for column in columns:
            t.add_column(column)
        for i in mine:
            bad = f"{service}/{i.id}" in failing
            health = "failing" if bad else ("checked" if i.check else "lease")
            status = "DISABLED" if _state(i, bad) == "disabled" else i.status
            row = (i.id, i.url, i.zone, i.version, str(i.weight), status, health)
            t.add_row(*map(cell, (*row, _override_cell(i, wide))))
        return t

    emit(fmt, [_instance_record(i, f"{service}/{i.id}" in failing) for i in mine], table)
    waiting = sorted(set(listing.overrides) - {f"{service}/{i.id}" for i in mine})
    if waiting and fmt in ("table", "wide"):
        names = ", ".join(f"{k} ({listing.overrides[k].describe()})" for k in waiting)
        console.print(cell(f"overrides waiting for an instance to register: {names}"))


def _parse_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        fail(f"address {text!r}: write host:port, e.g. 127.0.0.1:8080")
    return host.strip("[]"), int(port)


def _parse_meta(items: list[str]) -> dict[str, str]:
    meta: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"--meta {item!r}: write key=value")
        meta[key] = value
    return meta


def _parse_check(text: str | None) -> HealthCheck | None:
    if not text:
        return None
    kind, _, path = text.partition(":")
    from keel.registry import HealthCheck

    if kind == "tcp":
        return HealthCheck(type="tcp")
    if kind == "http":
        return HealthCheck(type="http", path=path or "/healthz")
    fail(f"--check {text!r}: use http:/path or tcp")


def register_cmd(
    service: str,
    address: Annotated[str, typer.Argument(metavar="HOST:PORT", help="Where clients connect.")],
    ttl: Annotated[
        int, typer.Option(help="Session TTL: how long the entry outlives a crash.")
    ] = 10,
    instance_id: Annotated[str, typer.Option("--id", help="Instance id (default host:port).")] = "",
    zone: Annotated[str, typer.Option(help="Availability zone.")] = "",
    weight: Annotated[int, typer.Option(help="Relative traffic share, 1-1000.")] = 100,
    version: Annotated[str, typer.Option(help="Service version.")] = "",
    tag: Annotated[list[str] | None, typer.Option("--tag", help="A tag (repeatable).")] = None,
    meta: Annotated[
        list[str] | None, typer.Option("--meta", help="key=value (repeatable).")
    ] = None,
    check: Annotated[str | None, typer.Option(help="Health check: http:/healthz or tcp.")] = None,
) -> None:
    """Register an instance and hold the registration until Ctrl-C (for non-Python services)."""
    host, port = _parse_address(address)
    from keel.registry import Instance

    try:
        instance = Instance(
            service=service,
            address=host,
            port=port,
            id=instance_id,
            zone=zone,
            weight=weight,
            version=version,
            tags=tuple(tag or ()),
            metadata=_parse_meta(meta or []),
            check=_parse_check(check),
        )
    except ValidationError as exc:
        fail(str(exc))

    @with_store
    async def go(store: Store) -> None:
        import asyncio

        from keel.registry import Registry

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        async with Registry(store, ttl_s=ttl) as registry, registry.register(instance) as reg:
            console.print(
                f"registered {reg.instance.service}/{reg.instance.id} "
                f"({reg.instance.url}); Ctrl-C to deregister"
            )
            registry.on_event(lambda event: console.print(f"event: {type(event).__name__}"))
            await stop.wait()

    run(go())


def deregister_cmd(service: str, instance_id: str) -> None:
    """Remove an instance record now (its owner, if alive, is not told)."""

    @with_store
    async def go(store: Store) -> int:
        from keel.registry._model import instance_key

        return await store.delete(instance_key(service, instance_id))

    if run(go()) == 0:
        fail(f"no instance {service}/{instance_id}: list them with 'keel instances {service}'", 1)
    console.print(f"deregistered {service}/{instance_id}")


def health_checker_cmd(
    ttl: Annotated[int, typer.Option(help="Session TTL of the checker.")] = 10,
    node: Annotated[str | None, typer.Option(help="Name shown as the checker leader.")] = None,
    allow_other_targets: Annotated[
        bool,
        typer.Option(
            "--allow-other-targets",
            help="Also probe checks whose path is a URL on another host or port.",
        ),
    ] = False,
) -> None:
    """Run a health checker (one of many: they elect a leader that probes)."""

    @with_store
    async def go(store: Store) -> None:
        from keel.coord import Session
        from keel.registry import HealthChecker

        async with Session(store, ttl_s=ttl) as session:
            checker = HealthChecker(session, node=node, allow_other_targets=allow_other_targets)
            console.print(f"health checker {checker.node} campaigning; Ctrl-C to stop")
            await checker.run()

    run(go())


def register(app: typer.Typer) -> None:
    """Add the registry commands to the root app."""
    app.command("services")(services_cmd)
    app.command("instances")(instances_cmd)
    app.command("register")(register_cmd)
    app.command("deregister")(deregister_cmd)
    app.command("health-checker")(health_checker_cmd)
