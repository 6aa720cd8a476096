"""`praefect node ...`: run a Gitaly-protocol storage node."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import click

from praefect.core.cli import main


@main.group("node")
def node_group() -> None:
    """Run the project's own Gitaly-protocol storage node."""


def _parse_storage(value: str) -> tuple[str, Path]:
    name, sep, path = value.partition("=")
    if not sep or not name or not path:
        raise click.BadParameter(f"{value!r}: expected NAME=PATH, for example gitaly-1=/srv/git1")
    return name, Path(path).expanduser().absolute()


@node_group.command("serve")
@click.option("--listen", "listen_addr", metavar="HOST:PORT", help="Address to listen on (port 0 picks a free port).")
@click.option(
    "--storage",
    "storages",
    multiple=True,
    metavar="NAME=PATH",
    help="A storage this node serves; repeat for several.",
)
@click.option(
    "--token",
    envvar="PRAEFECT_NODE_TOKEN",
    help="The node's internal token (or PRAEFECT_NODE_TOKEN; the router signs calls with it).",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="PRAEFECT_SETTINGS_FILE",
    help="Settings file with a [node] section (listen_addr, token, storages).",
)
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"]))
def serve_command(
    listen_addr: str | None,
    storages: tuple[str, ...],
    token: str | None,
    config_file: Path | None,
    log_level: str,
) -> None:
    """Serve bare git repositories over the Gitaly protocol.

    Example: praefect node serve --listen 127.0.0.1:9001 --storage gitaly-1=/srv/git1 --token SECRET
    """
    from praefect.core.telemetry.tracing import TracingConfigError
    from praefect.node.server import NodeServer, NodeServerConfig

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    storage_map = dict(_parse_storage(value) for value in storages)
    tracing = None
    log_format = "text"
    if config_file is not None:
        from praefect.core.cli.options import load_config_or_exit

        settings = load_config_or_exit(config_file, None, require_virtual_storages=False)
        listen_addr = listen_addr or settings.node.listen_addr
        token = token or settings.node.token
        tracing = settings.tracing
        log_format = settings.logging.format
        for name, path in settings.node.storages.items():
            storage_map.setdefault(name, Path(path).expanduser().absolute())
    problems = []
    if not listen_addr:
        problems.append("no listen address: give --listen HOST:PORT or node.listen_addr")
    if not storage_map:
        problems.append("no storage: give --storage NAME=PATH or node.storages")
    if not token:
        problems.append("no token: give --token, PRAEFECT_NODE_TOKEN or node.token")
    if problems:
        for problem in problems:
            click.echo(f"error: {problem}", err=True)
        raise SystemExit(2)
    assert listen_addr and token
    config = NodeServerConfig(
        listen_addr=listen_addr, storages=storage_map, token=token, tracing=tracing, log_format=log_format
    )
    try:
        asyncio.run(NodeServer(config).serve())
    except TracingConfigError as error:
        click.echo(f"error: tracing settings: {error}", err=True)
        raise SystemExit(2) from error
    except OSError as error:
        click.echo(f"error: {error}", err=True)
        raise SystemExit(1) from error
