"""``praefect demo``: start the cluster, create a project, then show it live until Ctrl-C.

On a terminal, long steps show a spinner and the status is a table that
refreshes every second (press ``r`` to restart nodes that are down). Without
a terminal, every step and every change of the status is one plain line.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import sys
import termios
import time
import tty
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

from grpc import aio
from rich.console import Console
from rich.live import Live

from praefect.core.demo.clients import ClusterClients
from praefect.core.demo.cluster import (
    GATEWAY,
    NODE_NAMES,
    PRIMARY,
    PROJECT_PATH,
    ROUTER,
    VIRTUAL_STORAGE,
    DemoCluster,
    describe_exit,
)
from praefect.core.demo.processes import ChildStartError
from praefect.core.demo.scenario import StepFailed, wait_for_convergence
from praefect.core.demo.status import Snapshot, plain_lines, render_tables, take_snapshot

__all__ = ["InteractiveDemo", "praefect_command"]

REFRESH = 1.0


def praefect_command() -> str:
    """How the user runs ``praefect`` from another shell (the venv's script when there is one)."""
    script = Path(sys.executable).parent / "praefect"
    if script.exists():
        return shlex.quote(str(script))
    return f"{shlex.quote(sys.executable)} -m praefect.core.cli"


class InteractiveDemo:
    """The steps of ``praefect demo`` and its live status."""

    def __init__(self, cluster: DemoCluster, console: Console, *, live: bool) -> None:
        self.cluster = cluster
        self.console = console
        self.live = live
        self._clients: ClusterClients | None = None
        self._restart_requested = False

    # ----------------------------------------------------------- output

    def say(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False, soft_wrap=True)

    @contextlib.asynccontextmanager
    async def step(self, message: str) -> AsyncIterator[Callable[[str], None]]:
        """A long step: a spinner on a terminal, a line otherwise; ✓ with its time at the end."""
        began = time.monotonic()
        if self.live:
            with self.console.status(message) as status:
                yield lambda text: status.update(text)
        else:
            self.say(f"... {message}")
            yield lambda text: self.say(f"    {text}")
        self.say(f"✓ {message} ({time.monotonic() - began:.1f} s)")

    # ------------------------------------------------------------- body

    async def run(self) -> int:
        """Until cancelled (Ctrl-C); 1 when a step fails or the router or gateway dies."""
        body = asyncio.ensure_future(self._run())
        death = asyncio.ensure_future(self._server_death())
        try:
            await asyncio.wait({body, death}, return_when=asyncio.FIRST_COMPLETED)
            if not death.done():
                return body.result()
            body.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await body
            name = death.result()
            child = self.cluster.children[name]
            self.say(f"✗ the {name} stopped on its own ({describe_exit(child)}); its last lines:")
            for line in child.tail(30).splitlines():
                self.say(f"    {line}")
            return 1
        finally:
            for task in (body, death):
                task.cancel()
            await asyncio.gather(body, death, return_exceptions=True)
            if self._clients is not None:
                await self._clients.close()

    async def _server_death(self) -> str:
        """Returns the name of the router or gateway once one of them exits after starting."""
        while True:
            for name in (ROUTER, GATEWAY):
                child = self.cluster.children.get(name)
                if child is not None and child.address is not None and not child.running:
                    return name
            await asyncio.sleep(0.2)

    async def _run(self) -> int:
        cluster = self.cluster
        async with self.step("starting embedded Redis, three storage nodes, the router and the gateway") as update:
            await cluster.start(progress=update)
        clients = self._clients = ClusterClients(cluster.settings, cluster.router_address, VIRTUAL_STORAGE)
        try:
            async with self.step(f"creating {PROJECT_PATH} with a README through the router"):
                commit = await clients.create_project(PROJECT_PATH, "Demo project")
        except (aio.AioRpcError, RuntimeError) as error:
            reason = f"{error.code().name}: {error.details()}" if isinstance(error, aio.AioRpcError) else str(error)
            self.say(f"✗ the router did not create {PROJECT_PATH}: {reason}; the router's last lines:")
            for line in cluster.children[ROUTER].tail(30).splitlines():
                self.say(f"    {line}")
            return 1
        self.say(f"  CreateRepository, then UserCommitFiles: commit {commit[:12]} on main")
        self._introduce()
        try:
            async with self.step("waiting for the replicas to converge"):
                checksums = await wait_for_convergence(clients, PROJECT_PATH, time_limit=60)
        except StepFailed as failure:
            self.say(f"✗ {failure}")
            self.say(f"  logs: {cluster.logs_dir}")
        else:
            self.say(
                f"  checksum {checksums[0].value[:12]} on {', '.join(c.node for c in checksums)}"
            )
        await self._watch(clients)
        return 0

    def _introduce(self) -> None:
        cluster = self.cluster
        praefect = praefect_command()
        settings = shlex.quote(str(cluster.settings_file))
        pids = cluster.pids()
        rows = [
            (ROUTER, cluster.router_address, f"praefect serve --config {cluster.settings_file}"),
            (GATEWAY, f"http://{cluster.gateway_address}", "git smart HTTP, user demo"),
            *(
                (name, cluster.node_address(name), "primary" if name == PRIMARY else "replica")
                for name in NODE_NAMES
            ),
        ]
        lines = ["", f"The demo cluster runs in {cluster.workdir} (logs in {cluster.logs_dir}):"]
        for name, address, role in rows:
            lines.append(f"  {name:<9} {address:<24} pid {pids.get(name, '-')!s:<8} {role}")
        primary_pid = pids.get(PRIMARY, "PID")
        lines += [
            "  embedded Redis: owned by the router, data in " + str(cluster.redis_dir),
            "",
            "Clone URL:",
            f"  {cluster.clone_url()}",
            "",
            "Things to try from another terminal:",
            f"  git clone {cluster.clone_url()}",
            "  cd project && echo hello > hello.txt && git add hello.txt && git commit -m hello && git push",
            f"  git push {cluster.clone_url('demo/another.git')} HEAD:main   # a push creates a repository",
            f"  {praefect} replication status --config {settings}",
            f"  {praefect} dataloss --config {settings}",
            f"  {praefect} metadata --config {settings} --relative-path {PROJECT_PATH}",
            f"  kill -9 {primary_pid}   # {PRIMARY}, the primary: watch health, primaries and generations",
            "",
            "Ctrl-C stops the demo and every process it started"
            + (" · r restarts nodes that are down" if self.live else ""),
            "",
        ]
        for line in lines:
            self.say(line)

    # ----------------------------------------------------------- status

    def _title(self) -> str:
        return (
            f"praefect demo · router {self.cluster.router_address} · "
            f"gateway http://{self.cluster.gateway_address}"
        )

    async def _restart_stopped_nodes(self) -> None:
        for name in NODE_NAMES:
            child = self.cluster.children[name]
            if not child.running:
                try:
                    await self.cluster.restart_node(name)
                except ChildStartError as error:
                    self.say(f"✗ {error}; its last lines:")
                    for line in error.tail.splitlines()[-10:]:
                        self.say(f"    {line}")
                else:
                    self.say(f"✓ restarted {name} (pid {child.pid}) on {child.address}")

    async def _watch(self, clients: ClusterClients) -> None:
        """Show the status every second, until cancelled."""
        last_key: tuple[object, ...] | None = None
        with self._keyboard(), self._live_display() as show:
            while True:
                if self._restart_requested:
                    self._restart_requested = False
                    await self._restart_stopped_nodes()
                snapshot = await take_snapshot(self.cluster, clients)
                if self.live:
                    show(snapshot)
                elif snapshot.key() != last_key:
                    last_key = snapshot.key()
                    for line in plain_lines(snapshot):
                        self.say(line)
                await asyncio.sleep(REFRESH)

    @contextlib.contextmanager
    def _live_display(self) -> Iterator[Callable[[Snapshot | None], None]]:
        if not self.live:
            yield lambda snapshot: None
            return
        with Live(console=self.console, refresh_per_second=4, transient=False) as live:

            def show(snapshot: Snapshot | None) -> None:
                if snapshot is not None:
                    live.update(render_tables(snapshot, self._title()))

            yield show

    @contextlib.contextmanager
    def _keyboard(self) -> Iterator[None]:
        """On a terminal: single keys without echo (``r``: restart stopped nodes)."""
        if not self.live or not sys.stdin.isatty():
            yield
            return
        fd = sys.stdin.fileno()
        saved = termios.tcgetattr(fd)
        loop = asyncio.get_running_loop()

        def on_key() -> None:
            with contextlib.suppress(OSError):
                if b"r" in os.read(fd, 64).lower():
                    self._restart_requested = True

        try:
            tty.setcbreak(fd)
            loop.add_reader(fd, on_key)
            yield
        finally:
            loop.remove_reader(fd)
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
