"""The worker holds a copy lease exactly while it copies into the target.

Real Redis, real node processes, real ReplicateRepository calls.
:class:`WatchedNodeClients` records the leases in Redis when the worker
calls ReplicateRepository and can hold the call before it is sent, so a
test can stop the worker in the middle of a copy.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from praefect.core.mutation import ChangeType
from praefect.plugins.replication.nodes import NodeClients, NodeEndpoint
from praefect.plugins.replication.state import CopyLease, RepositoryStore
from praefect.plugins.replication.streams import queue_status
from praefect.plugins.replication.worker import ReplicationWorker, WorkerSettings
from tests.support.replication_cluster import (
    VS,
    ReplicaNode,
    StartWorker,
    eventually,
    make_bare_repo,
    refs_of,
    unreachable_node,
)

NAMES = ["gitaly-1", "gitaly-2"]
SETTINGS = WorkerSettings(
    block=0.2,
    claim_idle=2.0,
    # one attempt per test: a retry would take a lease of its own
    backoff_initial=60.0,
    backoff_max=60.0,
    backoff_jitter=0.0,
    trim_interval=0.2,
    call_timeout=30,
    lease_slack=5,
)


class WatchedNodeClients(NodeClients):
    """Real node clients that record the copy leases at each ReplicateRepository."""

    def __init__(self, endpoints: list[NodeEndpoint], store: RepositoryStore) -> None:
        super().__init__(endpoints)
        self.store = store
        #: the leases (target -> seconds left) when each call started
        self.leases: list[dict[str, float]] = []
        self.reached = asyncio.Event()
        #: when set, calls wait for it before they are sent
        self.gate: asyncio.Event | None = None

    async def replicate(
        self, virtual_storage: str, relative_path: str, *, source: str, target: str, deadline: float
    ) -> None:
        self.leases.append(await self.store.copy_leases(virtual_storage, relative_path))
        self.reached.set()
        if self.gate is not None:
            await self.gate.wait()
        await super().replicate(
            virtual_storage, relative_path, source=source, target=target, deadline=deadline
        )


@pytest.fixture
def node_names() -> list[str]:
    return NAMES


@pytest.fixture
def worker_settings() -> WorkerSettings:
    return SETTINGS


@pytest.fixture
async def watched(
    nodes: dict[str, ReplicaNode], store: RepositoryStore
) -> AsyncIterator[WatchedNodeClients]:
    clients = WatchedNodeClients([node.endpoint() for node in nodes.values()], store)
    try:
        yield clients
    finally:
        await clients.close()


async def _track(store: RepositoryStore, nodes: dict[str, ReplicaNode], path: str) -> Path:
    primary = make_bare_repo(nodes["gitaly-1"].storage, path, 2)
    await store.track_repository(VS, path, primary="gitaly-1", assigned=NAMES)
    return primary


async def test_a_copy_runs_under_a_lease_that_its_raise_releases(
    nodes: dict[str, ReplicaNode], watched: WatchedNodeClients, store: RepositoryStore,
    client: aioredis.Redis, run_worker: StartWorker,
) -> None:
    primary = await _track(store, nodes, "copied.git")
    worker = await run_worker(watched, "gitaly-2")
    try:
        async def copied() -> bool:
            metadata = await store.require(VS, "copied.git")
            pending = (await queue_status(client, VS, "gitaly-2")).pending
            return bool(metadata.is_up_to_date("gitaly-2") and pending == 0)

        await eventually(copied, what="gitaly-2 to be replicated")
    finally:
        await worker.stop()
    (during,) = watched.leases
    assert set(during) == {"gitaly-2"}, "the target is leased while ReplicateRepository runs"
    assert SETTINGS.call_timeout < during["gitaly-2"] <= SETTINGS.call_timeout + SETTINGS.lease_slack, (
        "the lease outlasts the call's deadline"
    )
    assert await store.copy_leases(VS, "copied.git") == {}, "released with the raise"
    assert refs_of(nodes["gitaly-2"].repo("copied.git")) == refs_of(primary)


async def test_a_failed_copy_releases_its_lease_at_once(
    tmp_path: Path, nodes: dict[str, ReplicaNode], store: RepositoryStore, client: aioredis.Redis,
    run_worker: StartWorker,
) -> None:
    # The source does not answer: the target's fetch fails, the event waits a
    # minute for its next attempt, and gitaly-2's elections must not.
    source = unreachable_node(tmp_path / "gone", "gitaly-1")
    clients = WatchedNodeClients([source.endpoint(), nodes["gitaly-2"].endpoint()], store)
    await store.track_repository(VS, "failed.git", primary="gitaly-1", assigned=NAMES)
    worker = await run_worker(clients, "gitaly-2")
    try:
        await eventually(lambda: _retried(worker), what="the copy to fail once")
        assert [set(leases) for leases in clients.leases] == [{"gitaly-2"}]
        assert await store.copy_leases(VS, "failed.git") == {}, "released before the retry is queued"
    finally:
        await worker.stop()
        await clients.close()


async def _retried(worker: ReplicationWorker) -> bool:
    return bool(worker.stats.retried >= 1)


async def test_a_worker_stopped_mid_copy_releases_its_lease(
    nodes: dict[str, ReplicaNode], watched: WatchedNodeClients, store: RepositoryStore,
    client: aioredis.Redis, run_worker: StartWorker,
) -> None:
    await _track(store, nodes, "stopped.git")
    watched.gate = asyncio.Event()  # never set: the call is never sent
    worker = await run_worker(watched, "gitaly-2")
    try:
        await asyncio.wait_for(watched.reached.wait(), timeout=15)
        assert set(await store.copy_leases(VS, "stopped.git")) == {"gitaly-2"}
    finally:
        await worker.stop()
    assert await store.copy_leases(VS, "stopped.git") == {}, "released although the copy never ended"
    assert (await store.require(VS, "stopped.git")).replica_generation("gitaly-2") == -1


async def test_no_copy_into_a_target_elected_between_the_plan_and_the_lease(
    nodes: dict[str, ReplicaNode], store: RepositoryStore, client: aioredis.Redis,
) -> None:
    # gitaly-2 holds a copy already and becomes the primary after the worker
    # read the state: the lease is refused, nothing is copied into it.
    class ElectedOnRead(RepositoryStore):
        """The primary moves to the target right before the worker asks for its lease."""

        async def take_copy_lease(
            self, virtual_storage: str, relative_path: str, target: str, *, ttl: float
        ) -> CopyLease:
            assert (await self.set_primary(virtual_storage, relative_path, target)).changed
            return await super().take_copy_lease(virtual_storage, relative_path, target, ttl=ttl)

    make_bare_repo(nodes["gitaly-1"].storage, "elected.git", 2)
    make_bare_repo(nodes["gitaly-2"].storage, "elected.git", 1)
    before = refs_of(nodes["gitaly-2"].repo("elected.git"))
    await store.track_repository(VS, "elected.git", primary="gitaly-1", assigned=NAMES)
    await store.record_mutation(VS, "elected.git", change=ChangeType.UPDATE, source="gitaly-1", assigned=NAMES)
    racing = ElectedOnRead(client)
    clients = WatchedNodeClients([node.endpoint() for node in nodes.values()], store)
    worker = ReplicationWorker(
        client, racing, clients, VS, "gitaly-2", consumer="router-a", settings=SETTINGS
    )
    await worker.start()
    try:
        async def settled() -> bool:
            return bool((await queue_status(client, VS, "gitaly-2")).pending == 0)

        await eventually(settled, what="gitaly-2's events to be acknowledged")
    finally:
        await worker.stop()
        await clients.close()
    assert clients.leases == [], "no ReplicateRepository into the new primary"
    assert (worker.stats.replicate_calls, worker.stats.skipped) == (0, 1)
    assert refs_of(nodes["gitaly-2"].repo("elected.git")) == before
