"""Dotted keys (``ast.target_activation``) over nested config dicts: one getter, one setter."""

from __future__ import annotations

import copy
from typing import Any

from astray.errors import ConfigError


def get_dotted(raw: dict[str, Any], key: str, default: Any = None) -> Any:
    """The value at ``key``, or ``default`` when any part of the path is missing."""
    node: Any = raw
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def assign(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set ``key`` in place, creating missing sections; a value in the way is an error."""
    node = raw
    *parents, leaf = key.split(".")
    for part in parents:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{key!r}: {part!r} is a value, not a section")
        node = child
    node[leaf] = value


def set_dotted(raw: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of ``raw`` with each dotted key set."""
    out = copy.deepcopy(raw)
    for key, value in values.items():
        assign(out, key, value)
    return out
