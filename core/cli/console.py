"""Where the commands print their tables, and which virtual storage they act on."""

from __future__ import annotations

import sys

from rich.console import Console

from praefect.core.cli.redis_access import fail
from praefect.settings import Config

__all__ = ["one_virtual_storage", "table_console", "virtual_storages"]

#: columns for output that goes to a pipe or file: long paths stay on one line
PIPED_WIDTH = 250


def table_console() -> Console:
    """A console for tables: the terminal's width, or room for long paths when piped."""
    width = None if sys.stdout.isatty() else PIPED_WIDTH
    return Console(highlight=False, soft_wrap=False, width=width)


def virtual_storages(settings: Config, chosen: str | None) -> tuple[str, ...]:
    """``chosen`` (``--virtual-storage``), or every configured one when it is None."""
    if chosen is None:
        return tuple(settings.virtual_storage_names)
    if chosen not in settings.virtual_storage_names:
        known = ", ".join(settings.virtual_storage_names)
        fail(f"unknown virtual storage {chosen!r}: the settings have {known}")
    return (chosen,)


def one_virtual_storage(settings: Config, chosen: str | None) -> str:
    """``chosen``, or the only configured one; fails when it is ambiguous or unknown."""
    names = virtual_storages(settings, chosen)
    if len(names) != 1:
        fail(f"several virtual storages are configured ({', '.join(names)}): give --virtual-storage")
    return names[0]
