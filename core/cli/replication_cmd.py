"""Replication commands: queue status, data loss, tracking, standalone workers.

They read Redis directly with the router's settings (``--config``): the
``redis.url``, or the unix socket of the embedded Redis that a running
router owns in ``redis.data_dir``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import click
import grpc
from grpc import aio
from redis.exceptions import RedisError
from rich.table import Table

from praefect.core.cli import main as _main
from praefect.core.cli.console import one_virtual_storage, table_console, virtual_storages
from praefect.core.cli.options import config_option as _config_option
from praefect.core.cli.options import load_config_or_exit
from praefect.core.cli.process_telemetry import process_telemetry
from praefect.core.cli.redis_access import fail, run_on_redis
from praefect.core.mutation import ChangeType
from praefect.plugins.replication.nodes import NodeClients
from praefect.plugins.replication.runtime import (
    ReplicationRuntime,
    RuntimeOptions,
    endpoints_from_settings,
)
from praefect.plugins.replication.state import (
    RepositoryAlreadyTracked,
    RepositoryMetadata,
    RepositoryStore,
)
from praefect.plugins.replication.streams import queue_status
from praefect.settings import Config

T = TypeVar("T")

# Typed names for the shared group and option (mypy run on file paths cannot
# follow the editable install's praefect.* imports and would see Any).
main: click.Group = _main
config_option: Callable[[Callable[..., None]], Callable[..., None]] = _config_option


def _run(settings: Config, work: Callable[[RepositoryStore], Awaitable[T]]) -> T:
    """Run ``work`` with a store on the settings' Redis; Redis trouble exits with a message."""
    return run_on_redis(settings, lambda client: work(RepositoryStore(client)))


def _table(title: str, *columns: str, numeric: tuple[str, ...] = ()) -> Table:
    table = Table(title=title)
    for column in columns:
        # Paths and node lists fold instead of being cut with an ellipsis.
        table.add_column(
            column,
            justify="right" if column in numeric else "left",
            min_width=len(column),
            overflow="fold",
        )
    return table


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _changes(count: int) -> str:
    return f"behind by {count} change{'' if count == 1 else 's'}"


_VS_OPTION = click.option(
    "--virtual-storage", "virtual_storage", metavar="NAME", help="Only this virtual storage."
)


# ------------------------------------------------------------- status


@main.group("replication")
def replication_group() -> None:
    """Inspect the replication queues."""


@replication_group.command("status")
@config_option
@_VS_OPTION
def status_command(config: Path | None, secrets: Path | None, virtual_storage: str | None) -> None:
    """Per target node: events pending, age of the oldest, dead-lettered events."""
    settings = load_config_or_exit(config, secrets)
    names = virtual_storages(settings, virtual_storage)

    async def collect(store: RepositoryStore) -> list[tuple[str, str, int, int, float | None, int]]:
        rows = []
        now = time.time()
        for vs in names:
            for node in settings.virtual_storage(vs).nodes:
                status = await queue_status(store.client, vs, node.name)
                rows.append(
                    (vs, node.name, status.pending, status.in_progress, status.oldest_age(now),
                     status.dead_lettered)
                )
        return rows

    rows = _run(settings, collect)
    table = _table(
        "Replication queues",
        "Virtual storage", "Target node", "Pending", "In progress", "Oldest pending", "Dead-lettered",
        numeric=("Pending", "In progress", "Dead-lettered"),
    )
    for vs, node, pending, in_progress, age, dead in rows:
        table.add_row(vs, node, str(pending), str(in_progress), _age(age), str(dead))
    table_console().print(table)


# ----------------------------------------------------------- dataloss


@main.command("dataloss")
@config_option
@_VS_OPTION
def dataloss_command(config: Path | None, secrets: Path | None, virtual_storage: str | None) -> None:
    """List repositories whose replicas are not all up to date."""
    settings = load_config_or_exit(config, secrets)
    names = virtual_storages(settings, virtual_storage)

    async def collect(store: RepositoryStore) -> dict[str, list[RepositoryMetadata]]:
        return {vs: await store.outdated_repositories(vs) for vs in names}

    outdated = _run(settings, collect)
    console = table_console()
    if not any(outdated.values()):
        console.print("All repositories are up to date")
        return
    for vs, repositories in outdated.items():
        if not repositories:
            console.print(f"Virtual storage {vs}: all repositories are up to date")
            continue
        table = _table(
            f"Virtual storage {vs}: repositories with outdated replicas",
            "Repository", "Primary", "In-sync replicas", "Outdated replicas",
        )
        for repo in repositories:
            primary = repo.primary + ("" if repo.is_up_to_date(repo.primary) else " (outdated)")
            table.add_row(
                repo.relative_path,
                primary,
                ", ".join(repo.up_to_date) or "none",
                ", ".join(f"{name} ({_changes(behind)})" for name, behind in repo.outdated.items()),
            )
        console.print(table)


# ---------------------------------------------------- track / remove


_PATH_OPTION = click.option(
    "--relative-path", "relative_path", required=True, metavar="PATH",
    help="The repository's relative path, e.g. @hashed/ab/cd/abcd.git.",
)


@main.command("track-repository")
@config_option
@_VS_OPTION
@_PATH_OPTION
@click.option(
    "--authoritative-storage", "authoritative", metavar="NODE",
    help="The node that has the repository; it becomes the primary (default: the configured primary).",
)
def track_repository_command(
    config: Path | None,
    secrets: Path | None,
    virtual_storage: str | None,
    relative_path: str,
    authoritative: str | None,
) -> None:
    """Start tracking a repository that exists on one node; replicate it to the others."""
    settings = load_config_or_exit(config, secrets)
    vs = one_virtual_storage(settings, virtual_storage)
    vs_config = settings.virtual_storage(vs)
    primary = authoritative or vs_config.primary.name
    if primary not in vs_config.node_names:
        fail(f"node {primary!r} is not in virtual storage {vs!r} (it has {', '.join(vs_config.node_names)})")

    async def track(store: RepositoryStore) -> tuple[str, ...]:
        tracked = await store.get(vs, relative_path)
        if tracked is not None:
            fail(str(RepositoryAlreadyTracked(tracked)))
        nodes = NodeClients(endpoints_from_settings(settings))
        try:
            exists = await nodes.exists(vs, relative_path, node=primary, deadline=30)
        except aio.AioRpcError as error:
            fail(f"cannot ask {primary} whether {relative_path!r} exists: {error.code().name}: {error.details()}")
        finally:
            await nodes.close()
        if not exists:
            fail(
                f"repository {relative_path!r} does not exist on {primary}: create it there first, "
                "or name the node that has it with --authoritative-storage"
            )
        try:
            record = await store.track_repository(
                vs, relative_path, primary=primary, assigned=vs_config.node_names
            )
        except RepositoryAlreadyTracked as error:
            fail(str(error))
        return tuple(record.targets)

    targets = _run(settings, track)
    queued = f"replication to {', '.join(targets)} queued" if targets else "no other node"
    click.echo(f"Tracked {relative_path} in {vs}: primary {primary}; {queued}.")


@main.command("remove-repository")
@config_option
@_VS_OPTION
@_PATH_OPTION
@click.option("--apply", is_flag=True, help="Do it (without --apply the command only says what it would do).")
def remove_repository_command(
    config: Path | None,
    secrets: Path | None,
    virtual_storage: str | None,
    relative_path: str,
    apply: bool,
) -> None:
    """Stop tracking a repository and delete it from every node."""
    settings = load_config_or_exit(config, secrets)
    vs = one_virtual_storage(settings, virtual_storage)
    node_names = settings.virtual_storage(vs).node_names

    async def remove(store: RepositoryStore) -> list[str]:
        metadata = await store.get(vs, relative_path)
        if metadata is None:
            fail(f"repository {relative_path!r} is not tracked in virtual storage {vs!r}: nothing to do")
        assert metadata is not None
        if not apply:
            return [
                f"Would stop tracking {relative_path} in {vs} (primary {metadata.primary}, "
                f"generation {metadata.generation}) and delete it from {', '.join(node_names)}.",
                "Run again with --apply to do it.",
            ]
        # Untracked and deletions queued in one call, so nothing is left half-done;
        # the direct calls below only make it quicker.
        await store.record_mutation(
            vs, relative_path, change=ChangeType.DELETE, source="",
            assigned=metadata.assigned, targets=node_names,
        )
        lines = [f"Stopped tracking {relative_path} in {vs}."]
        nodes = NodeClients(endpoints_from_settings(settings))
        try:
            for name in node_names:
                try:
                    removed = await nodes.remove(vs, relative_path, node=name, deadline=60)
                    lines.append(f"{name}: {'deleted' if removed else 'had no replica'}")
                except aio.AioRpcError as error:
                    reason = error.code().name if error.code() != grpc.StatusCode.UNKNOWN else error.details()
                    lines.append(f"{name}: not reachable ({reason}); its replication worker will delete it")
        finally:
            await nodes.close()
        return lines

    for line in _run(settings, remove):
        click.echo(line)


# ---------------------------------------------------------- replicate


@main.command("replicate")
@config_option
@click.option("--id", "worker_id", metavar="NAME", help="Consumer name in the event streams (default: host-pid-random).")
def replicate_command(config: Path | None, secrets: Path | None, worker_id: str | None) -> None:
    """Run replication workers on their own, until SIGTERM or SIGINT.

    They share the work with the routers' workers (same consumer groups), and
    resolve intents left by routers that died.
    """
    settings = load_config_or_exit(config, secrets)

    async def serve() -> None:
        runtime = ReplicationRuntime(
            settings, router_id=worker_id, options=RuntimeOptions(embedded_redis=False)
        )
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(signum, stopping.set)
        await runtime.start()
        workers = len(runtime.workers.workers) if runtime.workers else 0
        print(f"praefect replicate running as {runtime.router_id} with {workers} workers", flush=True)
        try:
            await stopping.wait()
        finally:
            await runtime.stop()

    with process_telemetry("replicate", settings):
        try:
            asyncio.run(serve())
        except (RedisError, OSError, RuntimeError) as error:
            fail(str(error))
    sys.exit(0)
