"""`praefect list-storages`: the virtual storages and nodes the settings define.

Read from the settings only, so it answers with Redis and every node down:
the first thing to check when a call names a storage the router does not
know. Live state (health, primaries, generations) is `praefect metadata`
and `praefect replication status`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from praefect.core.cli import main
from praefect.core.cli.console import table_console, virtual_storages
from praefect.core.cli.options import config_option, load_config_or_exit
from praefect.settings import VirtualStorageConfig


@main.command("list-storages")
@config_option
@click.option(
    "--virtual-storage",
    "virtual_storage",
    metavar="NAME",
    help="Only this virtual storage (default: all of them).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of a table.")
def list_storages_command(
    config: Path | None, secrets: Path | None, virtual_storage: str | None, as_json: bool
) -> None:
    """List the virtual storages and their nodes: name, address, configured primary.

    Tokens are never shown. The configured primary is where a new repository
    starts; each repository's current primary is in `praefect metadata`.
    """
    settings = load_config_or_exit(config, secrets)
    storages = tuple(settings.virtual_storage(name) for name in virtual_storages(settings, virtual_storage))
    if as_json:
        json.dump({vs.name: _nodes_json(vs) for vs in storages}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    from rich.table import Table

    table = Table(title="praefect storages")
    for column in ("virtual storage", "node", "address", "configured primary"):
        table.add_column(column, overflow="fold")
    for vs in storages:
        for node in vs.nodes:
            table.add_row(vs.name, node.name, node.address, "yes" if node.primary else "")
    table_console().print(table)


def _nodes_json(vs: VirtualStorageConfig) -> list[dict[str, object]]:
    return [{"node": node.name, "address": node.address, "primary": node.primary} for node in vs.nodes]
