"""The `praefect` command line.

Each command group lives in its own module and registers itself on `main`.
"""

from __future__ import annotations

import click

from praefect.core import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="praefect")
def main() -> None:
    """praefect: a highly available router for git storage (Gitaly protocol)."""


def _register_commands() -> None:
    # Imported for their side effect of adding commands to `main`; kept in one
    # place so the order of `praefect --help` is stable.
    from praefect.core.cli import (  # noqa: F401
        check_cmd,
        config_cmd,
        demo_cmd,
        failover_cmd,
        gateway_cmd,
        node_cmd,
        plugins_cmd,
        replication_cmd,
        serve_cmd,
        storages_cmd,
        verify_cmd,
    )


_register_commands()
