"""`praefect plugins`: the plugins a router with these settings would load."""

from __future__ import annotations

from pathlib import Path

from praefect.core.cli import main
from praefect.core.cli.options import config_option, load_config_or_exit


@main.command("plugins")
@config_option
def plugins_command(config: Path | None, secrets: Path | None) -> None:
    """List the plugins a router loads: name, version, source and hooks.

    Default plugins come first, then those installed through the 'praefect'
    entry-point group; names in plugins.blocked are left out.
    """
    from rich.table import Table

    from praefect.core.cli.console import table_console
    from praefect.core.plugin_manager import build_plugin_manager, plugin_infos

    settings = load_config_or_exit(config, secrets, require_virtual_storages=False)
    pm = build_plugin_manager(settings.plugins.blocked)
    table = Table(title="praefect plugins")
    table.add_column("name", no_wrap=True)
    table.add_column("version", no_wrap=True)
    table.add_column("source")
    table.add_column("hooks")
    for info in plugin_infos(pm):
        table.add_row(info.name, info.version, info.source, ", ".join(info.hooks) or "-")
    console = table_console()
    console.print(table)
    if settings.plugins.blocked:
        console.print(f"blocked: {', '.join(settings.plugins.blocked)}")
