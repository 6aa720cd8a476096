from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis

from praefect.core.mutation import ChangeType
from praefect.plugins.replication.embedded_redis import EmbeddedRedis, connect
from praefect.plugins.replication.events import ReplicationEvent
from praefect.plugins.replication.keys import VirtualStorageKeys
from praefect.plugins.replication.nodes import NodeClients
from praefect.plugins.replication.state import RepositoryStore
from praefect.plugins.replication.streams import (
    dead_letters,
    ensure_group,
    queue_status,
    trim_acknowledged,
)
from praefect.plugins.replication.worker import ReplicationWorker, WorkerSettings
from tests.support.replication_cluster import (
    VS,
    ReplicaNode,
    StartWorker,
    add_commit,
    eventually,
    make_bare_repo,
    refs_of,
    replication_events,
    stream_entries,
    unreachable_node,
)

NAMES = ["gitaly-1", "gitaly-2", "gitaly-3"]
KEYS = VirtualStorageKeys(VS)
FAST = WorkerSettings(
    block=0.2,
    claim_idle=1.0,
    backoff_initial=0.1,
    backoff_max=0.4,
    backoff_jitter=0.0,
    trim_interval=0.2,
    call_timeout=30,
    max_attempts=3,
)


@pytest.fixture
def node_names() -> list[str]:
    return NAMES


@pytest.fixture
def worker_settings() -> WorkerSettings:
    return FAST


async def _replicate_supported(clients: NodeClients, nodes: dict[str, ReplicaNode]) -> None:
    make_bare_repo(nodes["gitaly-1"].storage, "probe.git", 1)
    try:
        await clients.replicate(VS, "probe.git", source="gitaly-1", target="gitaly-3", deadline=30)
    except grpc.aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.UNIMPLEMENTED:
            pytest.skip("the node does not implement ReplicateRepository yet")
        raise


async def _settled(client: aioredis.Redis, target: str) -> bool:
    status = await queue_status(client, VS, target)
    return bool(status.pending == 0)


async def test_a_created_repository_is_replicated_and_the_event_acknowledged(
    nodes: dict[str, ReplicaNode], node_clients: NodeClients, store: RepositoryStore,
    client: aioredis.Redis, run_worker: StartWorker,
) -> None:
    await _replicate_supported(node_clients, nodes)
    source = make_bare_repo(nodes["gitaly-1"].storage, "group/new.git", 3)
    await store.track_repository(VS, "group/new.git", primary="gitaly-1", assigned=NAMES)
    worker = await run_worker(node_clients, "gitaly-2")

    async def replicated() -> bool:
        metadata = await store.require(VS, "group/new.git")
        return metadata.replica_generation("gitaly-2") == 0 and await _settled(client, "gitaly-2")

    await eventually(replicated, what="gitaly-2 to get the repository")
    assert refs_of(nodes["gitaly-2"].repo("group/new.git")) == refs_of(source)
    assert await node_clients.checksum(VS, "group/new.git", node="gitaly-2", deadline=10) == (
        await node_clients.checksum(VS, "group/new.git", node="gitaly-1", deadline=10)
    )
    assert worker.stats.replicate_calls == 1
    assert not nodes["gitaly-3"].repo("group/new.git").exists(), "gitaly-3's worker is not running"


async def test_events_of_one_repository_are_coalesced(
    nodes: dict[str, ReplicaNode], node_clients: NodeClients, store: RepositoryStore,
    client: aioredis.Redis, run_worker: StartWorker,
) -> None:
    await _replicate_supported(node_clients, nodes)
    source = make_bare_repo(nodes["gitaly-1"].storage, "busy.git", 1)
    await store.track_repository(VS, "busy.git", primary="gitaly-1", assigned=NAMES)
    for i in range(4):
        add_commit(source, f"change-{i}")
        await store.record_mutation(VS, "busy.git", change=ChangeType.UPDATE, source="gitaly-1", assigned=NAMES)
    assert int(await client.xlen(KEYS.events("gitaly-2"))) == 5
    worker = await run_worker(node_clients, "gitaly-2")

    async def done() -> bool:
        # The worker counts an acknowledgement once Redis has answered the XACK.
        return await _settled(client, "gitaly-2") and worker.stats.events_acked == 5

    await eventually(done, what="the five events to be acknowledged")
    assert worker.stats.replicate_calls == 1, "five events, one ReplicateRepository"
    assert worker.stats.events_acked == 5
    assert (await store.require(VS, "busy.git")).replica_generation("gitaly-2") == 4
    assert refs_of(nodes["gitaly-2"].repo("busy.git")) == refs_of(source)


async def test_an_event_the_target_already_has_is_acknowledged_without_a_call(
    nodes: dict[str, ReplicaNode], node_clients: NodeClients, store: RepositoryStore,
    client: aioredis.Redis, run_worker: StartWorker,
) -> None:
    await store.track_repository(VS, "current.git", primary="gitaly-1", assigned=NAMES)
    await store.set_replica_generation(VS, "current.git", "gitaly-2", 0)
    worker = await run_worker(node_clients, "gitaly-2")

    async def done() -> bool:
        return await _settled(client, "gitaly-2")

    await eventually(done, what="the event to be acknowledged")
    assert (worker.stats.replicate_calls, worker.stats.skipped) == (0, 1)


async def test_a_delete_removes_the_target_replica(
    nodes: dict[str, ReplicaNode], node_clients: NodeClients, store: RepositoryStore,
    client: aioredis.Redis, run_worker: StartWorker,
) -> None:
    for name in NAMES:
        make_bare_repo(nodes[name].storage, "gone.git", 1)
    await store.track_repository(VS, "gone.git", primary="gitaly-1", assigned=NAMES)
    for name in NAMES[1:]:
        await store.set_replica_generation(VS, "gone.git", name, 0)
    await store.record_mutation(VS, "gone.git", change=ChangeType.DELETE, source="gitaly-1", assigned=NAMES)
    worker = await run_worker(node_clients, "gitaly-3")

    async def removed() -> bool:
        return await _settled(client, "gitaly-3") and not await node_clients.exists(
            VS, "gone.git", node="gitaly-3", deadline=10
        )

    await eventually(removed, what="gitaly-3's replica to be removed")
    assert worker.stats.remove_calls == 1
    assert nodes["gitaly-2"].repo("gone.git").exists(), "only the target is touched"


async def test_failures_back_off_and_end_in_the_dead_letter_stream(
    tmp_path: Path, store: RepositoryStore, client: aioredis.Redis,
    run_worker: StartWorker,
) -> None:
    down = unreachable_node(tmp_path, "gitaly-down")
    clients = NodeClients(
        [down.endpoint(), unreachable_node(tmp_path, "gitaly-1").endpoint()]
    )
    try:
        await store.track_repository(VS, "lost.git", primary="gitaly-1", assigned=["gitaly-1", "gitaly-down"])
        no_trim = dataclasses.replace(FAST, trim_interval=600)
        worker = await run_worker(clients, "gitaly-down", settings=no_trim)

        async def dead() -> bool:
            # The worker counts the dead letter only once Redis has answered
            # the MULTI that wrote it, after the letter is visible here.
            in_stream = int(await client.xlen(KEYS.dead_letters("gitaly-down"))) == 1
            return in_stream and worker.stats.dead_lettered == 1

        await eventually(dead, what="the event to be dead-lettered")
    finally:
        await clients.close()
    [letter] = await dead_letters(client, VS, "gitaly-down")
    assert letter.event is not None and letter.event.relative_path == "lost.git"
    assert letter.fields["attempts"] == "3"
    assert letter.error.startswith("UNAVAILABLE"), letter.error
    assert (worker.stats.retried, worker.stats.dead_lettered) == (2, 1)
    # the retries were appended with growing backoff: 0.1 s, then 0.2 s
    retries = [event for event in await replication_events(client, "gitaly-down") if event.attempt != 0]
    assert [event.attempt for event in retries] == [1, 2]
    delays = [
        round(event.not_before - int(str(event.stream_id).split("-")[0]) / 1000, 1)
        for event in retries
    ]
    assert delays == [0.1, 0.2], "exponential backoff from backoff_initial"
    status = await queue_status(client, VS, "gitaly-down")
    assert (status.pending, status.dead_lettered) == (0, 1), "nothing left pending, nothing dropped"


async def test_pending_events_of_a_dead_consumer_are_claimed(
    nodes: dict[str, ReplicaNode], node_clients: NodeClients, store: RepositoryStore,
    client: aioredis.Redis, run_worker: StartWorker,
) -> None:
    await store.track_repository(VS, "orphan.git", primary="gitaly-1", assigned=NAMES)
    await store.set_replica_generation(VS, "orphan.git", "gitaly-2", 0)
    await store.record_mutation(VS, "orphan.git", change=ChangeType.UPDATE, source="gitaly-1", assigned=NAMES)
    make_bare_repo(nodes["gitaly-1"].storage, "orphan.git", 2)
    await ensure_group(client, VS, "gitaly-2")
    # A router reads both events and dies before acknowledging them.
    taken: Any = await client.xreadgroup("gitaly-2", "dead-router", {KEYS.events("gitaly-2"): ">"})
    assert len(taken[0][1]) == 2
    await _replicate_supported(node_clients, nodes)
    worker = await run_worker(node_clients, "gitaly-2", consumer="live-router")

    async def finished() -> bool:
        return await _settled(client, "gitaly-2")

    await eventually(finished, what="the live router to claim and finish the events")
    assert worker.stats.claimed == 2
    assert (await store.require(VS, "orphan.git")).replica_generation("gitaly-2") == 1
    consumers = {c["name"]: c["pending"] for c in await client.xinfo_consumers(KEYS.events("gitaly-2"), "gitaly-2")}
    assert consumers.get("dead-router", 0) == 0


async def test_events_a_live_worker_holds_are_not_claimed_by_others(
    tmp_path: Path, store: RepositoryStore, client: aioredis.Redis,
    run_worker: StartWorker,
) -> None:
    clients = NodeClients([unreachable_node(tmp_path, "gitaly-2").endpoint()])
    try:
        event = ReplicationEvent(VS, "later.git", ChangeType.UPDATE, "gitaly-1", "gitaly-2", 3,
                                 not_before=time.time() + 30)
        fields: dict[Any, Any] = event.encode()
        await client.xadd(KEYS.events("gitaly-2"), fields)
        # claim_idle leaves a busy machine's event loops a second of slack:
        # the holder refreshes its hold well within it.
        settings = WorkerSettings(block=0.1, claim_idle=1.5, trim_interval=0.1)
        holder = await run_worker(clients, "gitaly-2", consumer="holder", settings=settings)

        async def held() -> bool:
            return bool(holder.stats.events_read == 1)

        await eventually(held, what="the holder to read the event")
        thief = await run_worker(clients, "gitaly-2", consumer="thief", settings=settings)
        # Several claim rounds of the other worker pass (claim_idle / 2 each).
        deadline = time.monotonic() + 3.5
        while time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            pending: Any = await client.xpending_range(KEYS.events("gitaly-2"), "gitaly-2", "-", "+", 10)
            assert [p["consumer"] for p in pending] == ["holder"]
            assert pending[0]["time_since_delivered"] < 1500
        assert thief.stats.claimed == 0
    finally:
        await clients.close()


async def test_a_restarted_worker_resumes_its_own_pending_events(
    nodes: dict[str, ReplicaNode], node_clients: NodeClients, store: RepositoryStore,
    client: aioredis.Redis, run_worker: StartWorker,
) -> None:
    await store.track_repository(VS, "resume.git", primary="gitaly-1", assigned=NAMES)
    await store.set_replica_generation(VS, "resume.git", "gitaly-3", 0)
    await ensure_group(client, VS, "gitaly-3")
    await client.xreadgroup("gitaly-3", "router-a", {KEYS.events("gitaly-3"): ">"})
    slow_claims = WorkerSettings(block=0.2, claim_idle=600)
    worker = await run_worker(node_clients, "gitaly-3", consumer="router-a", settings=slow_claims)

    async def done() -> bool:
        return await _settled(client, "gitaly-3")

    await eventually(done, what="the worker to finish its own pending event")
    assert worker.stats.claimed == 0 and worker.stats.events_acked == 1


async def test_trimming_never_removes_an_unacknowledged_event(client: aioredis.Redis, store: RepositoryStore) -> None:
    stream = KEYS.events("gitaly-2")
    ids = [await client.xadd(stream, {"n": str(i)}) for i in range(10)]
    assert await trim_acknowledged(store.scripts, VS, "gitaly-2") == 0, "no group: nothing is trimmed"
    await ensure_group(client, VS, "gitaly-2")
    await client.xreadgroup("gitaly-2", "c", {stream: ">"}, count=6)
    await client.xack(stream, "gitaly-2", ids[0], ids[1], ids[3], ids[4], ids[5])

    async def remaining() -> list[str]:
        return [entry_id for entry_id, _ in await stream_entries(client, stream)]

    await trim_acknowledged(store.scripts, VS, "gitaly-2")
    assert await remaining() == ids[2:], "ids[2] is pending, ids[6:] undelivered"
    await client.xack(stream, "gitaly-2", ids[2])
    await trim_acknowledged(store.scripts, VS, "gitaly-2")
    assert await remaining() == ids[6:]
    # a second group that lags keeps what it has not acknowledged
    await client.xgroup_create(stream, "auditor", id=ids[7])
    await client.xreadgroup("gitaly-2", "c", {stream: ">"})
    await client.xack(stream, "gitaly-2", *ids[6:])
    await trim_acknowledged(store.scripts, VS, "gitaly-2")
    assert await remaining() == ids[8:]
    await client.xgroup_destroy(stream, "auditor")
    await trim_acknowledged(store.scripts, VS, "gitaly-2")
    assert await remaining() == []


async def test_a_worker_carries_on_after_redis_is_killed_and_restarted(
    nodes: dict[str, ReplicaNode], node_clients: NodeClients, redis_dir: Path
) -> None:
    server = EmbeddedRedis(redis_dir)
    await server.start()
    redis_client = connect(server.url)
    store = RepositoryStore(redis_client)
    worker = ReplicationWorker(redis_client, store, node_clients, VS, "gitaly-2", consumer="r", settings=FAST)
    await worker.start()
    try:
        os.kill(server.pid, signal.SIGKILL)
        await server.stop()
        await server.start()
        make_bare_repo(nodes["gitaly-1"].storage, "after.git", 1)
        await store.track_repository(VS, "after.git", primary="gitaly-1", assigned=NAMES)

        async def replicated() -> bool:
            return bool((await store.require(VS, "after.git")).is_up_to_date("gitaly-2"))

        await eventually(replicated, within=20, what="the worker to replicate after the restart")
    finally:
        await worker.stop()
        await redis_client.aclose()
        await server.stop()


async def test_an_unreadable_event_goes_to_the_dead_letter_stream_at_once(
    tmp_path: Path, client: aioredis.Redis, run_worker: StartWorker
) -> None:
    clients = NodeClients([unreachable_node(tmp_path, "gitaly-2").endpoint()])
    try:
        await client.xadd(KEYS.events("gitaly-2"), {"something": "else"})
        await run_worker(clients, "gitaly-2")

        async def dead() -> bool:
            return await _settled(client, "gitaly-2") and int(
                await client.xlen(KEYS.dead_letters("gitaly-2"))
            ) == 1

        await eventually(dead, what="the unreadable event to be dead-lettered")
    finally:
        await clients.close()
    [letter] = await dead_letters(client, VS, "gitaly-2")
    assert "is not a replication event" in letter.error
    assert letter.fields["something"] == "else", "the original fields are kept"


async def test_an_event_from_before_a_delete_and_re_creation_is_skipped(
    tmp_path: Path, store: RepositoryStore, client: aioredis.Redis,
    run_worker: StartWorker,
) -> None:
    clients = NodeClients(
        [unreachable_node(tmp_path, name).endpoint() for name in ("gitaly-1", "gitaly-2")]
    )
    try:
        # An update of the old repository, still queued (e.g. waiting for a retry) ...
        old = ReplicationEvent(VS, "reborn.git", ChangeType.UPDATE, "gitaly-1", "gitaly-2", 7)
        fields: dict[Any, Any] = old.encode()
        await client.xadd(KEYS.events("gitaly-2"), fields)
        # ... while the path was created anew, generation 0, gitaly-2 up to date.
        await store.record_mutation(VS, "reborn.git", change=ChangeType.CREATE, source="gitaly-1",
                                    assigned=["gitaly-1", "gitaly-2"], targets=[])
        await store.set_replica_generation(VS, "reborn.git", "gitaly-2", 0)
        worker = await run_worker(clients, "gitaly-2")

        async def done() -> bool:
            return await _settled(client, "gitaly-2")

        await eventually(done, what="the stale event to be acknowledged")
    finally:
        await clients.close()
    assert (worker.stats.skipped, worker.stats.retried, worker.stats.dead_lettered) == (1, 0, 0)
