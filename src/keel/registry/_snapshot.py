"""Discovery's snapshot files: the last list of each service, for a cold start with the store down.

``<snapshot_dir>/<service>.json`` holds ``{"revision", "instances", "failing",
"overrides"}`` (instances as registered, operators' overrides beside them).
The file is read back as untrusted as the store: every record in it goes
through the same decoder as a store record (a snapshot written by another
version, edited by hand or cut short by a crash must not stop discovery).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

import msgspec

from keel._records import load_json_object
from keel.registry._model import Instance, encode_instance, service_prefix
from keel.registry._overrides import Override, override_prefix
from keel.store import KeyValue

__all__ = ["read_snapshot", "write_snapshot"]

log = logging.getLogger("keel.registry.discovery")


def write_snapshot(
    path: Path,
    revision: int,
    instances: Iterable[Instance],
    failing: Iterable[str],
    overrides: Iterable[Override] = (),
) -> None:
    """Replace the snapshot at ``path`` atomically; log (never raise) if the disk refuses."""
    body = {
        "revision": revision,
        "instances": [json.loads(encode_instance(i)) for i in instances],
        "failing": sorted(failing),
        "overrides": {o.instance_id: o.to_record() for o in overrides},
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(body))
        os.replace(tmp, path)
    except OSError as exc:  # a full disk must not stop discovery
        log.warning("discovery snapshot %s not written: %s", path, exc)


def read_snapshot(
    path: Path, service: str
) -> tuple[list[KeyValue], list[str], list[KeyValue], int] | None:
    """The snapshot's instance records, failing ids, override records and revision.

    Instance and override records come back as store records, to be decoded.

    Returns:
        None when there is no snapshot or it is not a JSON object (logged).
    """
    if not path.exists():
        return None
    try:
        body = load_json_object(path.read_bytes())
    except (OSError, ValueError) as exc:
        log.warning("discovery snapshot %s unreadable: %s", path, exc)
        return None
    prefix = service_prefix(service)
    records = body.get("instances")
    kvs = [
        KeyValue(f"{prefix}{_claimed_id(r)}", msgspec.json.encode(r), 0, 0, 1)
        for r in (records if isinstance(records, list) else [])
    ]
    failing = body.get("failing")
    revision = body.get("revision")
    overrides = body.get("overrides")
    return (
        kvs,
        [i for i in failing if isinstance(i, str)] if isinstance(failing, list) else [],
        [
            KeyValue(f"{override_prefix(service)}{k}", msgspec.json.encode(r), 0, 0, 1)
            for k, r in (overrides.items() if isinstance(overrides, dict) else ())
        ],
        revision if isinstance(revision, int) and not isinstance(revision, bool) else 0,
    )


def _claimed_id(record: object) -> str:
    """The id a snapshot record claims (decoded and checked like any record)."""
    instance_id = record.get("id") if isinstance(record, dict) else None
    return instance_id if isinstance(instance_id, str) else "?"
