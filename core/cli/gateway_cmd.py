"""`praefect gateway`: git smart HTTP in front of the router."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import click

from praefect.core.cli import main


@main.command("gateway")
@click.option(
    "--listen",
    "listen_addr",
    default="127.0.0.1:8080",
    show_default=True,
    metavar="HOST:PORT",
    help="Address to serve HTTP on (port 0 picks a free port).",
)
@click.option(
    "--router",
    "router_addr",
    required=True,
    metavar="ADDR",
    help="The router (or any Gitaly-protocol server): HOST:PORT, tcp://HOST:PORT or unix:PATH.",
)
@click.option(
    "--token",
    envvar="PRAEFECT_AUTH_TOKEN",
    show_envvar=True,
    help="The router's auth_token; every call is signed with it.",
)
@click.option(
    "--storage",
    default="praefect",
    show_default=True,
    help="The virtual storage the repositories live in.",
)
@click.option(
    "--secret-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File holding the HTTP password (any user name is accepted).",
)
@click.option(
    "--password",
    envvar="PRAEFECT_GATEWAY_PASSWORD",
    show_envvar=True,
    help="The HTTP password (prefer --secret-file or the environment: "
    "a command line is visible to every user of the machine).",
)
@click.option(
    "--advertise-timeout",
    type=float,
    default=60.0,
    show_default=True,
    metavar="SECONDS",
    help="How long the router may keep a ref advertisement (GET info/refs) waiting, "
    "at its start or in its middle, before git gets 504.",
)
@click.option(
    "--response-start-timeout",
    type=float,
    default=300.0,
    show_default=True,
    metavar="SECONDS",
    help="How long the router may keep a fetch or push waiting: to take each piece of "
    "the request, then to start answering once it has all of it. A transfer that has "
    "started is never cut.",
)
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"]))
def gateway_command(
    listen_addr: str,
    router_addr: str,
    token: str | None,
    storage: str,
    secret_file: Path | None,
    password: str | None,
    advertise_timeout: float,
    response_start_timeout: float,
    log_level: str,
) -> None:
    """Serve git clone, fetch and push over HTTP through the router.

    Example: praefect gateway --listen 127.0.0.1:8080 --router 127.0.0.1:2305
    --token TOKEN --secret-file /etc/praefect/gateway-password

    then: git clone http://user:PASSWORD@127.0.0.1:8080/group/project.git
    (pushing to a repository that does not exist creates it).
    """
    from praefect.gateway.config import GatewayConfig, GatewayConfigError, read_secret_file
    from praefect.gateway.server import GatewayServer

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if secret_file is not None and password is not None:
            raise GatewayConfigError(["give either --secret-file or --password, not both"])
        if secret_file is not None:
            password = read_secret_file(secret_file)
        config = GatewayConfig(
            listen_addr=listen_addr,
            router_addr=router_addr,
            token=token or "",
            storage=storage,
            password=password,
            advertise_timeout=advertise_timeout,
            response_start_timeout=response_start_timeout,
        )
    except GatewayConfigError as error:
        for problem in error.problems:
            click.echo(f"error: {problem}", err=True)
        raise SystemExit(2) from error
    try:
        asyncio.run(GatewayServer(config).serve())
    except OSError as error:
        click.echo(f"error: cannot listen on {listen_addr}: {error.strerror or error}", err=True)
        raise SystemExit(1) from error
