from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from praefect.plugins.replication.nodes import NodeClients
from praefect.plugins.replication.state import RepositoryStore
from praefect.plugins.replication.worker import ReplicationWorker, WorkerSettings
from tests.support.redis_fixtures import client, redis_dir, redis_server, store
from tests.support.replication_cluster import VS, ReplicaNode, StartWorker, start_nodes

#: the shared fixtures, imported here for pytest to find
__all__ = ["client", "redis_dir", "redis_server", "store"]


@pytest.fixture
def node_names() -> list[str]:
    """The nodes of ``nodes``; a module overrides it to start others."""
    return ["gitaly-1", "gitaly-2", "gitaly-3"]


@pytest.fixture
async def nodes(tmp_path: Path, node_names: list[str]) -> AsyncIterator[dict[str, ReplicaNode]]:
    """Real node processes, one storage each, stopped by pid afterwards."""
    started = {node.name: node for node in await start_nodes(tmp_path / "nodes", node_names)}
    try:
        yield started
    finally:
        for node in started.values():
            await asyncio.to_thread(node.stop)


@pytest.fixture
async def node_clients(nodes: dict[str, ReplicaNode]) -> AsyncIterator[NodeClients]:
    clients = NodeClients(node.endpoint() for node in nodes.values())
    try:
        yield clients
    finally:
        await clients.close()


@pytest.fixture
def worker_settings() -> WorkerSettings:
    """The settings ``run_worker`` gives a worker; a module overrides it."""
    return WorkerSettings(block=0.2)


@pytest.fixture
async def run_worker(
    client: aioredis.Redis, store: RepositoryStore, worker_settings: WorkerSettings
) -> AsyncIterator[StartWorker]:
    """Starts replication workers on the test's Redis; stops them after the test."""
    started: list[ReplicationWorker] = []

    async def start(
        clients: NodeClients,
        target: str,
        *,
        consumer: str = "router-a",
        settings: WorkerSettings | None = None,
    ) -> ReplicationWorker:
        worker = ReplicationWorker(
            client, store, clients, VS, target, consumer=consumer, settings=settings or worker_settings
        )
        await worker.start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        await worker.stop()
