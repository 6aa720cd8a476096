from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from praefect.core.mutation import ChangeType
from praefect.plugins.replication.intents import (
    IntentResolver,
    IntentStore,
    RouterPresence,
)
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


@pytest.fixture
def node_names() -> list[str]:
    return NAMES


def _resolver(
    store: RepositoryStore, client: aioredis.Redis, clients: NodeClients, *, in_flight: frozenset[str] = frozenset()
) -> IntentResolver:
    async def checksum(vs: str, node: str, path: str) -> str | None:
        checksum: str | None = await clients.checksum(vs, path, node=node, deadline=10)
        return checksum

    return IntentResolver(
        store, IntentStore(client), checksum, [VS],
        router_id="live-router", in_flight=lambda: in_flight, grace=0,
    )


def _same_repo_everywhere(nodes: dict[str, ReplicaNode], path: str) -> Path:
    primary = make_bare_repo(nodes["gitaly-1"].storage, path, 2)
    for name in NAMES[1:]:
        shutil.copytree(primary, nodes[name].repo(path))
    return primary


async def _tracked_in_sync(store: RepositoryStore, path: str) -> None:
    await store.track_repository(VS, path, primary="gitaly-1", assigned=NAMES)
    for name in NAMES[1:]:
        await store.set_replica_generation(VS, path, name, 0)


async def test_router_presence_expires_when_the_router_stops_refreshing(client: aioredis.Redis) -> None:
    presence = RouterPresence(client, "router-x", ttl=0.3)
    await presence.start()
    assert await RouterPresence.alive(client, ["router-x", "router-y"]) == {"router-x"}
    task = presence._task
    assert task is not None
    task.cancel()  # the router hangs or dies: no more refreshes

    async def expired() -> bool:
        return not await RouterPresence.alive(client, ["router-x"])

    await eventually(expired, within=5, what="the liveness key to expire")
    await presence.stop()


async def test_a_write_left_by_a_dead_router_still_reaches_every_replica(
    nodes: dict[str, ReplicaNode], node_clients: NodeClients, store: RepositoryStore, client: aioredis.Redis
) -> None:
    primary = _same_repo_everywhere(nodes, "crash.git")
    await _tracked_in_sync(store, "crash.git")
    intents = IntentStore(client)
    # The dead router recorded its intent, forwarded the write, and died
    # before recording the event.
    await intents.record(
        VS, "crash.git", router_id="dead-router", node="gitaly-1", replicas=["gitaly-2"],
        change=ChangeType.UPDATE,
    )
    add_commit(primary, "the write nobody recorded")

    [resolution] = await _resolver(store, client, node_clients).resolve_once()
    assert (resolution.outcome, resolution.targets) == ("replicated", ("gitaly-2",))
    assert await intents.list(VS) == []
    metadata = await store.require(VS, "crash.git")
    assert (metadata.generation, metadata.outdated) == (1, {"gitaly-2": 1})

    worker = ReplicationWorker(client, store, node_clients, VS, "gitaly-2", consumer="live-router",
                               settings=WorkerSettings(block=0.2))
    await worker.start()
    try:

        async def converged() -> bool:
            return bool((await store.require(VS, "crash.git")).is_up_to_date("gitaly-2"))

        await eventually(converged, what="gitaly-2 to get the unrecorded write")
    finally:
        await worker.stop()
    assert refs_of(nodes["gitaly-2"].repo("crash.git")) == refs_of(primary)


async def test_an_intent_whose_write_never_happened_is_just_cleared(
    nodes: dict[str, ReplicaNode], node_clients: NodeClients, store: RepositoryStore, client: aioredis.Redis
) -> None:
    _same_repo_everywhere(nodes, "calm.git")
    await _tracked_in_sync(store, "calm.git")
    intents = IntentStore(client)
    await intents.record(VS, "calm.git", router_id="dead-router", node="gitaly-1", replicas=["gitaly-2"],
                         change=ChangeType.UPDATE)
    [resolution] = await _resolver(store, client, node_clients).resolve_once()
    assert resolution.outcome == "in-sync"
    assert await intents.list(VS) == []
    assert (await store.require(VS, "calm.git")).generation == 0, "no bump, no event"
    assert await client.exists(KEYS.events("gitaly-2")) == 1
    assert int(await client.xlen(KEYS.events("gitaly-2"))) == 1, "only the creation event"


async def test_an_unrecorded_creation_becomes_tracked_and_replicated(
    nodes: dict[str, ReplicaNode], node_clients: NodeClients, store: RepositoryStore, client: aioredis.Redis
) -> None:
    intents = IntentStore(client)
    make_bare_repo(nodes["gitaly-1"].storage, "born.git", 1)
    await intents.record(VS, "born.git", router_id="dead-router", node="gitaly-1", replicas=["gitaly-2"],
                         change=ChangeType.CREATE)
    await intents.record(VS, "never.git", router_id="dead-router", node="gitaly-1", replicas=["gitaly-2"],
                         change=ChangeType.CREATE)
    resolutions = await _resolver(store, client, node_clients).resolve_once()
    outcomes = {r.intent.relative_path: (r.outcome, r.targets) for r in resolutions}
    assert outcomes == {
        "born.git": ("created", ("gitaly-2",)),
        "never.git": ("nothing-written", ()),
    }
    metadata = await store.require(VS, "born.git")
    assert (metadata.primary, metadata.assigned) == ("gitaly-1", ("gitaly-1", "gitaly-2"))
    assert await store.get(VS, "never.git") is None
    assert await intents.list(VS) == []


async def test_intents_of_live_routers_and_in_flight_calls_are_left_alone(
    nodes: dict[str, ReplicaNode], node_clients: NodeClients, store: RepositoryStore, client: aioredis.Redis
) -> None:
    _same_repo_everywhere(nodes, "busy.git")
    await _tracked_in_sync(store, "busy.git")
    intents = IntentStore(client)
    other = RouterPresence(client, "other-router", ttl=30)
    await other.start()
    try:
        theirs = await intents.record(VS, "busy.git", router_id="other-router", node="gitaly-1",
                                      replicas=["gitaly-2"], change=ChangeType.UPDATE)
        in_flight = await intents.record(VS, "busy.git", router_id="live-router", node="gitaly-1",
                                         replicas=["gitaly-2"], change=ChangeType.UPDATE)
        abandoned = await intents.record(VS, "busy.git", router_id="live-router", node="gitaly-1",
                                         replicas=["gitaly-2"], change=ChangeType.UPDATE)
        resolver = _resolver(store, client, node_clients, in_flight=frozenset({in_flight.id}))
        resolved = await resolver.resolve_once()
        assert [r.intent.id for r in resolved] == [abandoned.id], (
            "only our own intent whose call is no longer in flight"
        )
        assert {i.id for i in await intents.list(VS)} == {theirs.id, in_flight.id}
    finally:
        await other.stop()


async def test_two_resolvers_do_not_resolve_the_same_intent_twice(
    nodes: dict[str, ReplicaNode], node_clients: NodeClients, store: RepositoryStore, client: aioredis.Redis
) -> None:
    primary = _same_repo_everywhere(nodes, "race.git")
    await _tracked_in_sync(store, "race.git")
    await IntentStore(client).record(VS, "race.git", router_id="dead-router", node="gitaly-1",
                                     replicas=["gitaly-2"], change=ChangeType.UPDATE)
    add_commit(primary, "unrecorded")
    first, second = _resolver(store, client, node_clients), _resolver(store, client, node_clients)
    results = await asyncio.gather(first.resolve_once(), second.resolve_once())
    assert sorted(len(r) for r in results) == [0, 1]
    assert (await store.require(VS, "race.git")).generation == 1
