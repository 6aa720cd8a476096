from __future__ import annotations

import asyncio
import json

import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot
from redis.exceptions import ResponseError

from praefect.core.mutation import ChangeType
from praefect.plugins.replication.embedded_redis import EmbeddedRedis, connect
from praefect.plugins.replication.intents import IntentStore
from praefect.plugins.replication.keys import VirtualStorageKeys
from praefect.plugins.replication.state import (
    RepositoryAlreadyTracked,
    RepositoryNotTracked,
    RepositoryStore,
)
from tests.support.replication_cluster import replication_events, stream_entries

VS = "praefect"
NODES = ("gitaly-1", "gitaly-2", "gitaly-3")
KEYS = VirtualStorageKeys(VS)


async def test_create_tracks_the_repository_with_its_primary_and_queues_the_replicas(
    store: RepositoryStore, client: aioredis.Redis
) -> None:
    record = await store.record_mutation(
        VS, "a/b.git", change=ChangeType.CREATE, source="gitaly-1", assigned=NODES,
        trace_context={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
    )
    assert record.generation == 0
    assert record.targets == ("gitaly-2", "gitaly-3")
    metadata = await store.get(VS, "a/b.git")
    assert metadata is not None
    assert metadata.primary == "gitaly-1"
    assert metadata.assigned == NODES
    assert metadata.generation == 0
    assert dict(metadata.replica_generations) == {"gitaly-1": 0}
    assert metadata.up_to_date == ("gitaly-1",)
    assert metadata.outdated == {"gitaly-2": 1, "gitaly-3": 1}
    assert await store.list_paths(VS) == ["a/b.git"]
    for target in ("gitaly-2", "gitaly-3"):
        [event] = await replication_events(client, target)
        assert (event.change, event.source, event.target, event.generation) == (
            ChangeType.CREATE, "gitaly-1", target, 0,
        )
        assert event.trace_context["traceparent"].startswith("00-0af7651916cd43dd")
    assert await client.exists(KEYS.events("gitaly-1")) == 0, "no event for the source itself"


async def test_concurrent_mutations_lose_no_increment(
    store: RepositoryStore, client: aioredis.Redis, redis_server: EmbeddedRedis
) -> None:
    await store.record_mutation(VS, "busy.git", change=ChangeType.CREATE, source="gitaly-1", assigned=NODES)
    # Two clients with their own connections, as two routers would have.
    other_client = connect(redis_server.url)
    other = RepositoryStore(other_client)
    try:
        records = await asyncio.gather(
            *(
                (store if i % 2 else other).record_mutation(
                    VS, "busy.git", change=ChangeType.UPDATE, source="gitaly-1", assigned=NODES
                )
                for i in range(200)
            )
        )
    finally:
        await other_client.aclose()
    assert sorted(record.generation for record in records) == list(range(1, 201))
    metadata = await store.require(VS, "busy.git")
    assert metadata.generation == 200
    assert metadata.replica_generation("gitaly-1") == 200
    events = await replication_events(client, "gitaly-2")
    assert len(events) == 201
    assert sorted(event.generation for event in events) == list(range(201))
    # sequence numbers order events of one repository across retries: unique
    assert len({event.sequence for event in events}) == 201


async def test_replica_generation_never_goes_backwards(store: RepositoryStore) -> None:
    await store.record_mutation(VS, "r.git", change=ChangeType.CREATE, source="gitaly-1", assigned=NODES)
    for _ in range(5):
        await store.record_mutation(VS, "r.git", change=ChangeType.UPDATE, source="gitaly-1", assigned=NODES)
    assert await store.set_replica_generation(VS, "r.git", "gitaly-2", 4)
    assert not await store.set_replica_generation(VS, "r.git", "gitaly-2", 2), "lower: refused"
    assert not await store.set_replica_generation(VS, "r.git", "gitaly-2", 4), "equal: no change"
    assert (await store.require(VS, "r.git")).replica_generation("gitaly-2") == 4
    # never past the repository's own generation
    assert await store.set_replica_generation(VS, "r.git", "gitaly-3", 99)
    assert (await store.require(VS, "r.git")).replica_generation("gitaly-3") == 5
    # concurrent writers: the highest wins whatever the order
    await asyncio.gather(
        *(store.set_replica_generation(VS, "r.git", "gitaly-2", g) for g in (5, 4, 3, 5, 4))
    )
    assert (await store.require(VS, "r.git")).replica_generation("gitaly-2") == 5
    assert not await store.set_replica_generation(VS, "untracked.git", "gitaly-2", 1)


async def test_events_are_written_atomically_with_the_generation_bump_and_the_intent(
    store: RepositoryStore, client: aioredis.Redis
) -> None:
    intents = IntentStore(client)
    await store.record_mutation(VS, "x.git", change=ChangeType.CREATE, source="gitaly-1", assigned=NODES)
    intent = await intents.record(
        VS, "x.git", router_id="r1", node="gitaly-1", replicas=NODES[1:], change=ChangeType.UPDATE
    )
    # One target's stream is unusable: the whole call must fail without a trace.
    await client.set(KEYS.events("gitaly-3"), "not a stream")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await store.record_mutation(
            VS, "x.git", change=ChangeType.UPDATE, source="gitaly-1", assigned=NODES,
            intent_id=intent.id,
        )
    metadata = await store.require(VS, "x.git")
    assert metadata.generation == 0, "no generation bump without its events"
    assert len(await replication_events(client, "gitaly-2")) == 1, "no event without the bump"
    assert [i.id for i in await intents.list(VS)] == [intent.id], "the intent stays"

    await client.delete(KEYS.events("gitaly-3"))
    record = await store.record_mutation(
        VS, "x.git", change=ChangeType.UPDATE, source="gitaly-1", assigned=NODES, intent_id=intent.id
    )
    assert record.generation == 1
    assert [e.generation for e in await replication_events(client, "gitaly-2")] == [0, 1]
    assert [e.generation for e in await replication_events(client, "gitaly-3")] == [1]
    assert await intents.list(VS) == [], "cleared in the same call"


async def test_a_stale_assignment_is_corrected_from_redis(store: RepositoryStore, client: aioredis.Redis) -> None:
    await store.record_mutation(VS, "s.git", change=ChangeType.CREATE, source="gitaly-1", assigned=NODES)
    # This router believes the repository lives on two nodes only.
    record = await store.record_mutation(
        VS, "s.git", change=ChangeType.UPDATE, source="gitaly-1", assigned=("gitaly-1", "gitaly-2")
    )
    assert record.targets == ("gitaly-2", "gitaly-3")
    assert [e.generation for e in await replication_events(client, "gitaly-3")] == [0, 1]


async def test_track_repository_refuses_a_tracked_one(store: RepositoryStore) -> None:
    await store.track_repository(VS, "t.git", primary="gitaly-2", assigned=NODES)
    with pytest.raises(RepositoryAlreadyTracked, match="already tracked"):
        await store.track_repository(VS, "t.git", primary="gitaly-1", assigned=NODES)
    assert (await store.require(VS, "t.git")).primary == "gitaly-2"


async def test_delete_untracks_and_queues_removal(store: RepositoryStore, client: aioredis.Redis) -> None:
    await store.record_mutation(VS, "d.git", change=ChangeType.CREATE, source="gitaly-1", assigned=NODES)
    await store.record_mutation(VS, "d.git", change=ChangeType.DELETE, source="gitaly-1", assigned=NODES)
    assert await store.get(VS, "d.git") is None
    assert await store.list_paths(VS) == []
    assert [e.change for e in await replication_events(client, "gitaly-2")] == [ChangeType.CREATE, ChangeType.DELETE]


async def test_remove_repository_only_untracks(store: RepositoryStore, client: aioredis.Redis) -> None:
    await store.record_mutation(VS, "rm.git", change=ChangeType.CREATE, source="gitaly-1", assigned=NODES)
    assert await store.remove_repository(VS, "rm.git")
    assert not await store.remove_repository(VS, "rm.git")
    assert await store.get(VS, "rm.git") is None
    assert len(await replication_events(client, "gitaly-2")) == 1, "no delete event"


async def test_outdated_repositories_and_authoritative_storage(store: RepositoryStore) -> None:
    await store.record_mutation(VS, "ok.git", change=ChangeType.CREATE, source="gitaly-1", assigned=NODES)
    for node in NODES[1:]:
        await store.set_replica_generation(VS, "ok.git", node, 0)
    await store.record_mutation(VS, "behind.git", change=ChangeType.CREATE, source="gitaly-1", assigned=NODES)
    for _ in range(3):
        await store.record_mutation(VS, "behind.git", change=ChangeType.UPDATE, source="gitaly-1", assigned=NODES)
    await store.set_replica_generation(VS, "behind.git", "gitaly-2", 1)
    [outdated] = await store.outdated_repositories(VS)
    assert outdated.relative_path == "behind.git"
    assert outdated.outdated == {"gitaly-2": 2, "gitaly-3": 4}

    record = await store.set_authoritative(VS, "behind.git", "gitaly-2")
    metadata = await store.require(VS, "behind.git")
    assert metadata.generation == 4
    assert metadata.up_to_date == ("gitaly-2",)
    assert record.targets == ("gitaly-1", "gitaly-3")
    with pytest.raises(RepositoryNotTracked):
        await store.set_authoritative(VS, "nope.git", "gitaly-2")


async def test_primary_compare_and_set_and_election(store: RepositoryStore) -> None:
    await store.record_mutation(VS, "p.git", change=ChangeType.CREATE, source="gitaly-1", assigned=NODES)
    await store.record_mutation(VS, "p.git", change=ChangeType.UPDATE, source="gitaly-1", assigned=NODES)
    await store.set_replica_generation(VS, "p.git", "gitaly-3", 1)
    await store.set_replica_generation(VS, "p.git", "gitaly-2", 0)

    # gitaly-1 is down: gitaly-3 is the only healthy up-to-date replica
    elected = await store.elect_primary(VS, "p.git", ["gitaly-2", "gitaly-3"])
    assert (elected.status, elected.primary) == ("ok", "gitaly-3")
    again = await store.elect_primary(VS, "p.git", ["gitaly-2", "gitaly-3"])
    assert (again.status, again.primary) == ("unchanged", "gitaly-3")
    none = await store.elect_primary(VS, "p.git", ["gitaly-2"])
    assert (none.status, none.primary) == ("none", "gitaly-3"), "no up-to-date candidate"

    conflict = await store.set_primary(VS, "p.git", "gitaly-2", expected="gitaly-1")
    assert (conflict.status, conflict.primary) == ("conflict", "gitaly-3")
    moved = await store.set_primary(VS, "p.git", "gitaly-1", expected="gitaly-3")
    assert moved.changed and moved.primary == "gitaly-1"
    assert (await store.set_primary(VS, "p.git", "gitaly-9")).status == "not-assigned"
    assert (await store.set_primary(VS, "nope.git", "gitaly-1")).status == "untracked"


async def test_every_key_of_a_virtual_storage_hashes_to_one_cluster_slot(
    store: RepositoryStore, client: aioredis.Redis
) -> None:
    intents = IntentStore(client)
    intent = await intents.record(VS, "k.git", router_id="r", node="gitaly-1", replicas=(), change=ChangeType.CREATE)
    await store.record_mutation(VS, "k.git", change=ChangeType.CREATE, source="gitaly-1", assigned=NODES)
    await intents.record(VS, "k2.git", router_id="r", node="gitaly-1", replicas=(), change=ChangeType.CREATE)
    await intents.claim(intent, "r", 10)
    keys = [key async for key in client.scan_iter(match="praefect:{*")]
    assert len(keys) >= 7
    assert {key_slot(key.encode()) for key in keys} == {key_slot(f"praefect:{{{VS}}}".encode())}
    with pytest.raises(ValueError, match="must not contain"):
        VirtualStorageKeys("bad{name}")


async def test_change_stream_carries_each_new_state_in_version_order(
    store: RepositoryStore, client: aioredis.Redis
) -> None:
    await store.record_mutation(VS, "c.git", change=ChangeType.CREATE, source="gitaly-1", assigned=NODES)
    await store.set_replica_generation(VS, "c.git", "gitaly-2", 0)
    await store.remove_repository(VS, "c.git")
    entries = await stream_entries(client, KEYS.changes)
    assert [int(fields["v"]) for _, fields in entries] == [1, 2, 3]
    assert json.loads(entries[1][1]["r"])["g:gitaly-2"] == "0"
    assert entries[2][1]["r"] == "", "an empty state means: no longer tracked"
    assert await store.version(VS) == 3
