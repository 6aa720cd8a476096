"""`praefect failover`, `accept-dataloss` and `metadata` against a real Redis.

The commands only read and change state in Redis, so the repositories'
state is set up there directly; the nodes' addresses are never dialled.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import redis.asyncio as aioredis

from praefect.plugins.failover.votes import HealthVotes
from praefect.plugins.replication.state import RepositoryStore
from praefect.plugins.replication.verification_store import VerificationStore
from tests.support.failover_cluster import NAMES, VS
from tests.support.failover_commands import praefect, repository_after_writes


async def repository(
    store: RepositoryStore, path: str, *, writes: int, behind: Mapping[str, int], primary: str = "gitaly-1"
) -> None:
    """Tracked on NAMES with ``primary``; after ``writes`` writes the nodes in ``behind`` lack that many."""
    generations = {name: writes - behind.get(name, 0) for name in NAMES if name != primary}
    await repository_after_writes(store, path, writes=writes, generations=generations, primary=primary)


async def test_failover_moves_current_repositories_and_refuses_an_outdated_target(
    settings_file: Path, store: RepositoryStore
) -> None:
    await repository(store, "a.git", writes=3, behind={"gitaly-3": 2})
    await repository(store, "b.git", writes=2, behind={})
    await repository(store, "c.git", writes=1, behind={}, primary="gitaly-3")
    status, out = await praefect(settings_file, "failover", "--to", "gitaly-3")
    assert status == 1, out
    assert "refused: gitaly-3 is behind by 2 changes, which would be lost" in out
    assert "already the primary" in out and "1 moved, 1 refused, 1 unchanged." in out
    assert [(await store.require(VS, p)).primary for p in ("a.git", "b.git", "c.git")] == [
        "gitaly-1", "gitaly-3", "gitaly-3",
    ]


async def test_forced_failover_to_an_outdated_node_reports_and_accepts_the_loss(
    settings_file: Path, store: RepositoryStore, client: aioredis.Redis
) -> None:
    await repository(store, "a.git", writes=3, behind={"gitaly-3": 2})
    status, out = await praefect(
        settings_file, "failover", "--to", "gitaly-3", "--relative-path", "a.git", "--force"
    )
    assert status == 0, out
    assert "forced: 2 changes lost; gitaly-3 is authoritative at generation 4" in out
    after = await store.require(VS, "a.git")
    assert (after.primary, after.generation, after.up_to_date) == ("gitaly-3", 4, ("gitaly-3",))
    assert await client.hget(store.keys(VS).repository("a.git"), "acked") == "4"
    assert await client.xlen(store.keys(VS).events("gitaly-1")) >= 1, "the others replicate from gitaly-3"


async def test_failover_to_a_node_the_routers_see_down_is_refused(
    settings_file: Path, store: RepositoryStore, client: aioredis.Redis
) -> None:
    await repository(store, "a.git", writes=1, behind={})
    await HealthVotes(client, window=5).vote(VS, "router-1", {"gitaly-2": False})
    status, out = await praefect(settings_file, "failover", "--to", "gitaly-2")
    assert status == 1
    assert "gitaly-2 is down in the routers' health view" in out
    assert (await store.require(VS, "a.git")).primary == "gitaly-1"


async def test_failover_names_unknown_nodes_and_repositories(settings_file: Path, store: RepositoryStore) -> None:
    status, out = await praefect(settings_file, "failover", "--to", "gitaly-9")
    assert status == 1 and "node 'gitaly-9' is not in virtual storage 'praefect'" in out
    status, out = await praefect(settings_file, "failover", "--to", "gitaly-2", "--relative-path", "no.git")
    assert status == 1 and "repository 'no.git' is not tracked" in out


async def test_accept_dataloss_makes_the_chosen_replica_authoritative_and_primary(
    settings_file: Path, store: RepositoryStore, client: aioredis.Redis
) -> None:
    await repository(store, "a.git", writes=4, behind={"gitaly-2": 1, "gitaly-3": 3})
    status, out = await praefect(
        settings_file, "accept-dataloss", "--relative-path", "a.git", "--authoritative-storage", "gitaly-2"
    )
    assert status == 0, out
    assert "gitaly-2 is now authoritative for a.git in praefect at generation 5, and its primary." in out
    assert "Accepted the loss of 1 change that gitaly-2 lacked." in out
    assert "Replication from gitaly-2 to gitaly-1, gitaly-3 is scheduled." in out
    after = await store.require(VS, "a.git")
    assert (after.primary, after.generation, after.up_to_date) == ("gitaly-2", 5, ("gitaly-2",))
    assert await client.hget(store.keys(VS).repository("a.git"), "acked") == "5"


async def test_accept_dataloss_refuses_a_node_without_a_replica(settings_file: Path, store: RepositoryStore) -> None:
    await store.track_repository(VS, "a.git", primary="gitaly-1", assigned=NAMES)
    status, out = await praefect(
        settings_file, "accept-dataloss", "--relative-path", "a.git", "--authoritative-storage", "gitaly-3"
    )
    assert status == 1
    assert "gitaly-3 has no replica of 'a.git': choose a node that has one" in out
    assert (await store.require(VS, "a.git")).generation == 0, "nothing changed"


async def test_metadata_shows_primary_generations_health_and_assignment(
    settings_file: Path, store: RepositoryStore, client: aioredis.Redis
) -> None:
    await repository(store, "a.git", writes=3, behind={"gitaly-3": 2})
    await HealthVotes(client, window=5).vote(VS, "router-1", {"gitaly-1": False})
    await VerificationStore(store).mark(VS, [("gitaly-2", "a.git")])
    status, out = await praefect(settings_file, "metadata", "--relative-path", "a.git")
    assert status == 0, out
    assert "Primary: gitaly-1" in out and "Generation: 3" in out
    assert "Acknowledged generation: 3 (not recorded)" in out
    assert "primary down; failover to gitaly-2 possible" in out
    rows = {line.split()[1]: line for line in out.splitlines() if line.startswith("│ gitaly-")}
    assert "primary" in rows["gitaly-1"] and "no (down since" in rows["gitaly-1"]
    assert "behind by 2 changes" in rows["gitaly-3"] and "yes" in rows["gitaly-3"]
    assert set(rows) == set(NAMES)
    assert "marked, due now" in rows["gitaly-2"], "praefect verify's mark is shown"
    assert rows["gitaly-3"].rstrip("│ ").endswith("-"), "never verified"
