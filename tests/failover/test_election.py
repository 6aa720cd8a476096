"""Elections and acknowledgements against a real Redis, with the replication plugin's state."""

from __future__ import annotations

import redis.asyncio as aioredis

from praefect.core.routing_types import NodeRef
from praefect.plugins.failover.election import Elector, failover_candidate
from praefect.plugins.replication.cache import StateCache
from praefect.plugins.replication.state import RepositoryStore
from tests.support.failover_cluster import VS
from tests.support.failover_commands import repository_after_writes

PATH = "group/app.git"


async def _acked(client: aioredis.Redis) -> str | None:
    value = await client.hget(RepositoryStore(client).keys(VS).repository(PATH), "acked")
    return None if value is None else str(value)


async def test_without_acknowledgements_only_a_replica_at_the_generation_qualifies(
    store: RepositoryStore, elector: Elector
) -> None:
    await repository_after_writes(store, PATH, writes=3, generations={"gitaly-2": 2, "gitaly-3": 3})
    election = await elector.elect(VS, PATH, ["gitaly-2", "gitaly-3"], expected="gitaly-1")
    assert (election.status, election.primary, election.previous) == ("ok", "gitaly-3", "gitaly-1")
    assert (await store.require(VS, PATH)).primary == "gitaly-3"


async def test_a_replica_lacking_only_unacknowledged_writes_is_elected_and_made_authoritative(
    store: RepositoryStore, elector: Elector, client: aioredis.Redis
) -> None:
    await repository_after_writes(store, PATH, writes=3, generations={"gitaly-2": 2, "gitaly-3": 1})
    assert await elector.acknowledge(VS, PATH, "gitaly-1", 2) == ("ok", "gitaly-1")
    election = await elector.elect(VS, PATH, ["gitaly-3", "gitaly-2"], expected="gitaly-1")
    assert (election.status, election.primary) == ("ok", "gitaly-2"), "the most up-to-date one wins"
    assert (election.primary_generation, election.generation) == (2, 3)
    after = await store.require(VS, PATH)
    # gitaly-2's copy became the repository's: a new generation that only it has
    assert after.generation == 4 and after.up_to_date == ("gitaly-2",)
    assert await client.xlen(store.keys(VS).events("gitaly-3")) >= 1, "gitaly-3 replicates from gitaly-2"


async def test_no_replica_with_every_acknowledged_write_means_read_only(
    store: RepositoryStore, elector: Elector
) -> None:
    await repository_after_writes(store, PATH, writes=2, generations={"gitaly-2": 1, "gitaly-3": 1})
    await elector.acknowledge(VS, PATH, "gitaly-1", 2)
    election = await elector.elect(VS, PATH, ["gitaly-2", "gitaly-3"], expected="gitaly-1")
    assert (election.status, election.primary) == ("none", "gitaly-1")
    assert (await store.require(VS, PATH)).primary == "gitaly-1", "nothing changed"


async def test_the_current_primary_stays_when_it_qualifies(
    store: RepositoryStore, elector: Elector
) -> None:
    await repository_after_writes(store, PATH, writes=2, generations={"gitaly-2": 2, "gitaly-3": 2})
    election = await elector.elect(VS, PATH, ["gitaly-2", "gitaly-1", "gitaly-3"])
    assert (election.status, election.primary) == ("unchanged", "gitaly-1")


async def test_an_election_expecting_another_primary_changes_nothing(
    store: RepositoryStore, elector: Elector
) -> None:
    await repository_after_writes(store, PATH, writes=1, generations={"gitaly-2": 1, "gitaly-3": 1})
    first = await elector.elect(VS, PATH, ["gitaly-2", "gitaly-3"], expected="gitaly-1")
    late = await elector.elect(VS, PATH, ["gitaly-3"], expected="gitaly-1")
    assert (first.status, first.primary) == ("ok", "gitaly-2")
    assert (late.status, late.primary) == ("conflict", "gitaly-2")
    assert (await store.require(VS, PATH)).primary == "gitaly-2"


async def test_unassigned_nodes_and_untracked_repositories_are_never_elected(
    store: RepositoryStore, elector: Elector
) -> None:
    assert (await elector.elect(VS, "nothing.git", ["gitaly-2"])).status == "untracked"
    await store.track_repository(VS, PATH, primary="gitaly-1", assigned=("gitaly-1", "gitaly-2"))
    await store.set_replica_generation(VS, PATH, "gitaly-2", 0)
    assert (await elector.elect(VS, PATH, ["gitaly-3"], expected="gitaly-1")).status == "none"


async def test_acknowledging_after_the_primary_moved_is_refused(
    store: RepositoryStore, elector: Elector, client: aioredis.Redis
) -> None:
    await repository_after_writes(store, PATH, writes=1, generations={"gitaly-2": 1})
    assert await elector.acknowledge(VS, PATH, "gitaly-1", 1) == ("ok", "gitaly-1")
    assert await elector.acknowledge(VS, PATH, "gitaly-1", 0) == ("ok", "gitaly-1")
    assert await _acked(client) == "1", "the acknowledged generation never goes down"
    await store.set_primary(VS, PATH, "gitaly-2")
    assert await elector.acknowledge(VS, PATH, "gitaly-1", 2) == ("moved", "gitaly-2")
    assert await _acked(client) == "1"
    assert await elector.acknowledge(VS, "gone.git", "gitaly-1", 2) == ("untracked", "")


async def test_an_election_reaches_every_routers_state_cache(
    store: RepositoryStore, elector: Elector
) -> None:
    await repository_after_writes(store, PATH, writes=1, generations={"gitaly-2": 1, "gitaly-3": 1})
    other_router = StateCache(RepositoryStore(store.client), [VS])
    await other_router.start()
    try:
        election = await elector.elect(VS, PATH, ["gitaly-3", "gitaly-2"], expected="gitaly-1")
        await other_router.wait_for_version(VS, election.version)
        cached = other_router.get(VS, PATH)
        assert cached is not None and cached.primary == "gitaly-3"
    finally:
        await other_router.stop()


async def test_the_routing_candidate_is_the_most_up_to_date_healthy_assigned_replica(
    store: RepositoryStore,
) -> None:
    await repository_after_writes(store, PATH, writes=2, generations={"gitaly-2": 1, "gitaly-3": 2})
    metadata = await store.require(VS, PATH)
    two, three, four = (NodeRef(VS, name, f"tcp://h:{i}") for i, name in enumerate(("gitaly-2", "gitaly-3", "gitaly-4")))
    assert failover_candidate(metadata, [two, three, four]) == three
    assert failover_candidate(metadata, [two, four]) == two
    assert failover_candidate(metadata, [four]) is None
