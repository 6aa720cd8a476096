"""queue_depth, what the pending and dead-letter gauges read, against a real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from praefect.core.mutation import ChangeType
from praefect.plugins.replication.embedded_redis import EmbeddedRedis, connect
from praefect.plugins.replication.events import ReplicationEvent
from praefect.plugins.replication.keys import VirtualStorageKeys, group_name
from praefect.plugins.replication.streams import ensure_group, queue_depth, queue_status
from tests.support.replication_cluster import short_tmp_dir

VS, TARGET = "praefect", "gitaly-2"
KEYS = VirtualStorageKeys(VS)


@pytest.fixture
async def client() -> AsyncIterator[aioredis.Redis]:
    with short_tmp_dir() as redis_dir:
        async with EmbeddedRedis(redis_dir) as server:
            redis_client = connect(server.url)
            try:
                yield redis_client
            finally:
                await redis_client.aclose()


async def queue(client: aioredis.Redis, path: str) -> None:
    event = ReplicationEvent(VS, path, ChangeType.UPDATE, "gitaly-1", TARGET, generation=1)
    fields: dict[str | bytes, str] = dict(event.encode())
    await client.xadd(KEYS.events(TARGET), fields)  # type: ignore[arg-type]


async def agrees_with_queue_status(client: aioredis.Redis) -> tuple[int, int]:
    depth = await queue_depth(client, VS, TARGET)
    status = await queue_status(client, VS, TARGET)
    assert (depth.virtual_storage, depth.target) == (VS, TARGET)
    assert (depth.pending, depth.dead_letters) == (status.pending, status.dead_lettered)
    return depth.pending, depth.dead_letters


async def test_queue_depth_counts_what_no_worker_acknowledged(client: aioredis.Redis) -> None:
    assert await agrees_with_queue_status(client) == (0, 0), "no stream at all"

    await queue(client, "a.git")
    await queue(client, "b.git")
    assert await agrees_with_queue_status(client) == (2, 0), "no group yet: all undelivered"

    await ensure_group(client, VS, TARGET)
    await queue(client, "c.git")
    # a worker reads two: in progress, one undelivered
    read: Any = await client.xreadgroup(group_name(TARGET), "worker", {KEYS.events(TARGET): ">"}, count=2)
    assert await agrees_with_queue_status(client) == (3, 0)

    ((_stream, entries),) = read
    first, second = (entry_id for entry_id, _fields in entries)
    await client.xack(KEYS.events(TARGET), group_name(TARGET), first)
    assert await agrees_with_queue_status(client) == (2, 0), "acknowledged: no longer pending"

    # given up on: acknowledged and copied to the dead-letter stream
    await client.xadd(KEYS.dead_letters(TARGET), {"error": "INTERNAL: failed"})
    await client.xack(KEYS.events(TARGET), group_name(TARGET), second)
    assert await agrees_with_queue_status(client) == (1, 1)
