"""`praefect config ...`: inspect and validate settings."""

from __future__ import annotations

from pathlib import Path

import click

from praefect.settings import to_toml

from . import main
from .options import config_option, load_config_or_exit


@main.group("config")
def config_group() -> None:
    """Inspect and validate the settings.

    Settings come from the defaults, the file given with --config (or
    PRAEFECT_SETTINGS_FILE), an optional secrets file (--secrets or
    PRAEFECT_SECRETS_FILE) and PRAEFECT_* environment variables, in that
    order. See docs/configuration.md for every key.
    """


@config_group.command("validate")
@config_option
@click.option(
    "--node",
    "node",
    is_flag=True,
    help="Check a file for `praefect node serve`: [node] is required; "
    "virtual storages and auth_token are not.",
)
def validate_command(config: Path | None, secrets: Path | None, node: bool) -> None:
    """Check the settings and print them resolved, tokens masked.

    Every problem (unknown or misspelt key, wrong type, bad address, empty
    token, no virtual storage, no node, not exactly one primary, ...) is
    printed to stderr at once, one per line as `key.path: problem (hint)`,
    and the exit status is 2. Otherwise prints "configuration OK" and the
    effective settings as TOML.

    \b
    Example:
      praefect config validate --config /etc/praefect/config.toml
    """
    settings = load_config_or_exit(
        config,
        secrets,
        require_virtual_storages=not node,
        require_node=node,
    )
    click.echo("configuration OK")
    click.echo("# read from: " + ", ".join(settings.sources) + " and the environment")
    click.echo(to_toml(settings.as_mapping(mask=True)), nl=False)
