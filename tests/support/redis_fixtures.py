"""Fixtures: an embedded Redis of its own for each test.

``redis_dir`` (short: it holds a unix socket), ``redis_server``, ``client``
and ``store`` (the replication plugin's repository state on it). A folder's
conftest.py imports the fixtures it uses.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from praefect.plugins.replication.embedded_redis import EmbeddedRedis, connect
from praefect.plugins.replication.state import RepositoryStore
from tests.support.replication_cluster import short_tmp_dir


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
