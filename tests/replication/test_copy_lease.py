"""Copy leases in Redis: taken before a copy into a target, released with its raise.

A lease keeps every change of primary (set_primary, elect_primary, the
failover plugin's election) from picking a node while a copy into it runs.
Real Redis, the store's own scripts.
"""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from praefect.core.mutation import ChangeType
from praefect.plugins.replication.state import LeaseStatus, RaiseStatus, RepositoryStore
from tests.support.replication_cluster import VS, eventually

NAMES = ("gitaly-1", "gitaly-2", "gitaly-3")
PATH = "lease.git"
LONG = 60.0


async def _repository(store: RepositoryStore, *, generation: int = 1) -> None:
    """Primary gitaly-1 at ``generation``; gitaly-2 and gitaly-3 up to date."""
    await store.track_repository(VS, PATH, primary="gitaly-1", assigned=NAMES)
    for _ in range(generation):
        await store.record_mutation(VS, PATH, change=ChangeType.UPDATE, source="gitaly-1", assigned=NAMES)
    for name in ("gitaly-2", "gitaly-3"):
        await store.set_replica_generation(VS, PATH, name, generation)


async def test_a_lease_is_refused_when_the_target_is_the_primary(store: RepositoryStore) -> None:
    await _repository(store)
    refused = await store.take_copy_lease(VS, PATH, "gitaly-1", ttl=LONG)
    assert (refused.status, refused.granted, refused.lease_id) == (LeaseStatus.TARGET_PRIMARY, False, "")
    assert await store.copy_leases(VS, PATH) == {}, "nothing recorded"
    untracked = await store.take_copy_lease(VS, "never.git", "gitaly-2", ttl=LONG)
    assert untracked.status is LeaseStatus.UNTRACKED
    assert not await store.release_copy_lease(refused), "a refusal holds nothing to release"


async def test_a_lease_holds_until_released_and_stays_in_the_repositorys_hash_slot(
    store: RepositoryStore, client: aioredis.Redis
) -> None:
    await _repository(store)
    lease = await store.take_copy_lease(VS, PATH, "gitaly-2", ttl=LONG)
    assert lease.granted and lease.lease_id
    left = (await store.copy_leases(VS, PATH))["gitaly-2"]
    assert LONG - 5 < left <= LONG, left
    key = store.keys(VS).copy_leases(PATH)
    assert key.startswith(f"praefect:{{{VS}}}:"), "same hash tag as the repository's other keys"
    assert 0 < await client.pttl(key) <= LONG * 1000, "the set expires with its last lease"
    assert await store.release_copy_lease(lease)
    assert await store.copy_leases(VS, PATH) == {}
    assert not await store.release_copy_lease(lease), "releasing twice is harmless"


async def test_releasing_one_holders_lease_keeps_the_others(store: RepositoryStore) -> None:
    await _repository(store)
    first = await store.take_copy_lease(VS, PATH, "gitaly-2", ttl=LONG)
    second = await store.take_copy_lease(VS, PATH, "gitaly-2", ttl=LONG)
    other_target = await store.take_copy_lease(VS, PATH, "gitaly-3", ttl=LONG)
    assert first.lease_id != second.lease_id
    assert await store.release_copy_lease(first)
    assert set(await store.copy_leases(VS, PATH)) == {"gitaly-2", "gitaly-3"}, (
        "the second copy into gitaly-2 still holds its lease"
    )
    # The raise after the second copy releases that copy's lease, and only it.
    raised = await store.raise_after_copy(VS, PATH, "gitaly-2", 1, source="gitaly-1", lease=second)
    assert raised.status is RaiseStatus.UNCHANGED
    assert set(await store.copy_leases(VS, PATH)) == {"gitaly-3"}
    assert await store.release_copy_lease(other_target)


async def test_the_raise_releases_its_lease_whatever_its_outcome(store: RepositoryStore) -> None:
    await _repository(store)
    await store.record_mutation(VS, PATH, change=ChangeType.UPDATE, source="gitaly-1", assigned=NAMES)
    lease = await store.take_copy_lease(VS, PATH, "gitaly-2", ttl=LONG)
    # The source (gitaly-3, generation 1) is below the copy's generation 2: not raised.
    refused = await store.raise_after_copy(VS, PATH, "gitaly-2", 2, source="gitaly-3", lease=lease)
    assert refused.status is RaiseStatus.SOURCE_BEHIND
    assert await store.copy_leases(VS, PATH) == {}, "released although nothing was raised"
    lease = await store.take_copy_lease(VS, PATH, "gitaly-2", ttl=LONG)
    raised = await store.raise_after_copy(VS, PATH, "gitaly-2", 2, source="gitaly-1", lease=lease)
    assert (raised.status, raised.generation) == (RaiseStatus.RAISED, 2)
    assert await store.copy_leases(VS, PATH) == {}
    with pytest.raises(ValueError, match=r"not a lease on a copy of 'lease\.git' into gitaly-3"):
        await store.raise_after_copy(VS, PATH, "gitaly-3", 2, source="gitaly-1", lease=lease)


async def test_set_primary_refuses_a_node_being_copied_into(store: RepositoryStore) -> None:
    await _repository(store)
    lease = await store.take_copy_lease(VS, PATH, "gitaly-2", ttl=LONG)
    busy = await store.set_primary(VS, PATH, "gitaly-2", expected="gitaly-1", up_to_date=True)
    assert (busy.status, busy.primary, busy.changed) == ("busy", "gitaly-1", False)
    assert (await store.require(VS, PATH)).primary == "gitaly-1"
    assert (await store.set_primary(VS, PATH, "gitaly-3")).changed, "another node may move"
    assert await store.release_copy_lease(lease)
    assert (await store.set_primary(VS, PATH, "gitaly-2")).changed, "free once the copy ended"


async def test_elect_primary_skips_leased_candidates_and_says_busy_when_only_they_remain(
    store: RepositoryStore,
) -> None:
    await _repository(store)
    lease = await store.take_copy_lease(VS, PATH, "gitaly-2", ttl=LONG)
    skipped = await store.elect_primary(VS, PATH, ["gitaly-2", "gitaly-3"])
    assert (skipped.status, skipped.primary) == ("ok", "gitaly-3"), "gitaly-2 is being copied into"

    await store.set_primary(VS, PATH, "gitaly-1")
    blocked = await store.take_copy_lease(VS, PATH, "gitaly-3", ttl=LONG)
    busy = await store.elect_primary(VS, PATH, ["gitaly-2", "gitaly-3"])
    assert (busy.status, busy.primary) == ("busy", "gitaly-1")
    await store.release_copy_lease(blocked)
    await store.release_copy_lease(lease)
    assert (await store.elect_primary(VS, PATH, ["gitaly-2", "gitaly-3"])).primary == "gitaly-2"


async def test_an_expired_lease_no_longer_holds_anything_back(store: RepositoryStore) -> None:
    # A worker that died mid-copy never releases its lease: it expires.
    await _repository(store)
    await store.take_copy_lease(VS, PATH, "gitaly-2", ttl=0.2)
    assert (await store.set_primary(VS, PATH, "gitaly-2")).status == "busy"

    async def expired() -> bool:
        return bool((await store.set_primary(VS, PATH, "gitaly-2")).changed)

    await eventually(expired, within=5, what="the 0.2 s lease to expire")
    assert await store.copy_leases(VS, PATH) == {}
