"""Global options anywhere on the line, as kubectl and etcdctl take them.

``keel store get KEY --store URL`` means the same as ``keel --store URL store
get KEY``: click only reads an option at the level that defines it, so the
root's options (``--store``, ``--debug``) that follow the command are moved in
front of it before parsing. Nothing after ``--`` moves, and nothing after the
command of ``keel lock`` (the words of the command it runs are its own).
"""

from __future__ import annotations

from typing import Final

__all__ = ["command_word", "hoist_global_options"]

_VALUED: Final = ("--store",)
_FLAGS: Final = ("--debug",)
_PASSTHROUGH: Final = frozenset({"lock"})  # commands whose trailing words belong to a child


def _command_at(argv: list[str]) -> int:
    """Index of the first command word (after the root's own options), or len(argv)."""
    i = 0
    while i < len(argv):
        word = argv[i]
        if word in _VALUED:
            i += 2
        elif word.startswith("-"):
            i += 1
        else:
            return i
    return i


def command_word(argv: list[str]) -> str | None:
    """The top-level command ``argv`` runs (``store`` in ``--debug store get k``), if any."""
    at = _command_at(argv)
    return argv[at] if at < len(argv) else None


def hoist_global_options(argv: list[str]) -> list[str]:
    """``argv`` with the root's options that follow the command moved before it."""
    start = _command_at(argv)
    if start >= len(argv) or argv[start] in _PASSTHROUGH:
        return argv
    front, rest = argv[:start], [argv[start]]
    i = start + 1
    while i < len(argv):
        word = argv[i]
        if word == "--":
            rest.extend(argv[i:])
            break
        if word in _FLAGS or any(word.startswith(f"{name}=") for name in _VALUED):
            front.append(word)
        elif word in _VALUED and i + 1 < len(argv):
            front.extend((word, argv[i + 1]))
            i += 1
        else:
            rest.append(word)
        i += 1
    return front + rest
