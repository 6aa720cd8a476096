"""Options shared by the commands that read the settings.

@main.command()
@config_option
def serve(config: Path | None, secrets: Path | None) -> None:
    settings = load_config_or_exit(config, secrets)
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from praefect.settings import (
    SECRETS_FILE_ENVVAR,
    SETTINGS_FILE_ENVVAR,
    Config,
    SettingsError,
    load_config,
)

__all__ = ["config_option", "load_config_or_exit", "report_settings_error"]

F = TypeVar("F", bound=Callable[..., Any])

#: exit status when the settings have problems (the same as a usage error)
SETTINGS_EXIT_STATUS = 2

_FILE = click.Path(dir_okay=False, path_type=Path)


def config_option(func: F) -> F:
    """Add ``--config FILE`` and ``--secrets FILE``, passed as ``config`` and ``secrets``."""
    func = click.option(
        "--secrets",
        "secrets",
        type=_FILE,
        envvar=SECRETS_FILE_ENVVAR,
        show_envvar=True,
        metavar="FILE",
        help="Secrets file (tokens) merged over the settings file; same shape.",
    )(func)
    func = click.option(
        "--config",
        "config",
        type=_FILE,
        envvar=SETTINGS_FILE_ENVVAR,
        show_envvar=True,
        metavar="FILE",
        help="Deployment settings file (TOML, YAML or JSON). PRAEFECT_* "
        "environment variables override its keys, e.g. PRAEFECT_REDIS__URL.",
    )(func)
    return func


def report_settings_error(error: SettingsError) -> None:
    """Print every problem to stderr, one per line: ``key.path: message (hint)``."""
    click.echo(f"praefect: {error}", err=True)


def load_config_or_exit(
    config: str | Path | None,
    secrets: str | Path | None = None,
    require_virtual_storages: bool = True,
    require_node: bool = False,
) -> Config:
    """Load and validate the settings; on problems print them all and exit with status 2."""
    try:
        return load_config(
            config,
            secrets_file=secrets,
            require_virtual_storages=require_virtual_storages,
            require_node=require_node,
        )
    except SettingsError as error:
        report_settings_error(error)
        sys.exit(SETTINGS_EXIT_STATUS)
