"""Failover commands: ``praefect failover``, ``accept-dataloss``, ``metadata``.

Like the replication commands they work on Redis directly with the router's
settings (``--config``): ``redis.url``, or the socket of the embedded Redis
that a running router owns in ``redis.data_dir``. Every change goes through
the same atomic scripts the routers use, and the routers' state caches
follow it within milliseconds.

A node with a copy (replication) running into it cannot be made primary:
the copy would overwrite the writes it takes as primary (see the copy
leases of :mod:`praefect.plugins.replication.state`). ``failover`` and
``accept-dataloss`` wait a few seconds for such a copy to end, then refuse
with a message that says so: copies are usually short, and an operator's
command should neither hang on a long one nor move the primary under it.
The moves and their checks are :mod:`praefect.plugins.failover.moves`;
this module reads the command line and prints.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import click
import redis.asyncio as aioredis
from rich.table import Table

from praefect.core.cli import main as _main
from praefect.core.cli.console import one_virtual_storage, table_console
from praefect.core.cli.options import config_option as _config_option
from praefect.core.cli.options import load_config_or_exit
from praefect.core.cli.redis_access import FAILURE, fail, run_on_redis
from praefect.plugins.failover.election import Elector
from praefect.plugins.failover.moves import DEFAULT_COPY_WAIT, Move, PrimaryMover, count_changes
from praefect.plugins.failover.votes import HealthVotes, NodeView
from praefect.plugins.replication.state import PrimaryChange, RepositoryMetadata, RepositoryStore
from praefect.plugins.replication.verification_store import (
    ReplicaVerification,
    VerificationStore,
    describe_verification,
)
from praefect.settings import Config

T = TypeVar("T")

# Typed names for the shared group and option (mypy run on file paths cannot
# follow the editable install's praefect.* imports and would see Any).
main: click.Group = _main
config_option: Callable[[Callable[..., None]], Callable[..., None]] = _config_option


@dataclass(frozen=True, slots=True)
class _Redis:
    store: RepositoryStore
    votes: HealthVotes
    mover: PrimaryMover


def _say_copy_wait(path: str, target: str, seconds: float) -> None:
    click.echo(
        f"{path}: a copy (replication) into {target} is running; waiting up to "
        f"{seconds:.1f} s for it to end",
        err=True,
    )


def _run(settings: Config, work: Callable[[_Redis], Awaitable[T]]) -> T:
    """Run ``work`` on the settings' Redis; Redis trouble exits with a message."""

    async def with_state(client: aioredis.Redis) -> T:
        store = RepositoryStore(client)
        votes = HealthVotes(client, window=settings.failover.vote_window)
        mover = PrimaryMover(Elector(store, votes.scripts), on_copy_wait=_say_copy_wait)
        return await work(_Redis(store, votes, mover))

    return run_on_redis(settings, with_state)


def _node(settings: Config, vs: str, name: str) -> str:
    nodes: tuple[str, ...] = settings.virtual_storage(vs).node_names
    if name not in nodes:
        fail(f"node {name!r} is not in virtual storage {vs!r} (it has {', '.join(nodes)})")
    return name


_VS_OPTION = click.option(
    "--virtual-storage", "virtual_storage", metavar="NAME",
    help="The virtual storage (needed when several are configured).",
)


_PATH_OPTION = click.option(
    "--relative-path", "relative_path", required=True, metavar="PATH",
    help="The repository's relative path.",
)


_COPY_WAIT_OPTION = click.option(
    "--copy-wait", "copy_wait", type=click.FloatRange(min=0), default=DEFAULT_COPY_WAIT,
    show_default=True, metavar="SECONDS",
    help="How long to wait, in all, for copies (replication) running into the new primary to end; "
    "a repository still being copied into then keeps its primary.",
)


# ------------------------------------------------------------- failover


@main.command("failover")
@config_option
@_VS_OPTION
@click.option("--to", "target", required=True, metavar="NODE", help="The node that becomes primary.")
@click.option(
    "--relative-path", "relative_path", metavar="PATH",
    help="Only this repository (default: every repository of the virtual storage).",
)
@click.option(
    "--force", is_flag=True,
    help="Also move repositories of which NODE is outdated: the changes it lacks are lost.",
)
@_COPY_WAIT_OPTION
def failover_command(
    config: Path | None,
    secrets: Path | None,
    virtual_storage: str | None,
    target: str,
    relative_path: str | None,
    force: bool,
    copy_wait: float,
) -> None:
    """Make NODE the primary of one repository or of all of them.

    A repository of which NODE is behind is refused (and listed with the
    changes it lacks) unless --force: then NODE's copy becomes authoritative,
    the other replicas are replicated from it, and the listed changes are
    lost. A node the routers see down is refused. While a copy
    (replication) into NODE is running, NODE cannot become primary: the
    command waits up to --copy-wait seconds for it to end, then refuses.
    """
    settings = load_config_or_exit(config, secrets)
    vs = one_virtual_storage(settings, virtual_storage)
    _node(settings, vs, target)

    async def move_all(redis: _Redis) -> list[Move]:
        until = time.monotonic() + copy_wait
        view = await redis.votes.view(vs)
        state = view.get(target)
        if state is not None and not state.healthy:
            fail(
                f"{target} is down in the routers' health view (since {_when(state)}): "
                "choose a healthy node, or wait until it is back"
            )
        if relative_path is not None:
            repositories = [await redis.store.get(vs, relative_path)]
            if repositories[0] is None:
                fail(f"repository {relative_path!r} is not tracked in virtual storage {vs!r}")
        else:
            repositories = list(await redis.store.list_repositories(vs))
        return [
            await redis.mover.move(repo, target, force=force, copy_wait_until=until)
            for repo in repositories
            if repo is not None
        ]

    moves = _run(settings, move_all)
    if not moves:
        click.echo(f"Virtual storage {vs} tracks no repositories: nothing to move.")
        return
    table = Table(title=f"Failover of virtual storage {vs} to {target}")
    for column in ("Repository", "Primary before", "Result"):
        table.add_column(column)
    for move in moves:
        table.add_row(move.path, move.before, move.result)
    console = table_console()
    console.print(table)
    refused = [move for move in moves if move.refused]
    moved = sum(1 for move in moves if move.moved)
    console.print(f"{moved} moved, {len(refused)} refused, {len(moves) - moved - len(refused)} unchanged.")
    if refused:
        if any(not move.busy for move in refused):
            console.print(
                "Refused repositories keep their primary. Wait until replication brings "
                f"{target} up to date, or run again with --force to lose what it lacks."
            )
        if any(move.busy for move in refused):
            console.print(
                f"Copies into {target} were still running: it becomes primary of those "
                "repositories only after they end (`praefect metadata` shows them). Run again "
                "in a moment, or with a longer --copy-wait."
            )
        raise SystemExit(FAILURE)


# ------------------------------------------------------- accept-dataloss


@main.command("accept-dataloss")
@config_option
@_VS_OPTION
@_PATH_OPTION
@click.option(
    "--authoritative-storage", "authoritative", required=True, metavar="NODE",
    help="The node whose copy becomes the repository's.",
)
@_COPY_WAIT_OPTION
def accept_dataloss_command(
    config: Path | None,
    secrets: Path | None,
    virtual_storage: str | None,
    relative_path: str,
    authoritative: str,
    copy_wait: float,
) -> None:
    """Make NODE's copy of a repository authoritative, accepting what it lacks.

    NODE's replica gets a new generation of the repository and becomes its
    primary; every other replica is outdated and replicated from NODE. Use it
    for a repository that `praefect dataloss` lists as read-only because no
    up-to-date replica is healthy. While a copy (replication) into NODE is
    running, NODE cannot become primary: the command waits up to
    --copy-wait seconds for it to end.
    """
    settings = load_config_or_exit(config, secrets)
    vs = one_virtual_storage(settings, virtual_storage)
    _node(settings, vs, authoritative)

    async def accept(redis: _Redis) -> list[str]:
        repo = await redis.store.get(vs, relative_path)
        if repo is None:
            fail(f"repository {relative_path!r} is not tracked in virtual storage {vs!r}")
        assert repo is not None
        if authoritative not in repo.assigned:
            fail(
                f"{authoritative} holds no replica of {relative_path!r} (assigned: "
                f"{', '.join(repo.assigned)})"
            )
        have = repo.replica_generation(authoritative)
        if have < 0:
            fail(f"{authoritative} has no replica of {relative_path!r}: choose a node that has one")
        record = await redis.store.set_authoritative(vs, relative_path, authoritative)
        until = time.monotonic() + copy_wait
        change: PrimaryChange | None = None
        for _ in range(5):
            current = await redis.store.require(vs, relative_path)
            if current.primary == authoritative:
                change = None
                break
            change = await redis.mover.set_primary(
                vs, relative_path, authoritative, expected=current.primary,
                up_to_date=False, until=until,
            )
            if change.status != "conflict":
                break
        if change is not None and change.status == "busy":
            fail(
                f"{authoritative} is now authoritative for {relative_path} in {vs} at generation "
                f"{record.generation}, but not its primary yet: a copy (replication) into "
                f"{authoritative} is still running, and it cannot become primary before that "
                f"copy ends. Run `praefect failover --to {authoritative} --relative-path "
                f"{relative_path}` in a moment."
            )
        await redis.mover.elector.acknowledge(vs, relative_path, authoritative, record.generation)
        lines = [
            f"{authoritative} is now authoritative for {relative_path} in {vs} at generation "
            f"{record.generation}, and its primary."
        ]
        if repo.generation > have:
            lines.append(
                f"Accepted the loss of {count_changes(repo.generation - have)} that {authoritative} lacked."
            )
        if record.targets:
            lines.append(f"Replication from {authoritative} to {', '.join(record.targets)} is scheduled.")
        return lines

    for line in _run(settings, accept):
        click.echo(line)


# -------------------------------------------------------------- metadata


@main.command("metadata")
@config_option
@_VS_OPTION
@_PATH_OPTION
def metadata_command(
    config: Path | None, secrets: Path | None, virtual_storage: str | None, relative_path: str
) -> None:
    """Show a repository's primary, generation, and per replica its state."""
    settings = load_config_or_exit(config, secrets)
    vs = one_virtual_storage(settings, virtual_storage)

    configured = settings.virtual_storage(vs).node_names

    async def read(redis: _Redis) -> _RepositoryView:
        repo = await redis.store.get(vs, relative_path)
        if repo is None:
            fail(f"repository {relative_path!r} is not tracked in virtual storage {vs!r}")
        assert repo is not None
        acked = await redis.store.client.hget(redis.store.keys(vs).repository(relative_path), "acked")
        names = list(dict.fromkeys((*configured, *repo.assigned, *repo.replica_generations)))
        return _RepositoryView(
            repo,
            int(acked) if acked is not None else None,
            await redis.votes.view(vs),
            await redis.store.copy_leases(vs, relative_path),
            await VerificationStore(redis.store).entries(vs, relative_path, names),
            names,
        )

    seen = _run(settings, read)
    repo, acked, view, copies, names = seen.repo, seen.acked, seen.view, seen.copies, seen.names
    console = table_console()
    console.print(f"Repository {relative_path} in virtual storage {vs}")
    console.print(f"  Primary: {repo.primary}")
    console.print(f"  Generation: {repo.generation}")
    floor = repo.generation if acked is None else min(acked, repo.generation)
    console.print(f"  Acknowledged generation: {floor}" + (" (not recorded)" if acked is None else ""))
    healthy_ok = [
        name for name in names
        if _healthy(view, name) and name in repo.assigned and repo.replica_generation(name) >= floor
    ]
    if _healthy(view, repo.primary):
        state = "writable"
    elif healthy_ok:
        state = f"primary down; failover to {', '.join(healthy_ok)} possible"
    else:
        state = "read-only: no up-to-date replica is healthy (see `praefect accept-dataloss`)"
    console.print(f"  State: {state}")
    if copies:
        running = ", ".join(
            f"{name} (lease expires within {left:.0f} s)" for name, left in sorted(copies.items())
        )
        console.print(
            f"  Copies (replication) running into: {running}; not electable as primary until "
            "the copy ends"
        )
    table = Table(title="Replicas")
    for column in ("Storage", "Role", "Generation", "Up to date", "Healthy", "Assigned", "Verified"):
        table.add_column(column)
    for name in names:
        have = repo.replica_generation(name)
        if have < 0:
            freshness = "no replica"
        elif have == repo.generation:
            freshness = "yes"
        else:
            freshness = f"behind by {count_changes(repo.generation - have)}"
        node_state = view.get(name)
        health = "yes" if _healthy(view, name) else f"no (down since {_when(node_state)})"
        if name not in configured:
            health = "not configured"
        table.add_row(
            name,
            "primary" if name == repo.primary else "replica",
            str(have) if have >= 0 else "-",
            freshness,
            health,
            "yes" if name in repo.assigned else "no",
            describe_verification(seen.verified.get(name)),
        )
    console.print(table)


@dataclass(frozen=True, slots=True)
class _RepositoryView:
    """What `praefect metadata` read of one repository."""

    repo: RepositoryMetadata
    acked: int | None
    view: dict[str, NodeView]
    copies: dict[str, float]
    verified: dict[str, ReplicaVerification]
    names: list[str]


def _healthy(view: dict[str, NodeView], name: str) -> bool:
    state = view.get(name)
    return state is None or state.healthy


def _when(state: NodeView | None) -> str:
    if state is None or not state.since_ms:
        return "unknown"
    seconds = max(0.0, time.time() - state.since_ms / 1000)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(state.since_ms / 1000))
    return f"{stamp}, {seconds:.0f} s ago"
