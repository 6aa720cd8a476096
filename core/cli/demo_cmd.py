"""`praefect demo`: a three-node cluster on loopback, and the end-to-end scenario."""

from __future__ import annotations

from pathlib import Path

import click

from praefect.core.cli import main


@main.command("demo")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    help="Empty or new directory for the storages, Redis data, settings and logs "
    "(kept afterwards). Default: a temporary directory, removed when the demo ends well.",
)
@click.option(
    "--base-port",
    type=int,
    metavar="N",
    help="Listen on 127.0.0.1 ports N (router), N+1..N+3 (nodes) and N+4 (gateway). "
    "Default: free ports.",
)
@click.option(
    "--scenario",
    is_flag=True,
    help="Run the end-to-end scenario (create, push, clone, checksums, kill the primary, "
    "fail over, push, restart, converge) and exit: 0 only if every step held.",
)
def demo_command(workdir: Path | None, base_port: int | None, scenario: bool) -> None:
    """Start embedded Redis, three storage nodes, a router and the git HTTP gateway.

    Creates demo/project.git with a README through the router, prints the
    clone URL and what to try, shows the replicas converging, then a live
    status table until Ctrl-C, which stops every process the demo started.
    Without a terminal the status is printed as plain lines.

    Example: praefect demo, then in another terminal: git clone URL
    """
    from praefect.core.demo.runner import run_demo

    raise SystemExit(run_demo(workdir=workdir, base_port=base_port, scenario=scenario))
