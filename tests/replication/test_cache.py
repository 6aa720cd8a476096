from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from praefect.core.mutation import ChangeType
from praefect.plugins.replication.cache import StateCache
from praefect.plugins.replication.embedded_redis import EmbeddedRedis, connect
from praefect.plugins.replication.keys import VirtualStorageKeys
from praefect.plugins.replication.state import RepositoryMetadata, RepositoryStore

VS = "praefect"
NODES = ("gitaly-1", "gitaly-2")


@pytest.fixture
async def other_router(redis_server: EmbeddedRedis) -> AsyncIterator[RepositoryStore]:
    """The state as another router changes it: its own connection, no link to our cache."""
    other_client = connect(redis_server.url)
    try:
        yield RepositoryStore(other_client)
    finally:
        await other_client.aclose()


@pytest.fixture
async def cache(store: RepositoryStore) -> AsyncIterator[StateCache]:
    state_cache = StateCache(store, [VS], block_ms=200)
    await state_cache.start()
    try:
        yield state_cache
    finally:
        await state_cache.stop()


async def _converged(cache: StateCache, store: RepositoryStore) -> None:
    """Wait until the cache equals what Redis holds (bounded)."""
    truth = {repo.relative_path: repo for repo in await store.list_repositories(VS)}
    async with asyncio.timeout(10):
        await cache.wait_until(lambda: dict(cache.repositories(VS)) == truth)


async def test_the_cache_reads_the_existing_state_at_start(store: RepositoryStore) -> None:
    for i in range(3):
        await store.record_mutation(VS, f"r{i}.git", change=ChangeType.CREATE, source="gitaly-1", assigned=NODES)
    cache = StateCache(store, [VS])
    await cache.start()
    try:
        assert sorted(cache.repositories(VS)) == ["r0.git", "r1.git", "r2.git"]
        assert cache.version(VS) == 3
    finally:
        await cache.stop()


async def test_the_cache_converges_after_changes_from_another_router(
    cache: StateCache, store: RepositoryStore, other_router: RepositoryStore
) -> None:
    seen: list[tuple[str, RepositoryMetadata | None]] = []
    cache.subscribe(lambda vs, path, metadata: seen.append((path, metadata)))
    await other_router.record_mutation(VS, "a.git", change=ChangeType.CREATE, source="gitaly-1", assigned=NODES)
    for _ in range(5):
        await other_router.record_mutation(VS, "a.git", change=ChangeType.UPDATE, source="gitaly-1", assigned=NODES)
    await other_router.set_replica_generation(VS, "a.git", "gitaly-2", 3)
    await other_router.record_mutation(VS, "b.git", change=ChangeType.CREATE, source="gitaly-2", assigned=NODES)
    await other_router.record_mutation(VS, "b.git", change=ChangeType.DELETE, source="gitaly-2", assigned=NODES)
    version = await other_router.version(VS)

    async with asyncio.timeout(10):
        await cache.wait_for_version(VS, version)
    a = cache.get(VS, "a.git")
    assert a is not None
    assert (a.generation, a.replica_generation("gitaly-2")) == (5, 3)
    assert cache.get(VS, "b.git") is None
    await _converged(cache, store)
    assert ("b.git", None) in seen, "listeners hear of deletions"
    assert cache.resyncs(VS) == 1, "no re-read while the change stream is continuous"


async def test_reads_are_served_from_memory(cache: StateCache, store: RepositoryStore, client: aioredis.Redis) -> None:
    await store.record_mutation(VS, "m.git", change=ChangeType.CREATE, source="gitaly-1", assigned=NODES)
    async with asyncio.timeout(10):
        await cache.wait_until(lambda: cache.get(VS, "m.git") is not None)
    before = (await client.info("stats"))["total_commands_processed"]
    for _ in range(1000):
        assert cache.get(VS, "m.git") is not None
    after = (await client.info("stats"))["total_commands_processed"]
    # only the INFO call itself and the cache's idle blocking read may have run
    assert after - before <= 3


async def test_own_writes_are_visible_at_once(store: RepositoryStore) -> None:
    cache = StateCache(store, [VS], block_ms=60_000)
    await cache.start()
    store.on_change = cache.apply
    try:
        await store.record_mutation(VS, "own.git", change=ChangeType.CREATE, source="gitaly-1", assigned=NODES)
        metadata = cache.get(VS, "own.git")  # no await: applied by the write itself
        assert metadata is not None and metadata.primary == "gitaly-1"
        # the same change arriving again from the stream is not applied twice
        async with asyncio.timeout(10):
            await cache.wait_for_version(VS, await store.version(VS))
        assert cache.get(VS, "own.git") == metadata
    finally:
        await cache.stop()


async def test_a_gap_in_the_change_stream_leads_to_a_full_re_read(
    cache: StateCache, store: RepositoryStore, other_router: RepositoryStore, client: aioredis.Redis
) -> None:
    await other_router.record_mutation(VS, "g.git", change=ChangeType.CREATE, source="gitaly-1", assigned=NODES)
    async with asyncio.timeout(10):
        await cache.wait_for_version(VS, 1)
    # Changes whose stream entries are lost (as when the capped stream is
    # trimmed past a slow reader): written straight to the hash, then an
    # entry that skips versions.
    keys = VirtualStorageKeys(VS)
    await client.hset(keys.repository("g.git"), mapping={"primary": "gitaly-2", "version": "5"})
    await client.set(keys.version, 5)
    await client.xadd(keys.changes, {"v": "5", "p": "other.git", "r": ""})
    async with asyncio.timeout(10):
        await cache.wait_until(lambda: cache.resyncs(VS) == 2)
    g = cache.get(VS, "g.git")
    assert g is not None and g.primary == "gitaly-2"
    assert cache.version(VS) == 5
    # and it keeps following afterwards
    await other_router.record_mutation(VS, "h.git", change=ChangeType.CREATE, source="gitaly-1", assigned=NODES)
    await _converged(cache, store)


async def test_the_cache_survives_a_redis_restart(redis_dir: Path) -> None:
    server = EmbeddedRedis(redis_dir)
    await server.start()
    client = connect(server.url)
    store = RepositoryStore(client)
    cache = StateCache(store, [VS], block_ms=200, retry_delay=0.05)
    try:
        await store.record_mutation(VS, "s.git", change=ChangeType.CREATE, source="gitaly-1", assigned=NODES)
        await cache.start()
        os.kill(server.pid, signal.SIGKILL)
        await server.stop()
        await server.start()
        other = connect(server.url)
        try:
            await RepositoryStore(other).record_mutation(
                VS, "t.git", change=ChangeType.CREATE, source="gitaly-2", assigned=NODES
            )
        finally:
            await other.aclose()
        async with asyncio.timeout(20):
            await cache.wait_until(lambda: cache.get(VS, "t.git") is not None)
        assert cache.get(VS, "s.git") is not None, "data from before the restart is kept"
    finally:
        await cache.stop()
        await client.aclose()
        await server.stop()
