"""`praefect check` and `praefect dial-nodes`: can this router reach its nodes?"""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from praefect.core.cli import main
from praefect.core.cli.options import config_option, load_config_or_exit
from praefect.settings import Config

DEFAULT_TIMEOUT = 5.0

_timeout_option = click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=DEFAULT_TIMEOUT,
    show_default=True,
    help="Seconds to wait for each node.",
)


@main.command("dial-nodes")
@config_option
@_timeout_option
def dial_nodes_command(config: Path | None, secrets: Path | None, timeout: float) -> None:
    """Dial every configured node: reachability, token match and health.

    One line per node, for example
    'gitaly-1 (tcp://10.0.0.1:8075): OK (healthy, git 2.45.2)'.
    Exits with status 1 when any node has a problem.
    """
    settings = load_config_or_exit(config, secrets)
    ok = asyncio.run(_dial(settings, timeout))
    raise SystemExit(0 if ok else 1)


@main.command("check")
@config_option
@_timeout_option
def check_command(config: Path | None, secrets: Path | None, timeout: float) -> None:
    """Check the settings, then dial every node (as dial-nodes does).

    Exits with status 2 when the settings have problems (all are listed),
    1 when a node has a problem, 0 when everything is fine.
    """
    settings = load_config_or_exit(config, secrets)
    sources = ", ".join(settings.sources[1:]) or "defaults and environment"
    click.echo(f"settings: OK ({sources})")
    ok = asyncio.run(_dial(settings, timeout))
    click.echo("check: OK" if ok else "check: FAILED (see the lines above)")
    raise SystemExit(0 if ok else 1)


async def _dial(settings: Config, per_node: float) -> bool:
    """Probe every node concurrently; print one line per node in settings order."""
    from grpc import aio

    from praefect.core.node_probe import probe_node

    nodes = [(vs.name, node) for vs in settings.virtual_storages for node in vs.nodes]
    channels = [aio.insecure_channel(node.grpc_target) for _, node in nodes]
    try:
        reports = await asyncio.gather(
            *(
                probe_node(channel, node.token, node.name, per_node)
                for channel, (_, node) in zip(channels, nodes, strict=True)
            )
        )
    finally:
        for channel in channels:
            await channel.close()
    several = len(settings.virtual_storages) > 1
    current = None
    for (vs_name, node), report in zip(nodes, reports, strict=True):
        if several and vs_name != current:
            click.echo(f"virtual storage {vs_name}:")
            current = vs_name
        if report.ok:
            click.echo(f"{node.name} ({node.address}): OK (healthy, git {report.git_version})")
        else:
            click.echo(f"{node.name} ({node.address}): ERROR: {report.error}")
    return all(report.ok for report in reports)
