"""`praefect serve`: run the router."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import click

from praefect.core.cli import main
from praefect.core.cli.options import config_option, load_config_or_exit
from praefect.core.cli.process_telemetry import process_telemetry
from praefect.core.router_config import RouterConfig, RouterConfigError


@main.command("serve")
@config_option
@click.option(
    "--listen",
    "listen_addr",
    metavar="HOST:PORT",
    help="Overrides listen_addr (port 0 picks a free port).",
)
def serve_command(config: Path | None, secrets: Path | None, listen_addr: str | None) -> None:
    """Run the router: authenticate, route and forward Gitaly calls to the nodes.

    Prints 'praefect router listening on HOST:PORT' once it accepts calls;
    SIGTERM or SIGINT stops it gracefully (calls in flight get
    server.graceful_stop_timeout seconds to finish).

    Example: praefect serve --config /etc/praefect/config.toml
    """
    settings = load_config_or_exit(config, secrets)
    bind = listen_addr or settings.listen_addr
    processes = settings.server.processes
    try:
        if processes > 1:
            bind, reservation = _reserve_port(bind)
            try:
                status = _run_workers(processes, lambda: RouterConfig(settings, listen_addr=bind, reuse_port=True))
            finally:
                reservation.close()
            raise SystemExit(status)
        router_config = RouterConfig(settings, listen_addr=bind)
    except RouterConfigError as error:
        click.echo(f"praefect: {error}", err=True)
        raise SystemExit(2) from error
    _serve(router_config)


def _serve(router_config: RouterConfig) -> None:
    # Imported here: nothing of gRPC may exist before `_run_workers` forks.
    from praefect.core.router import RouterStartError
    from praefect.core.server import RouterServer

    with process_telemetry("router", router_config.settings):
        try:
            asyncio.run(RouterServer(router_config).serve())
        except (OSError, RouterStartError) as error:
            click.echo(f"praefect: cannot start the router: {error}", err=True)
            raise SystemExit(1) from error


def _reserve_port(bind: str) -> tuple[str, socket.socket]:
    """Pick the port for every worker (port 0 becomes a free one).

    The socket stays bound (not listening) with SO_REUSEPORT until the
    workers exit, so that no other program takes the port meanwhile.
    """
    host, _, port = bind.rpartition(":")
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    reservation = socket.socket(family, socket.SOCK_STREAM)
    reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    reservation.bind((host.strip("[]"), int(port)))
    return f"{host}:{reservation.getsockname()[1]}", reservation


def _run_workers(count: int, make_config: Callable[[], RouterConfig]) -> int:
    """Fork ``count`` routers sharing one port; wait for all; forward signals.

    Forked before any gRPC object exists: gRPC's threads and sockets do not
    survive a fork.
    """
    router_config = make_config()
    pids: list[int] = []
    for _ in range(count):
        pid = os.fork()
        if pid == 0:  # the worker
            status = 0
            try:
                _serve(router_config)
            except SystemExit as stop:
                status = stop.code if isinstance(stop.code, int) else 1
            except BaseException:
                status = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(status)
        pids.append(pid)

    def forward(signum: int, frame: FrameType | None) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    worst = 0
    for pid in pids:
        _, wait_status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(wait_status)
        if code and not worst:
            worst = code if code > 0 else 128 - code  # killed by signal -code
    return worst
