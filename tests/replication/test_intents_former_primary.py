"""Orphaned intents of writes to a node that is no longer the primary (real nodes, real Redis)."""

from __future__ import annotations

import shutil

import pytest
import redis.asyncio as aioredis

from praefect.core.mutation import ChangeType
from praefect.plugins.replication.intents import Intent, IntentResolver, IntentStore
from praefect.plugins.replication.keys import VirtualStorageKeys
from praefect.plugins.replication.nodes import NodeClients
from praefect.plugins.replication.state import RepositoryStore
from praefect.plugins.replication.worker import ReplicationWorker, WorkerSettings
from tests.support.replication_cluster import (
    VS,
    ReplicaNode,
    add_commit,
    eventually,
    make_bare_repo,
    refs_of,
)

NAMES = ["gitaly-1", "gitaly-2"]
KEYS = VirtualStorageKeys(VS)
PATH = "moved.git"


@pytest.fixture
def node_names() -> list[str]:
    return NAMES


def _resolver(store: RepositoryStore, client: aioredis.Redis, clients: NodeClients) -> IntentResolver:
    async def checksum(vs: str, node: str, path: str) -> str | None:
        checksum: str | None = await clients.checksum(vs, path, node=node, deadline=10)
        return checksum

    return IntentResolver(store, IntentStore(client), checksum, [VS], router_id="live-router", grace=0)


async def _failed_over_with_an_orphaned_write(
    nodes: dict[str, ReplicaNode], store: RepositoryStore, client: aioredis.Redis
) -> Intent:
    """In sync on both nodes, primary moved from gitaly-1 to gitaly-2, and the
    intent of a write to gitaly-1 left by a router that died."""
    first = make_bare_repo(nodes["gitaly-1"].storage, PATH, 2)
    shutil.copytree(first, nodes["gitaly-2"].repo(PATH))
    await store.track_repository(VS, PATH, primary="gitaly-1", assigned=NAMES)
    await store.set_replica_generation(VS, PATH, "gitaly-2", 0)
    intent = await IntentStore(client).record(
        VS, PATH, router_id="dead-router", node="gitaly-1", replicas=["gitaly-2"],
        change=ChangeType.UPDATE,
    )
    assert (await store.set_primary(VS, PATH, "gitaly-2")).changed
    return intent


async def _events(client: aioredis.Redis, target: str) -> int:
    return int(await client.xlen(KEYS.events(target)))


async def test_the_write_of_a_former_primary_is_undone_not_replicated(
    nodes: dict[str, ReplicaNode], node_clients: NodeClients, store: RepositoryStore, client: aioredis.Redis
) -> None:
    await _failed_over_with_an_orphaned_write(nodes, store, client)
    unacknowledged = add_commit(nodes["gitaly-1"].repo(PATH), "written after the failover")
    primary_refs = refs_of(nodes["gitaly-2"].repo(PATH))
    events_to_primary = await _events(client, "gitaly-2")

    [resolution] = await _resolver(store, client, node_clients).resolve_once()

    assert (resolution.outcome, resolution.targets) == ("repaired", ("gitaly-1",))
    assert await IntentStore(client).list(VS) == []
    metadata = await store.require(VS, PATH)
    assert (metadata.primary, metadata.generation) == ("gitaly-2", 0), "nothing recorded from gitaly-1"
    assert metadata.replica_generation("gitaly-1") == -1, "gitaly-1 is outdated until repaired"
    assert await _events(client, "gitaly-2") == events_to_primary, "nothing replicated to the primary"

    worker = ReplicationWorker(
        client, store, node_clients, VS, "gitaly-1", consumer="live-router",
        settings=WorkerSettings(block=0.2),
    )
    await worker.start()
    try:

        async def repaired() -> bool:
            return bool((await store.require(VS, PATH)).is_up_to_date("gitaly-1"))

        await eventually(repaired, what="gitaly-1 to be replicated from the primary gitaly-2")
    finally:
        await worker.stop()
    assert refs_of(nodes["gitaly-1"].repo(PATH)) == primary_refs
    assert unacknowledged not in refs_of(nodes["gitaly-1"].repo(PATH))
    assert refs_of(nodes["gitaly-2"].repo(PATH)) == primary_refs, "the primary is untouched"


async def test_a_former_primary_without_a_change_is_left_as_it_is(
    nodes: dict[str, ReplicaNode], node_clients: NodeClients, store: RepositoryStore, client: aioredis.Redis
) -> None:
    await _failed_over_with_an_orphaned_write(nodes, store, client)
    before = await store.require(VS, PATH)

    [resolution] = await _resolver(store, client, node_clients).resolve_once()

    assert resolution.outcome == "in-sync"
    assert await IntentStore(client).list(VS) == []
    assert await store.require(VS, PATH) == before
    assert await _events(client, "gitaly-1") == 0


async def test_a_former_primary_that_cannot_answer_is_repaired_when_it_returns(
    nodes: dict[str, ReplicaNode], node_clients: NodeClients, store: RepositoryStore, client: aioredis.Redis
) -> None:
    await _failed_over_with_an_orphaned_write(nodes, store, client)
    nodes["gitaly-1"].stop()

    [resolution] = await _resolver(store, client, node_clients).resolve_once()

    assert (resolution.outcome, resolution.targets) == ("repaired", ("gitaly-1",))
    assert await IntentStore(client).list(VS) == []
    assert (await store.require(VS, PATH)).replica_generation("gitaly-1") == -1
    assert await _events(client, "gitaly-1") == 1


async def test_a_failover_while_the_resolver_compares_checksums_is_not_overruled(
    nodes: dict[str, ReplicaNode], node_clients: NodeClients, store: RepositoryStore, client: aioredis.Redis
) -> None:
    # gitaly-1 is still the primary when the resolver reads the state...
    await _failed_over_with_an_orphaned_write(nodes, store, client)
    assert (await store.set_primary(VS, PATH, "gitaly-1")).changed
    add_commit(nodes["gitaly-1"].repo(PATH), "written before the failover")

    async def checksum_then_fail_over(vs: str, node: str, path: str) -> str | None:
        checksum: str | None = await node_clients.checksum(vs, path, node=node, deadline=10)
        if node == "gitaly-2":  # ...and moves to gitaly-2 while it compares
            assert (await store.set_primary(VS, PATH, "gitaly-2")).changed
        return checksum

    resolver = IntentResolver(
        store, IntentStore(client), checksum_then_fail_over, [VS], router_id="live-router", grace=0
    )
    [resolution] = await resolver.resolve_once()

    assert (resolution.outcome, resolution.targets) == ("repaired", ("gitaly-1",))
    metadata = await store.require(VS, PATH)
    assert (metadata.primary, metadata.generation) == ("gitaly-2", 0)
    assert metadata.replica_generation("gitaly-1") == -1
    assert await _events(client, "gitaly-2") == 1, "only the creation: nothing from gitaly-1"
    assert await IntentStore(client).list(VS) == []
