"""The failover election and copy leases, in Lua against a real Redis.

A candidate with a copy running into it (an unexpired copy lease) is never
elected; when only such candidates qualify the answer is ``busy``, which
is not read-only.
"""

from __future__ import annotations

from praefect.core.mutation import ChangeType
from praefect.plugins.failover.election import Elector
from praefect.plugins.replication.state import RepositoryStore
from tests.support.failover_cluster import NAMES, VS, eventually
from tests.support.failover_commands import repository_after_writes

PATH = "group/leased.git"
LONG = 60.0


async def test_a_leased_candidate_is_not_elected_even_when_it_is_the_most_up_to_date(
    store: RepositoryStore,
    elector: Elector,
) -> None:
    await repository_after_writes(store, PATH, writes=2, generations={"gitaly-2": 2, "gitaly-3": 1})
    await elector.acknowledge(VS, PATH, "gitaly-1", 1)
    await store.take_copy_lease(VS, PATH, "gitaly-2", ttl=LONG)
    election = await elector.elect(VS, PATH, ["gitaly-2", "gitaly-3"], expected="gitaly-1")
    assert (election.status, election.primary) == ("ok", "gitaly-3"), (
        "gitaly-3 has every acknowledged write and no copy running into it"
    )
    assert election.busy == ()


async def test_with_only_leased_candidates_the_election_is_busy_not_read_only(
    store: RepositoryStore,
    elector: Elector,
) -> None:
    await repository_after_writes(store, PATH, writes=1, generations={"gitaly-2": 1, "gitaly-3": 1})
    await store.take_copy_lease(VS, PATH, "gitaly-2", ttl=LONG)
    await store.take_copy_lease(VS, PATH, "gitaly-3", ttl=LONG / 2)
    election = await elector.elect(VS, PATH, ["gitaly-2", "gitaly-3"], expected="gitaly-1")
    assert (election.status, election.primary, election.changed) == ("busy", "gitaly-1", False)
    assert election.busy == ("gitaly-2", "gitaly-3")
    assert LONG - 5 < election.busy_for <= LONG, "until the last of their leases expires"
    metadata = await store.require(VS, PATH)
    assert (metadata.primary, metadata.generation) == ("gitaly-1", 1), "nothing changed"
    # A candidate that does not qualify anyway does not make it busy.
    await store.set_replica_generation(VS, PATH, "gitaly-1", 1)
    await store.record_mutation(VS, PATH, change=ChangeType.UPDATE, source="gitaly-1", assigned=NAMES)
    none = await elector.elect(VS, PATH, ["gitaly-2", "gitaly-3"], expected="gitaly-1")
    assert (none.status, none.busy) == ("none", ())


async def test_the_current_primary_stays_whatever_the_leases_of_others(
    store: RepositoryStore, elector: Elector
) -> None:
    await repository_after_writes(store, PATH, writes=1, generations={"gitaly-2": 1})
    await store.take_copy_lease(VS, PATH, "gitaly-2", ttl=LONG)
    election = await elector.elect(VS, PATH, ["gitaly-2", "gitaly-1"])
    assert (election.status, election.primary) == ("unchanged", "gitaly-1")


async def test_an_expired_lease_no_longer_blocks_the_election(
    store: RepositoryStore, elector: Elector
) -> None:
    # The worker that took it died mid-copy and never released it.
    await repository_after_writes(store, PATH, writes=1, generations={"gitaly-2": 1})
    await store.take_copy_lease(VS, PATH, "gitaly-2", ttl=0.2)
    first = await elector.elect(VS, PATH, ["gitaly-2"], expected="gitaly-1")
    assert first.status == "busy"

    async def elected() -> bool:
        election = await elector.elect(VS, PATH, ["gitaly-2"], expected="gitaly-1")
        return bool(election.primary == "gitaly-2")

    await eventually(elected, within=5, what="the 0.2 s lease to expire and gitaly-2 to be elected")


async def test_one_holder_releasing_does_not_free_a_target_another_still_copies_into(
    store: RepositoryStore,
    elector: Elector,
) -> None:
    await repository_after_writes(store, PATH, writes=1, generations={"gitaly-2": 1})
    first = await store.take_copy_lease(VS, PATH, "gitaly-2", ttl=LONG)
    second = await store.take_copy_lease(VS, PATH, "gitaly-2", ttl=LONG)
    await store.raise_after_copy(VS, PATH, "gitaly-2", 1, source="gitaly-1", lease=first)
    still = await elector.elect(VS, PATH, ["gitaly-2"], expected="gitaly-1")
    assert (still.status, still.busy) == ("busy", ("gitaly-2",)), "the second copy still runs"
    assert await store.release_copy_lease(second)
    done = await elector.elect(VS, PATH, ["gitaly-2"], expected="gitaly-1")
    assert (done.status, done.primary) == ("ok", "gitaly-2")


async def test_no_lease_is_granted_once_the_target_is_elected(
    store: RepositoryStore, elector: Elector
) -> None:
    await repository_after_writes(store, PATH, writes=1, generations={"gitaly-2": 1})
    election = await elector.elect(VS, PATH, ["gitaly-2"], expected="gitaly-1")
    assert election.primary == "gitaly-2"
    lease = await store.take_copy_lease(VS, PATH, "gitaly-2", ttl=LONG)
    assert not lease.granted, "the election came first: nothing may be copied into the primary"
