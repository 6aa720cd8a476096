"""A worker holds the events of a target that is down, without using up attempts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from praefect.plugins.replication.embedded_redis import EmbeddedRedis
from praefect.plugins.replication.nodes import NodeClients
from praefect.plugins.replication.runtime import (
    TARGET_PROBE_INTERVAL,
    ReplicationRuntime,
    RuntimeOptions,
)
from praefect.plugins.replication.state import RepositoryStore
from praefect.plugins.replication.streams import queue_status
from praefect.plugins.replication.worker import WorkerSettings
from praefect.settings import Config
from tests.support.processes import start_node
from tests.support.replication_cluster import (
    NODE_TOKEN,
    VS,
    ReplicaNode,
    StartWorker,
    eventually,
    make_bare_repo,
    refs_of,
    unreachable_node,
)
from tests.support.router import router_settings_mapping

NAMES = ["gitaly-1", "gitaly-2"]
SETTINGS = WorkerSettings(
    block=0.2,
    claim_idle=2.0,
    backoff_initial=0.1,
    backoff_max=0.4,
    backoff_jitter=0.0,
    trim_interval=0.2,
    call_timeout=30,
    max_attempts=2,
    target_probe_interval=0.1,
    probe_timeout=1.0,
)


@pytest.fixture
def node_names() -> list[str]:
    return NAMES


@pytest.fixture
def worker_settings() -> WorkerSettings:
    return SETTINGS


async def test_events_for_a_target_that_is_down_wait_for_it_and_then_replicate(
    nodes: dict[str, ReplicaNode], client: aioredis.Redis, store: RepositoryStore,
    run_worker: StartWorker,
) -> None:
    source = make_bare_repo(nodes["gitaly-1"].storage, "waits.git", 2)
    down = nodes["gitaly-2"]
    assert down.process is not None
    await asyncio.to_thread(down.process.kill9)
    clients = NodeClients(node.endpoint() for node in nodes.values())
    await store.track_repository(VS, "waits.git", primary="gitaly-1", assigned=NAMES)
    worker = await run_worker(clients, "gitaly-2")
    try:

        async def probed_for_a_while() -> bool:
            # 10 probes at 0.1 s: longer than two attempts with 0.1 s backoff
            return bool(worker.stats.target_probes >= 10)

        await eventually(probed_for_a_while, what="the worker to probe the target that is down")
        status = await queue_status(client, VS, "gitaly-2")
        assert (status.pending, status.dead_lettered) == (1, 0), status
        assert (worker.stats.retried, worker.stats.dead_lettered) == (0, 0)
        assert worker.stats.target_down == 1, "one failed call, then only probes"

        down.process = await asyncio.to_thread(
            start_node, {"gitaly-2": down.storage}, NODE_TOKEN, down.address.removeprefix("tcp://")
        )

        async def replicated() -> bool:
            metadata = await store.require(VS, "waits.git")
            status = await queue_status(client, VS, "gitaly-2")
            return bool(metadata.replica_generation("gitaly-2") == 0 and status.pending == 0)

        await eventually(replicated, what="the returned target to get the repository")
        assert refs_of(down.repo("waits.git")) == refs_of(source)
        assert (await queue_status(client, VS, "gitaly-2")).dead_lettered == 0
    finally:
        await worker.stop()
        await clients.close()


async def test_a_target_that_answers_but_fails_uses_up_its_attempts(
    nodes: dict[str, ReplicaNode], client: aioredis.Redis, store: RepositoryStore, tmp_path: Path,
    run_worker: StartWorker,
) -> None:
    # The target is up; the source it must fetch from is not.
    gone = unreachable_node(tmp_path, "gitaly-gone")
    clients = NodeClients([nodes["gitaly-2"].endpoint(), gone.endpoint()])
    await store.track_repository(VS, "orphan.git", primary="gitaly-gone", assigned=["gitaly-gone", "gitaly-2"])
    worker = await run_worker(clients, "gitaly-2")
    try:

        async def dead_lettered() -> bool:
            return bool((await queue_status(client, VS, "gitaly-2")).dead_lettered == 1)

        await eventually(dead_lettered, what="the event to be dead-lettered after two attempts")
        assert worker.stats.target_down == 0, "the target answered its health check"
        assert worker.stats.retried == 1
    finally:
        await worker.stop()
        await clients.close()


async def test_routers_hold_events_for_a_target_that_is_down(redis_server: EmbeddedRedis) -> None:
    assert WorkerSettings().target_probe_interval == 0, "off for a bare worker"
    nodes = {name: f"tcp://127.0.0.1:{9 + index}" for index, name in enumerate(NAMES)}
    settings = Config.from_mapping(
        router_settings_mapping(
            nodes,
            redis={"url": redis_server.url},
            replication={"claim_idle": 7, "call_timeout": 900, "concurrency": 2},
        )
    )
    runtime = ReplicationRuntime(settings, options=RuntimeOptions(intents=False))
    await runtime.start()
    try:
        assert runtime.workers is not None
        worker_settings = {worker.settings for worker in runtime.workers.workers}
        assert {
            (s.target_probe_interval, s.claim_idle, s.call_timeout, s.concurrency)
            for s in worker_settings
        } == {(TARGET_PROBE_INTERVAL, 7.0, 900.0, 2)}
    finally:
        await runtime.stop()
