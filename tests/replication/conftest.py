from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from praefect.plugins.replication.embedded_redis import EmbeddedRedis, connect
from praefect.plugins.replication.nodes import NodeClients
from praefect.plugins.replication.state import RepositoryStore
from tests.support.replication_cluster import ReplicaNode, short_tmp_dir, start_nodes


@pytest.fixture
def redis_dir() -> Iterator[Path]:
    """A data directory of its own for each test (short: it holds a unix socket)."""
    with short_tmp_dir() as path:
        yield path


@pytest.fixture
async def redis_server(redis_dir: Path) -> AsyncIterator[EmbeddedRedis]:
    async with EmbeddedRedis(redis_dir) as server:
        yield server


@pytest.fixture
async def client(redis_server: EmbeddedRedis) -> AsyncIterator[aioredis.Redis]:
    redis_client = connect(redis_server.url)
    try:
        yield redis_client
    finally:
        await redis_client.aclose()


@pytest.fixture
def store(client: aioredis.Redis) -> RepositoryStore:
    return RepositoryStore(client)


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
