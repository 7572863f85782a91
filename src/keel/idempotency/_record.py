"""The idempotency record: what is stored per key, its strict decoder, and the fingerprint.

Stored as readable JSON (``idempotency/<namespace>/<key-hash>`` in the keel
store, or the same name in Redis)::

    {"v": 1, "state": "running", "fp": "<sha256>", "token": "<hex>"}
    {"v": 1, "state": "done", "fp": "...", "status": 201,
     "headers": [["content-type", "application/json"]], "body": "<base64>"}
    {"v": 1, "state": "too_large", "fp": "...", "status": 200}

Records are untrusted (another version, a person with etcdctl):
:func:`decode_record` checks every field and raises on anything else; callers
go through :func:`keel._records.decode`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from keel._records import load_json_object

__all__ = ["RUNNING", "Record", "decode_record", "encode_record", "fingerprint", "key_hash"]

RUNNING: Literal["running"] = "running"
DONE: Literal["done"] = "done"
TOO_LARGE: Literal["too_large"] = "too_large"
_STATES = (RUNNING, DONE, TOO_LARGE)
_MAX_HEADERS = 200


@dataclass(frozen=True, slots=True)
class Record:
    """One key's state: running (with the claimer's token), done (a response), or too large."""

    state: str
    fp: str
    token: str = ""
    status: int = 0
    headers: tuple[tuple[bytes, bytes], ...] = ()
    body: bytes = b""


def key_hash(key: str) -> str:
    """The stored name of a client's key (sha256: any header value makes a safe key)."""
    return hashlib.sha256(key.encode()).hexdigest()


def fingerprint(method: str, path: str, query: bytes, body: bytes, headers: list[bytes]) -> str:
    """sha256 over the method, path, query, selected header values and the body."""
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode(), query, *headers):
        digest.update(len(part).to_bytes(8, "big") + part)
    digest.update(body)
    return digest.hexdigest()


def encode_record(record: Record) -> bytes:
    """The JSON of ``record``."""
    doc: dict[str, Any] = {"v": 1, "state": record.state, "fp": record.fp}
    if record.state == RUNNING:
        doc["token"] = record.token
    else:
        doc["status"] = record.status
    if record.state == DONE:
        doc["headers"] = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in record.headers]
        doc["body"] = base64.b64encode(record.body).decode()
    return msgspec.json.encode(doc)


def _str(doc: dict[str, Any], name: str, max_len: int = 128) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or len(value) > max_len:
        raise ValueError(f"{name!r} must be a string of at most {max_len} characters")
    return value


def _headers(raw: object) -> tuple[tuple[bytes, bytes], ...]:
    if not isinstance(raw, list) or len(raw) > _MAX_HEADERS:
        raise ValueError(f"'headers' must be a list of at most {_MAX_HEADERS} pairs")
    pairs = []
    for pair in raw:
        if not (
            isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)
        ):
            raise ValueError("each header must be a [name, value] pair of strings")
        pairs.append((pair[0].encode("latin-1"), pair[1].encode("latin-1")))
    return tuple(pairs)


def decode_record(value: bytes) -> Record:
    """Decode a stored record strictly.

    Raises:
        ValueError: anything but a record this version writes.
    """
    doc = load_json_object(value, max_depth=4)
    if doc.get("v") != 1 or isinstance(doc.get("v"), bool):
        raise ValueError(f"unknown record version {doc.get('v')!r}")
    state = _str(doc, "state")
    if state not in _STATES:
        raise ValueError(f"unknown state {state!r}")
    fp = _str(doc, "fp")
    if state == RUNNING:
        return Record(RUNNING, fp, token=_str(doc, "token"))
    status = doc.get("status")
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
        raise ValueError(f"'status' must be an HTTP status, got {status!r}")
    if state == TOO_LARGE:
        return Record(TOO_LARGE, fp, status=status)
    body = doc.get("body")
    if not isinstance(body, str):
        raise ValueError("'body' must be a base64 string")
    try:
        raw = base64.b64decode(body, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"'body' is not base64 ({exc})") from exc
    return Record(DONE, fp, status=status, headers=_headers(doc.get("headers")), body=raw)
