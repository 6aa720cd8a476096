"""Showing settings to people: a TOML rendering of a settings mapping."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["to_toml"]

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(name: str) -> str:
    return name if _BARE_KEY.match(name) else json.dumps(name)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    if isinstance(value, Mapping):
        inner = ", ".join(f"{_key(str(k))} = {_value(v)}" for k, v in value.items())
        return "{ " + inner + " }" if inner else "{}"
    return json.dumps(str(value))


def to_toml(data: Mapping[str, Any]) -> str:
    """``data`` as TOML: plain keys first, then one section per table.

    Tables whose only content is other tables get no header of their own.
    """
    lines: list[str] = []

    def section(path: list[str], table: Mapping[str, Any]) -> None:
        plain = [(k, v) for k, v in table.items() if not isinstance(v, Mapping)]
        tables = [(k, v) for k, v in table.items() if isinstance(v, Mapping)]
        if path and (plain or not tables):
            if lines:
                lines.append("")
            lines.append("[" + ".".join(_key(p) for p in path) + "]")
        for name, value in plain:
            lines.append(f"{_key(str(name))} = {_value(value)}")
        for name, value in tables:
            section([*path, str(name)], value)

    section([], data)
    return "\n".join(lines) + "\n"
