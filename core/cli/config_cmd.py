"""`praefect config ...`: inspect and validate settings."""

from __future__ import annotations

import click

from praefect.core.cli import main


@main.group("config")
def config_group() -> None:
    """Inspect and validate the router's settings."""
