"""``praefect verify``: have replicas checked for existence now, not in days.

The verification workers (every router, every ``praefect replicate``) check
each replica every ``replication.verification_interval``. After an incident
(a node's disk replaced by an empty one) that is far too late: this command
marks the replicas of a node, or of one repository, so that the workers
check them before any other, within seconds. It only marks (in Redis, like
the other admin commands, with the router's ``--config``); the workers do
the checking, and a replica found missing loses its generation and is
repaired from an up-to-date one (see ``docs/replication.md``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click
import redis.asyncio as aioredis
from rich.table import Table

from praefect.core.cli import main as _main
from praefect.core.cli.console import one_virtual_storage, table_console
from praefect.core.cli.options import config_option as _config_option
from praefect.core.cli.options import load_config_or_exit
from praefect.core.cli.redis_access import fail, run_on_redis
from praefect.plugins.replication.state import RepositoryMetadata, RepositoryStore
from praefect.plugins.replication.verification_store import (
    ReplicaVerification,
    VerificationStore,
    describe_verification,
)

# Typed names for the shared group and option (mypy run on file paths cannot
# follow the editable install's praefect.* imports and would see Any).
main: click.Group = _main
config_option: Callable[[Callable[..., None]], Callable[..., None]] = _config_option


@dataclass(frozen=True, slots=True)
class _NodeMarks:
    marked: int
    #: repositories assigned to the node whose replica there has no generation
    without_replica: int


@dataclass(frozen=True, slots=True)
class _RepositoryMarks:
    repository: RepositoryMetadata
    #: the replicas' entries before the mark
    before: dict[str, ReplicaVerification]


@main.command("verify")
@config_option
@click.option(
    "--virtual-storage", "virtual_storage", metavar="NAME",
    help="The virtual storage (needed when several are configured).",
)
@click.option(
    "--node", "node", metavar="NODE",
    help="Every replica on this node: run it right after replacing the node's disk.",
)
@click.option(
    "--relative-path", "relative_path", metavar="PATH",
    help="Every replica of this repository.",
)
def verify_command(
    config: Path | None,
    secrets: Path | None,
    virtual_storage: str | None,
    node: str | None,
    relative_path: str | None,
) -> None:
    """Mark replicas to be checked for existence before any other.

    The verification workers of the routers and of `praefect replicate`
    check marked replicas first, within seconds: a replica its node no
    longer has loses its generation (no reads go to it, it cannot become
    primary) and is replicated again from an up-to-date one. Give --node
    NODE (every replica on NODE) or --relative-path PATH (every replica of
    one repository).
    """
    if (node is None) == (relative_path is None):
        raise click.UsageError("give --node NODE or --relative-path PATH (one of them)")
    settings = load_config_or_exit(config, secrets)
    vs = one_virtual_storage(settings, virtual_storage)
    if node is not None:
        names = settings.virtual_storage(vs).node_names
        if node not in names:
            fail(f"node {node!r} is not in virtual storage {vs!r} (it has {', '.join(names)})")
        marks = run_on_redis(settings, lambda client: _mark_node(client, vs, node))
        _print_node(vs, node, marks)
    else:
        assert relative_path is not None
        path = relative_path
        result = run_on_redis(settings, lambda client: _mark_repository(client, vs, path))
        _print_repository(result)
    if settings.replication.verification_interval <= 0:
        click.echo(
            "praefect: note: replication.verification_interval is 0 in these settings, which "
            "turns verification off: the marks wait until a router or `praefect replicate` "
            "runs with verification on",
            err=True,
        )


async def _mark_node(client: aioredis.Redis, vs: str, node: str) -> _NodeMarks:
    store = RepositoryStore(client)
    holding: list[str] = []
    without = 0
    for repo in await store.list_repositories(vs):
        if node not in repo.assigned:
            continue
        if repo.replica_generation(node) >= 0:
            holding.append(repo.relative_path)
        else:
            without += 1
    marked = await VerificationStore(store).mark(vs, [(node, path) for path in holding])
    return _NodeMarks(marked, without)


async def _mark_repository(client: aioredis.Redis, vs: str, path: str) -> _RepositoryMarks:
    store = RepositoryStore(client)
    repo = await store.get(vs, path)
    if repo is None:
        fail(f"repository {path!r} is not tracked in virtual storage {vs!r}: nothing to verify")
    assert repo is not None
    verifications = VerificationStore(store)
    holding = [name for name in repo.assigned if repo.replica_generation(name) >= 0]
    before = await verifications.entries(vs, path, holding)
    await verifications.mark(vs, [(name, path) for name in holding])
    return _RepositoryMarks(repo, before)


def _print_node(vs: str, node: str, marks: _NodeMarks) -> None:
    if marks.marked == 0 and marks.without_replica == 0:
        click.echo(f"{node} holds no replica in virtual storage {vs}: nothing to verify.")
        return
    noun = "replica" if marks.marked == 1 else "replicas"
    click.echo(f"Marked {marks.marked} {noun} on {node} in {vs} for verification.")
    if marks.without_replica:
        click.echo(
            f"{marks.without_replica} more repositories assigned to {node} have no replica there "
            "yet (being replicated, or already found missing): nothing to verify."
        )
    if marks.marked:
        click.echo(
            "The verification workers check them before any other; a replica found missing is "
            "replicated again from an up-to-date one. Follow the repair with `praefect dataloss`."
        )


def _print_repository(result: _RepositoryMarks) -> None:
    repo = result.repository
    table = Table(title=f"Replicas of {repo.relative_path} in {repo.virtual_storage}")
    for column in ("Storage", "Role", "Generation", "Verified before", "Marked"):
        table.add_column(column, overflow="fold")
    for name in repo.assigned:
        have = repo.replica_generation(name)
        role = "primary" if name == repo.primary else "replica"
        if have < 0:
            table.add_row(name, role, "-", "-", "no: no replica yet (nothing to verify)")
            continue
        table.add_row(
            name, role, str(have), describe_verification(result.before.get(name)), "yes"
        )
    table_console().print(table)
    marked = len(result.before)
    noun = "replica" if marked == 1 else "replicas"
    click.echo(
        f"Marked {marked} {noun} for verification; the verification workers check them before "
        "any other."
    )
