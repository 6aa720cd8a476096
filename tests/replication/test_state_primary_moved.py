"""Writes that reach a node after it stopped being the primary (real Redis, the Lua scripts)."""

from __future__ import annotations

import asyncio

import grpc
import pytest
import redis.asyncio as aioredis

from praefect.core.mutation import ChangeType
from praefect.plugins.replication.embedded_redis import EmbeddedRedis, connect
from praefect.plugins.replication.intents import IntentStore
from praefect.plugins.replication.state import (
    MutationRecord,
    PrimaryCheck,
    PrimaryMoved,
    RepositoryStore,
    StateChange,
)
from tests.support.replication_cluster import replication_events

VS = "praefect"
NODES = ("gitaly-1", "gitaly-2", "gitaly-3")


async def _in_sync_at_generation_2(store: RepositoryStore, path: str) -> None:
    """Primary gitaly-1, every replica at generation 2."""
    await store.record_mutation(VS, path, change=ChangeType.CREATE, source="gitaly-1", assigned=NODES)
    for _ in range(2):
        await store.record_mutation(VS, path, change=ChangeType.UPDATE, source="gitaly-1", assigned=NODES)
    for node in NODES[1:]:
        await store.set_replica_generation(VS, path, node, 2)


async def _write_to(
    store: RepositoryStore,
    path: str,
    node: str,
    *,
    change: ChangeType = ChangeType.UPDATE,
    intent_id: str | None = None,
) -> MutationRecord:
    """What a router records after ``node`` answered OK to a write it routed there."""
    return await store.record_mutation(
        VS, path, change=change, source=node, assigned=NODES, primary=node,
        intent_id=intent_id, check=PrimaryCheck.REPAIR,
    )


async def test_a_write_the_former_primary_took_is_refused_and_its_replica_repaired(
    store: RepositoryStore, client: aioredis.Redis
) -> None:
    await _in_sync_at_generation_2(store, "a.git")
    intents = IntentStore(client)
    intent = await intents.record(
        VS, "a.git", router_id="r1", node="gitaly-1", replicas=NODES[1:], change=ChangeType.UPDATE
    )
    events_before = {node: len(await replication_events(client, node)) for node in NODES}
    # gitaly-2 takes over while the write to gitaly-1 is in flight; then gitaly-1 answers OK.
    assert (await store.set_primary(VS, "a.git", "gitaly-2")).changed
    changes: list[StateChange] = []
    store.on_change = changes.append

    with pytest.raises(PrimaryMoved) as refused:
        await _write_to(store, "a.git", "gitaly-1", intent_id=intent.id)

    error = refused.value
    assert error.code is grpc.StatusCode.ABORTED
    assert error.message == (
        "the primary of 'a.git' moved from gitaly-1 to gitaly-2 while this write was in flight; "
        "the write was not acknowledged and will be undone on gitaly-1: retry it"
    )
    assert (error.node, error.primary, error.repaired) == ("gitaly-1", "gitaly-2", ("gitaly-1",))
    metadata = await store.require(VS, "a.git")
    assert metadata.generation == 2, "a refused write bumps no generation"
    assert metadata.primary == "gitaly-2"
    assert metadata.replica_generation("gitaly-1") == -1, "gitaly-1 holds an unacknowledged change"
    assert metadata.up_to_date == ("gitaly-2", "gitaly-3")
    assert error.metadata == metadata
    [repair] = (await replication_events(client, "gitaly-1"))[events_before["gitaly-1"]:]
    assert (repair.change, repair.source, repair.target, repair.generation) == (
        ChangeType.UPDATE, "gitaly-2", "gitaly-1", 2,
    )
    assert repair.sequence == metadata.version, "the repair is the newest event of gitaly-1"
    for node in NODES[1:]:
        assert len(await replication_events(client, node)) == events_before[node], f"nothing queued for {node}"
    assert await intents.list(VS) == [], "the intent is cleared in the same call"
    assert [change.metadata for change in changes] == [metadata], "the local view follows at once"


async def test_the_repair_comes_from_the_primary_even_while_it_trails_the_repository(
    store: RepositoryStore, client: aioredis.Redis
) -> None:
    # An election made gitaly-2 primary at generation 1 and has not made it
    # authoritative yet: the repair still copies gitaly-2, not some other node.
    await _in_sync_at_generation_2(store, "t.git")
    await store.record_mutation(
        VS, "t.git", change=ChangeType.UPDATE, source="gitaly-1", assigned=NODES, targets=()
    )
    await store.set_primary(VS, "t.git", "gitaly-2")
    with pytest.raises(PrimaryMoved):
        await _write_to(store, "t.git", "gitaly-1")
    repair = (await replication_events(client, "gitaly-1"))[-1]
    assert (repair.source, repair.generation) == ("gitaly-2", 2)


async def test_a_delete_the_former_primary_took_leaves_the_repository_tracked_and_repairs_it(
    store: RepositoryStore, client: aioredis.Redis
) -> None:
    await _in_sync_at_generation_2(store, "d.git")
    await store.set_primary(VS, "d.git", "gitaly-3")
    with pytest.raises(PrimaryMoved):
        await _write_to(store, "d.git", "gitaly-1", change=ChangeType.DELETE)
    metadata = await store.require(VS, "d.git")
    assert await store.list_paths(VS) == ["d.git"]
    assert (metadata.generation, metadata.replica_generation("gitaly-1")) == (2, -1)
    repair = (await replication_events(client, "gitaly-1"))[-1]
    assert (repair.change, repair.source) == (ChangeType.UPDATE, "gitaly-3"), "recreated from gitaly-3"


async def test_a_write_to_the_primary_and_a_new_repository_are_recorded_as_before(
    store: RepositoryStore, client: aioredis.Redis
) -> None:
    created = await _write_to(store, "n.git", "gitaly-2", change=ChangeType.CREATE)
    assert created.generation == 0
    assert (await store.require(VS, "n.git")).primary == "gitaly-2"
    updated = await _write_to(store, "n.git", "gitaly-2")
    assert updated.generation == 1
    assert [e.source for e in await replication_events(client, "gitaly-1")] == ["gitaly-2", "gitaly-2"]


async def test_refuse_only_changes_nothing(store: RepositoryStore, client: aioredis.Redis) -> None:
    await _in_sync_at_generation_2(store, "r.git")
    before = await store.require(VS, "r.git")
    events_before = await replication_events(client, "gitaly-3")
    with pytest.raises(PrimaryMoved, match="is gitaly-1, no longer gitaly-3: nothing was changed") as refused:
        await store.set_authoritative(VS, "r.git", "gitaly-3", only_if_primary=True)
    assert refused.value.repaired == ()
    assert await store.require(VS, "r.git") == before
    assert await replication_events(client, "gitaly-3") == events_before
    # unguarded (accept-dataloss before it moves the primary) it still works
    record = await store.set_authoritative(VS, "r.git", "gitaly-3")
    assert record.generation == 3


async def test_a_failover_between_concurrent_writes_splits_them_cleanly(
    store: RepositoryStore, client: aioredis.Redis, redis_server: EmbeddedRedis
) -> None:
    """Every write recorded before the move, every write refused after it: none in between."""
    await _in_sync_at_generation_2(store, "busy.git")
    other_client = connect(redis_server.url)
    other = RepositoryStore(other_client)
    outcomes: list[tuple[str, int]] = []

    some_recorded = asyncio.Event()

    async def write(number: int) -> None:
        try:
            record = await _write_to(store if number % 2 else other, "busy.git", "gitaly-1")
        except PrimaryMoved as moved:
            outcomes.append(("moved", moved.metadata.version))
        else:
            outcomes.append(("ok", record.version))
        if len(outcomes) == 20:
            some_recorded.set()

    async def fail_over_then_write() -> None:
        # The move lands among writes in flight; the writes after it are refused.
        await some_recorded.wait()
        assert (await other.set_primary(VS, "busy.git", "gitaly-2")).changed
        await asyncio.gather(*(write(n) for n in range(50, 100)))

    try:
        await asyncio.gather(*(write(n) for n in range(50)), fail_over_then_write())
    finally:
        await other_client.aclose()
    recorded = [version for status, version in outcomes if status == "ok"]
    refused = [version for status, version in outcomes if status == "moved"]
    assert len(recorded) + len(refused) == 100
    assert len(recorded) >= 20 and len(refused) >= 50
    assert not recorded or max(recorded) < min(refused)
    metadata = await store.require(VS, "busy.git")
    assert metadata.generation == 2 + len(recorded)
    assert metadata.primary == "gitaly-2"
    assert metadata.replica_generation("gitaly-1") == -1
    repairs = [e for e in await replication_events(client, "gitaly-1") if e.source == "gitaly-2"]
    assert len(repairs) == len(refused)


async def test_a_new_primary_must_be_up_to_date_when_asked(store: RepositoryStore) -> None:
    await _in_sync_at_generation_2(store, "m.git")
    # a write recorded after the caller looked: gitaly-2 is behind now
    await store.record_mutation(VS, "m.git", change=ChangeType.UPDATE, source="gitaly-1", assigned=NODES)
    behind = await store.set_primary(VS, "m.git", "gitaly-2", expected="gitaly-1", up_to_date=True)
    assert (behind.status, behind.primary) == ("behind", "gitaly-1")
    await store.set_replica_generation(VS, "m.git", "gitaly-2", 3)
    moved = await store.set_primary(VS, "m.git", "gitaly-2", expected="gitaly-1", up_to_date=True)
    assert (moved.status, moved.primary) == ("ok", "gitaly-2")
