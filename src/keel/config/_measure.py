"""Measure a document before a binding walks it: nesting depth and values after alias expansion.

A YAML anchor is stored once but every alias to it is a full copy to whoever
walks the result (pydantic, ``merge``, ``json.dumps``). PyYAML's safe loader
shares one Python object per anchor, so loading is cheap and the blow-up
comes later, in the binding. :func:`measure_yaml` therefore works on the
composed node graph, before any Python object is built: each distinct node is
visited once and its expanded size and depth computed from its children's
(memoized), so a billion-node bomb is measured in a few hundred steps.
Iterative, so a long chain of aliases cannot exhaust Python's stack.
"""

from __future__ import annotations

from typing import Literal

import yaml

__all__ = ["MAX_DEPTH", "MAX_NODES", "count_values", "measure_yaml"]

MAX_DEPTH = 64
"""Deepest nesting of lists and mappings accepted in a config document."""

MAX_NODES = 100_000
"""Most values (scalars, lists, mappings; keys included) a document may expand to."""

Problem = Literal["deep", "large", "cycle"]


def count_values(document: object, limit: int) -> int:
    """Count the values of a JSON-like document, stopping once past ``limit``."""
    seen = 0
    stack = [document]
    while stack and seen <= limit:
        node = stack.pop()
        seen += 1
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return seen


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def measure_yaml(root: yaml.Node, *, max_depth: int, max_nodes: int) -> Problem | None:
    """What is wrong with a composed YAML graph once aliases are expanded, if anything.

    Returns:
        ``"cycle"`` if a node contains itself (``&a [*a]``), ``"deep"`` past
        ``max_depth`` levels, ``"large"`` past ``max_nodes`` values, else None.
    """
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    entered: set[int] = set()  # nodes whose children are being measured: the current path
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        kids = _children(node)
        if children_done:
            entered.discard(key)
            size[key] = 1 + sum(size[id(k)] for k in kids)
            is_scalar = isinstance(node, yaml.ScalarNode)
            depth[key] = 0 if is_scalar else 1 + max((depth[id(k)] for k in kids), default=0)
            if depth[key] > max_depth:
                return "deep"
            if size[key] > max_nodes:
                return "large"
            continue
        if key in size:
            continue
        if key in entered:
            return "cycle"
        entered.add(key)
        stack.append((node, True))
        stack.extend((kid, False) for kid in kids if id(kid) not in size)
    return None
