"""What the configs pages show, as plain data: the list, one config's history, diff and gray.

Pure functions of what :class:`keel.config.ConfigCenter` returns (plus the
client reports under ``config-clients/``), so the pages are templates over
these and the logic is tested without a browser. The side-by-side diff is
built here from :class:`difflib.SequenceMatcher` opcodes: the center's own
``diff`` is a unified diff, which reads badly in two columns.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from keel._records import Rejected, decode, report
from keel.config import ClientReport, ConfigCenter, ConfigDocument, GrayRelease, GrayRule
from keel.errors import KeelError, NotFoundError
from keel.store import Store

__all__ = [
    "ClientView",
    "DiffRow",
    "config_detail",
    "config_list",
    "conflict_message",
    "gray_rule_from_form",
    "side_by_side",
    "when",
]

MAX_DIFF_LINES = 5_000
"""Rows of a side-by-side diff rendered at most (a larger diff is cut, and says so)."""
_EXACT_LINES = 3_000


def when(ts: float | None) -> str:
    """Epoch seconds as ``YYYY-MM-DD HH:MM:SS`` UTC ('' for None or 0)."""
    if not ts:
        return ""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


@dataclass(frozen=True, slots=True)
class DiffRow:
    """One row of a side-by-side diff.

    Attributes:
        kind: ``same``, ``changed``, ``removed`` (left only) or ``added`` (right only).
        left_no, right_no: line numbers (None where the side has no line).
        left, right: the text of each side ('' where absent).
    """

    kind: str
    left_no: int | None
    left: str
    right_no: int | None
    right: str


def side_by_side(old: str, new: str) -> list[DiffRow]:
    """Rows pairing the lines of ``old`` and ``new`` (pure).

    The common head and tail are matched first; a middle of at most
    ``_EXACT_LINES`` lines is aligned by :class:`difflib.SequenceMatcher`
    (quadratic in the worst case), a larger one line by line, so a 256 KiB
    document still renders in milliseconds.
    """
    a, b = old.splitlines(), new.splitlines()
    head = 0
    while head < min(len(a), len(b)) and a[head] == b[head]:
        head += 1
    tail = 0
    while tail < min(len(a), len(b)) - head and a[-1 - tail] == b[-1 - tail]:
        tail += 1
    rows = [DiffRow("same", i + 1, a[i], i + 1, b[i]) for i in range(head)]
    mid_a, mid_b = (head, len(a) - tail), (head, len(b) - tail)
    if (mid_a[1] - mid_a[0]) + (mid_b[1] - mid_b[0]) <= _EXACT_LINES:
        matcher = difflib.SequenceMatcher(None, a[slice(*mid_a)], b[slice(*mid_b)], autojunk=False)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            block = (range(head + i1, head + i2), range(head + j1, head + j2))
            rows.extend(_pair(a, b, *block, same=tag == "equal"))
    else:
        rows.extend(_pair(a, b, range(*mid_a), range(*mid_b), same=False))
    rows.extend(
        DiffRow(
            "same",
            len(a) - tail + n + 1,
            a[len(a) - tail + n],
            len(b) - tail + n + 1,
            b[len(b) - tail + n],
        )
        for n in range(tail)
    )
    return rows


def _pair(a: list[str], b: list[str], left: range, right: range, *, same: bool) -> list[DiffRow]:
    """Rows pairing ``a[left]`` with ``b[right]`` line by line."""
    rows = []
    for n in range(max(len(left), len(right))):
        i = left[n] if n < len(left) else None
        j = right[n] if n < len(right) else None
        if i is not None and j is not None:
            kind = "same" if same or a[i] == b[j] else "changed"
        else:
            kind = "removed" if j is None else "added"
        rows.append(
            DiffRow(
                kind,
                None if i is None else i + 1,
                "" if i is None else a[i],
                None if j is None else j + 1,
                "" if j is None else b[j],
            )
        )
    return rows


@dataclass(frozen=True, slots=True)
class ClientView:
    """One live binding of a config: which version it runs, and whether it is on gray.

    Attributes:
        client: the client id.
        version: the main version its value is based on.
        gray: whether it runs the gray content.
        md5: md5 of what it applied.
        labels: its labels as ``k=v, ...``.
        error: why its report could not be read ('' when fine).
    """

    client: str
    version: int
    gray: bool
    md5: str
    labels: str
    error: str = ""


async def config_list(center: ConfigCenter) -> dict[str, Any]:
    """Context of the configs list: every config with version, format, time, gray flag."""
    configs = await center.list()
    rows = [
        {
            "name": c.name,
            "version": c.version,
            "format": c.format,
            "md5": c.md5,
            "published": when(c.published_at),
            "gray": c.gray,
            "rejected": c.rejected,
        }
        for c in configs
    ]
    return {"configs": rows, "gray_count": sum(1 for c in configs if c.gray)}


async def _clients(store: Store, name: str) -> list[ClientView]:
    kvs, _ = await store.range(f"config-clients/{name}/")
    out = []
    for kv in kvs:
        client = kv.key.rsplit("/", 1)[1]
        info = decode("config", kv.key, kv.value, ClientReport.decode)
        if isinstance(info, Rejected):
            report(info)
            out.append(ClientView(client, 0, False, "", "", info.reason))
            continue
        labels = ", ".join(f"{k}={v}" for k, v in sorted(info.labels.items()))
        out.append(ClientView(client, info.version, info.gray, info.md5, labels))
    return out


def _pick(versions: list[int], value: int | None, default: int | None) -> int | None:
    return value if value in versions else default


async def config_detail(
    center: ConfigCenter, name: str, *, a: int | None = None, b: int | None = None
) -> dict[str, Any]:
    """Context of one config: current version, history, diff ``a`` → ``b``, gray and clients.

    The diff defaults to the previous version against the current one; a
    version that is not in history falls back to that default.

    Raises:
        NotFoundError: no config of that name, current or in history.
    """
    problem = ""
    try:
        current = await center.get(name)
    except KeelError as exc:  # a malformed current record: show history and the repair
        current, problem = None, str(exc)
    history = await center.history(name)
    if current is None and not history and not problem:
        raise NotFoundError(f"no config {name!r}: see the configs list")
    versions = [d.version for d in history]
    newest = versions[-1] if versions else None
    right = _pick(versions, b, newest)
    left = _pick(versions, a, versions[-2] if len(versions) > 1 else newest)
    by_version = {d.version: d for d in history}
    rows = (
        side_by_side(by_version[left].content, by_version[right].content)
        if left is not None and right is not None
        else []
    )
    gray, gray_problem = await _gray(center, name)
    return {
        "name": name,
        "current": _doc_view(current) if current else None,
        "problem": problem,
        "history": [_doc_view(d) for d in reversed(history)],
        "versions": list(reversed(versions)),
        "diff_a": left,
        "diff_b": right,
        "diff": rows[:MAX_DIFF_LINES],
        "diff_cut": len(rows) > MAX_DIFF_LINES,
        "diff_same": bool(rows) and all(r.kind == "same" for r in rows),
        "gray": _gray_view(gray, current) if gray else None,
        "gray_problem": gray_problem,
        "clients": await _clients(center.store, name),
    }


async def _gray(center: ConfigCenter, name: str) -> tuple[GrayRelease | None, str]:
    try:
        return await center.gray(name), ""
    except KeelError as exc:
        return None, str(exc)


def _doc_view(doc: ConfigDocument) -> dict[str, Any]:
    return {
        "version": doc.version,
        "content": doc.content,
        "format": doc.format,
        "md5": doc.md5,
        "author": doc.author,
        "comment": doc.comment,
        "published": when(doc.published_at),
    }


def _gray_view(gray: GrayRelease, current: ConfigDocument | None) -> dict[str, Any]:
    rule = gray.rule
    return {
        "content": gray.content,
        "md5": gray.md5,
        "base_version": gray.base_version,
        "author": gray.author,
        "comment": gray.comment,
        "published": when(gray.published_at),
        "ids": ", ".join(rule.ids),
        "labels": ", ".join(f"{k}={v}" for k, v in sorted(rule.labels.items())),
        "percent": "" if rule.percent is None else f"{rule.percent:g}",
        "diff": side_by_side(current.content if current else "", gray.content)[:MAX_DIFF_LINES],
    }


def gray_rule_from_form(ids: str, labels: str, percent: str) -> GrayRule:
    """A gray rule from the form's three fields (comma-separated ids, ``k=glob`` labels, 0-100).

    Raises:
        ValidationError: a malformed label, a percent that is not 0-100, or an empty rule.
    """
    from keel.errors import ValidationError

    share: float | None = None
    if percent.strip():
        try:
            share = float(percent)
        except ValueError:
            raise ValidationError(f"gray percent {percent!r}: give a number 0-100") from None
    return GrayRule(
        ids=tuple(filter(None, (i.strip() for i in ids.split(",")))),
        labels=GrayRule.parse_labels(labels),
        percent=share,
    )


async def conflict_message(center: ConfigCenter, name: str, expected: int) -> str:
    """Say who published which versions after ``expected``: the content of a CAS conflict."""
    newer = [d for d in await center.history(name) if d.version > expected]
    if not newer:
        return f"{name} changed while you edited it: reload the page and publish again"
    said = "; ".join(
        f"version {d.version} by {d.author or 'unknown'} at {when(d.published_at)}"
        + (f" ({d.comment})" if d.comment else "")
        for d in newer[-5:]
    )
    return (
        f"{name} was published meanwhile: {said}. You edited version {expected}: "
        f"reload, check the diff, and publish again"
    )
