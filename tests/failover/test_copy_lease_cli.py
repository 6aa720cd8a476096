"""`praefect failover`, `accept-dataloss` and `metadata` with a copy running into the node.

The commands run as processes against a real Redis; the copy is a lease
taken in Redis the way a replication worker takes it (the nodes' addresses
are never dialled).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from praefect.plugins.replication.state import RepositoryStore
from tests.support.failover_cluster import VS
from tests.support.failover_commands import (
    COMMAND_TIMEOUT,
    praefect,
    repository_after_writes,
    start_praefect,
)

PATH = "a.git"
LONG = 120.0


async def _repository(store: RepositoryStore) -> None:
    """Primary gitaly-1 after one write; gitaly-2 and gitaly-3 up to date."""
    await repository_after_writes(store, PATH, writes=1, generations={"gitaly-2": 1, "gitaly-3": 1})


async def test_failover_to_a_node_being_copied_into_waits_then_refuses(
    settings_file: Path, store: RepositoryStore
) -> None:
    await _repository(store)
    await store.take_copy_lease(VS, PATH, "gitaly-2", ttl=LONG)
    status, out = await praefect(
        settings_file, "failover", "--to", "gitaly-2", "--relative-path", PATH, "--copy-wait", "0.3"
    )
    assert status == 1, out
    assert "a.git: a copy (replication) into gitaly-2 is running; waiting up to 0." in out
    assert (
        "refused: a copy (replication) into gitaly-2 is still running, and gitaly-2 cannot "
        "become primary before it ends; run again in a moment"
    ) in " ".join(out.split()), out
    assert "Copies into gitaly-2 were still running" in out
    assert "--force to lose what it lacks" not in out, "--force would not help"
    assert (await store.require(VS, PATH)).primary == "gitaly-1", "nothing moved"


async def test_failover_moves_as_soon_as_the_copy_into_the_node_ends(
    settings_file: Path, store: RepositoryStore
) -> None:
    await _repository(store)
    lease = await store.take_copy_lease(VS, PATH, "gitaly-2", ttl=LONG)
    process = await start_praefect(
        settings_file, "failover", "--to", "gitaly-2", "--relative-path", PATH, "--copy-wait", "60"
    )
    assert process.stderr is not None
    line = await asyncio.wait_for(process.stderr.readline(), COMMAND_TIMEOUT)
    assert b"a copy (replication) into gitaly-2 is running; waiting up to" in line, line
    assert await store.release_copy_lease(lease), "the copy ends while the command waits"
    out, _ = await asyncio.wait_for(process.communicate(), COMMAND_TIMEOUT)
    assert process.returncode == 0, out.decode()
    assert "1 moved, 0 refused, 0 unchanged." in out.decode()
    assert (await store.require(VS, PATH)).primary == "gitaly-2"


async def test_accept_dataloss_does_not_make_a_node_being_copied_into_the_primary(
    settings_file: Path, store: RepositoryStore
) -> None:
    await _repository(store)
    await store.take_copy_lease(VS, PATH, "gitaly-3", ttl=LONG)
    status, out = await praefect(
        settings_file, "accept-dataloss", "--relative-path", PATH, "--authoritative-storage", "gitaly-3",
        "--copy-wait", "0.2",
    )
    assert status == 1, out
    flat = " ".join(out.split())
    assert (
        "gitaly-3 is now authoritative for a.git in praefect at generation 2, but not its "
        "primary yet: a copy (replication) into gitaly-3 is still running"
    ) in flat, out
    assert "Run `praefect failover --to gitaly-3 --relative-path a.git` in a moment." in flat
    after = await store.require(VS, PATH)
    assert (after.primary, after.generation, after.up_to_date) == ("gitaly-1", 2, ("gitaly-3",))


async def test_metadata_shows_the_copies_running_into_replicas(settings_file: Path, store: RepositoryStore) -> None:
    await _repository(store)
    status, out = await praefect(settings_file, "metadata", "--relative-path", PATH)
    assert status == 0 and "Copies (replication) running into" not in out, out
    await store.take_copy_lease(VS, PATH, "gitaly-3", ttl=LONG)
    status, out = await praefect(settings_file, "metadata", "--relative-path", PATH)
    assert status == 0, out
    assert "Copies (replication) running into: gitaly-3 (lease expires within" in out, out
    assert "not electable as primary until the copy ends" in out
