"""The demo's view of the cluster: node health, primaries, generations, queues.

:func:`take_snapshot` asks the nodes (health, with their own tokens) and
Redis (repository state, replication queues) once; :func:`render_tables`
turns a snapshot into the live table, :func:`plain_lines` into lines for a
log when there is no terminal.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from redis.exceptions import RedisError
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from praefect.core.demo.clients import ClusterClients
from praefect.core.demo.cluster import NODE_NAMES, DemoCluster, describe_exit

__all__ = ["NodeRow", "RepositoryRow", "Snapshot", "plain_lines", "render_tables", "take_snapshot"]


@dataclass(frozen=True, slots=True)
class NodeRow:
    name: str
    address: str
    pid: int | None
    process: str
    up: bool
    problem: str
    #: up/down as the routers' health votes decide (None: unknown)
    routers_see_up: bool | None
    primaries: int
    pending: int | None
    dead_lettered: int | None


@dataclass(frozen=True, slots=True)
class RepositoryRow:
    relative_path: str
    generation: int
    primary: str
    #: node -> the generation of its replica (-1: it has none)
    replicas: Mapping[str, int] = field(default_factory=dict)

    def up_to_date(self, node: str) -> bool:
        return self.replicas.get(node, -1) == self.generation


@dataclass(frozen=True, slots=True)
class Snapshot:
    taken_at: float
    nodes: tuple[NodeRow, ...]
    repositories: tuple[RepositoryRow, ...]
    #: why Redis could not be read ("" when it could)
    redis_problem: str = ""

    def key(self) -> tuple[object, ...]:
        """What a plain log line shows: a new line is printed when this changes."""
        return (
            tuple(
                (n.name, n.process, n.up, n.routers_see_up, n.primaries, n.pending, n.dead_lettered)
                for n in self.nodes
            ),
            self.repositories,
            self.redis_problem,
        )


async def take_snapshot(
    cluster: DemoCluster, clients: ClusterClients, time_limit: float = 2.0
) -> Snapshot:
    """Ask the nodes and Redis once (each part within ``time_limit`` seconds)."""
    health_task = asyncio.ensure_future(clients.health(time_limit=min(1.0, time_limit)))
    redis_problem = ""
    repositories: list[RepositoryRow] = []
    queues: dict[str, tuple[int, int]] = {}
    routers_view: dict[str, bool] = {}
    try:
        async with asyncio.timeout(time_limit):
            for metadata in await clients.repositories():
                repositories.append(
                    RepositoryRow(
                        metadata.relative_path,
                        metadata.generation,
                        metadata.primary,
                        {name: metadata.replica_generation(name) for name in NODE_NAMES},
                    )
                )
            for queue in await clients.queues():
                queues[queue.target] = (queue.pending, queue.dead_lettered)
            routers_view = await clients.routers_view()
    except (RedisError, OSError, TimeoutError) as error:
        redis_problem = f"Redis cannot be read ({error or type(error).__name__}): is the router running?"
    except BaseException:
        health_task.cancel()
        raise
    health = {report.node: report for report in await health_task}
    rows = []
    for name in NODE_NAMES:
        child = cluster.children.get(name)
        report = health[name]
        pending, dead = queues.get(name, (None, None))
        rows.append(
            NodeRow(
                name=name,
                address=cluster.node_address(name),
                pid=child.pid if child is not None and child.running else None,
                process=describe_exit(child) if child is not None else "not started",
                up=report.up,
                problem=report.problem,
                routers_see_up=routers_view.get(name),
                primaries=sum(1 for repo in repositories if repo.primary == name),
                pending=pending,
                dead_lettered=dead,
            )
        )
    return Snapshot(time.time(), tuple(rows), tuple(repositories), redis_problem)


def _count(value: int | None) -> str:
    return "?" if value is None else str(value)


def _routers_view(up: bool | None) -> Text:
    if up is None:
        return Text("?", style="dim")
    return Text("up", style="green") if up else Text("down", style="bold red")


def render_tables(snapshot: Snapshot, title: str = "") -> RenderableType:
    """The live view: one table of nodes, one of repositories."""
    nodes = Table(title=title or None, title_justify="left", expand=False)
    for column, justify in (
        ("Node", "left"), ("Address", "left"), ("Pid", "right"), ("Health", "left"),
        ("Routers' view", "left"), ("Primary of", "right"), ("Pending events", "right"), ("Dead-lettered", "right"),
    ):
        nodes.add_column(column, justify=justify)  # type: ignore[arg-type]
    for row in snapshot.nodes:
        if row.up:
            health = Text("up", style="green")
        else:
            reason = row.process if row.process != "running" else row.problem
            health = Text(f"down ({reason})" if reason else "down", style="bold red")
        nodes.add_row(
            row.name, row.address, str(row.pid or "-"), health, _routers_view(row.routers_see_up),
            str(row.primaries), _count(row.pending), _count(row.dead_lettered),
        )
    repositories = Table(expand=False)
    repositories.add_column("Repository")
    repositories.add_column("Generation", justify="right")
    repositories.add_column("Primary")
    for name in NODE_NAMES:
        repositories.add_column(name, justify="right")
    for repo in snapshot.repositories:
        cells = []
        for name in NODE_NAMES:
            generation = repo.replicas.get(name, -1)
            if generation < 0:
                cells.append(Text("none", style="red"))
            elif repo.up_to_date(name):
                cells.append(Text(f"{generation} ✓", style="green"))
            else:
                cells.append(Text(f"{generation} (behind {repo.generation - generation})", style="yellow"))
        repositories.add_row(repo.relative_path, str(repo.generation), repo.primary, *cells)
    parts: list[RenderableType] = [nodes, repositories]
    if snapshot.redis_problem:
        parts.append(Text(snapshot.redis_problem, style="bold red"))
    stamp = time.strftime("%H:%M:%S", time.localtime(snapshot.taken_at))
    parts.append(Text(f"updated {stamp} · Ctrl-C stops the demo and every process it started", style="dim"))
    return Group(*parts)


def plain_lines(snapshot: Snapshot) -> list[str]:
    """The snapshot as log lines (no terminal): one for the nodes, one per repository."""
    stamp = time.strftime("%H:%M:%S", time.localtime(snapshot.taken_at))
    nodes = []
    for row in snapshot.nodes:
        state = "up" if row.up else f"DOWN ({row.process if row.process != 'running' else row.problem})"
        seen = {None: "?", True: "up", False: "down"}[row.routers_see_up]
        nodes.append(
            f"{row.name} {state} (routers: {seen}), primary of {row.primaries}, "
            f"{_count(row.pending)} pending, {_count(row.dead_lettered)} dead-lettered"
        )
    lines = [f"[{stamp}] nodes: " + "; ".join(nodes)]
    for repo in snapshot.repositories:
        replicas = " ".join(
            f"{name}={repo.replicas.get(name, -1) if repo.replicas.get(name, -1) >= 0 else 'none'}"
            + ("" if repo.up_to_date(name) else "(behind)")
            for name in NODE_NAMES
        )
        lines.append(
            f"[{stamp}] {repo.relative_path}: generation {repo.generation}, "
            f"primary {repo.primary}, replicas {replicas}"
        )
    if snapshot.redis_problem:
        lines.append(f"[{stamp}] {snapshot.redis_problem}")
    return lines
