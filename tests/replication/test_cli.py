"""The replication commands, run as real processes against real Redis and nodes."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from praefect.core.mutation import ChangeType
from praefect.plugins.replication.embedded_redis import EmbeddedRedis
from praefect.plugins.replication.keys import VirtualStorageKeys
from praefect.plugins.replication.state import RepositoryStore
from tests.support.replication_cluster import (
    NODE_TOKEN,
    VS,
    ReplicaNode,
    eventually,
    make_bare_repo,
    refs_of,
    start_nodes,
)
from tests.support.router import clean_env, write_settings

NAMES = ["gitaly-1", "gitaly-2", "gitaly-3"]
PRAEFECT = [sys.executable, "-m", "praefect.core.cli"]


@dataclass
class Setup:
    nodes: dict[str, ReplicaNode]
    config: Path

    async def run(self, *args: str) -> tuple[int, str, str]:
        env = clean_env()
        env["COLUMNS"] = "250"  # rich wraps tables at the terminal width
        process = await asyncio.create_subprocess_exec(
            *PRAEFECT, *args, "--config", str(self.config),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
        )
        async with asyncio.timeout(30):
            out, err = await process.communicate()
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()


@pytest.fixture
async def setup(tmp_path: Path, redis_server: EmbeddedRedis, redis_dir: Path) -> AsyncIterator[Setup]:
    nodes = {node.name: node for node in await start_nodes(tmp_path / "nodes", NAMES)}
    # No redis.url: the commands find the embedded Redis's socket in redis.data_dir.
    config = write_settings(
        tmp_path / "praefect.toml",
        {name: node.address for name, node in nodes.items()},
        node_tokens=dict.fromkeys(NAMES, NODE_TOKEN),
        redis={"data_dir": str(redis_dir)},
    )
    try:
        yield Setup(nodes, config)
    finally:
        for node in nodes.values():
            node.stop()


async def test_dataloss_says_when_everything_is_up_to_date(setup: Setup, store: RepositoryStore) -> None:
    await store.track_repository(VS, "fine.git", primary="gitaly-1", assigned=NAMES)
    for name in NAMES[1:]:
        await store.set_replica_generation(VS, "fine.git", name, 0)
    code, out, err = await setup.run("dataloss")
    assert (code, out.strip()) == (0, "All repositories are up to date"), err


async def test_dataloss_lists_outdated_replicas(setup: Setup, store: RepositoryStore) -> None:
    await store.track_repository(VS, "lagging.git", primary="gitaly-1", assigned=NAMES)
    for _ in range(2):
        await store.record_mutation(VS, "lagging.git", change=ChangeType.UPDATE, source="gitaly-1", assigned=NAMES)
    await store.set_replica_generation(VS, "lagging.git", "gitaly-2", 1)
    await store.set_replica_generation(VS, "lagging.git", "gitaly-3", 2)
    code, out, err = await setup.run("dataloss")
    assert code == 0, err
    [row] = [line for line in out.splitlines() if "lagging.git" in line]
    assert "gitaly-1" in row
    assert "gitaly-1, gitaly-3" in row, "in-sync replicas"
    assert "gitaly-2 (behind by 1 change)" in row


async def test_replication_status_shows_each_target_queue(
    setup: Setup, store: RepositoryStore, client: aioredis.Redis
) -> None:
    await store.track_repository(VS, "queued.git", primary="gitaly-1", assigned=NAMES)
    await store.record_mutation(VS, "queued.git", change=ChangeType.UPDATE, source="gitaly-1", assigned=NAMES)
    await client.xadd(VirtualStorageKeys(VS).dead_letters("gitaly-3"), {"error": "UNAVAILABLE"})
    code, out, err = await setup.run("replication", "status")
    assert code == 0, err
    rows = {line.split()[3]: line.split() for line in out.splitlines() if "gitaly-" in line}
    assert rows["gitaly-1"][5] == "0"  # pending
    assert rows["gitaly-2"][5] == "2"
    assert rows["gitaly-3"][5] == "2"
    assert rows["gitaly-3"][-2] == "1", "dead-lettered"


async def test_track_repository_tracks_and_queues_replication(setup: Setup, store: RepositoryStore) -> None:
    make_bare_repo(setup.nodes["gitaly-2"].storage, "imported.git", 1)
    code, out, err = await setup.run(
        "track-repository", "--relative-path", "imported.git", "--authoritative-storage", "gitaly-2"
    )
    assert code == 0, err
    assert out.strip() == (
        "Tracked imported.git in praefect: primary gitaly-2; replication to gitaly-1, gitaly-3 queued."
    )
    metadata = await store.require(VS, "imported.git")
    assert (metadata.primary, metadata.outdated) == ("gitaly-2", {"gitaly-1": 1, "gitaly-3": 1})

    code, _, err = await setup.run("track-repository", "--relative-path", "imported.git")
    assert code == 1 and "already tracked" in err
    code, _, err = await setup.run("track-repository", "--relative-path", "nowhere.git")
    assert code == 1 and "does not exist on gitaly-1" in err


async def test_remove_repository_is_a_dry_run_without_apply(setup: Setup, store: RepositoryStore) -> None:
    for name in NAMES[:2]:
        make_bare_repo(setup.nodes[name].storage, "old.git", 1)
    await store.track_repository(VS, "old.git", primary="gitaly-1", assigned=NAMES)
    code, out, err = await setup.run("remove-repository", "--relative-path", "old.git")
    assert code == 0, err
    assert out.startswith("Would stop tracking old.git")
    assert await store.get(VS, "old.git") is not None

    code, out, err = await setup.run("remove-repository", "--relative-path", "old.git", "--apply")
    assert code == 0, err
    assert "gitaly-1: deleted" in out and "gitaly-3: had no replica" in out
    assert await store.get(VS, "old.git") is None
    assert not any(setup.nodes[name].repo("old.git").exists() for name in NAMES)


async def test_commands_without_a_reachable_redis_say_what_to_do(tmp_path: Path, setup: Setup) -> None:
    config = write_settings(
        tmp_path / "elsewhere.toml",
        {name: node.address for name, node in setup.nodes.items()},
        redis={"data_dir": str(tmp_path / "no-router-here")},
    )
    code, _, err = await Setup(setup.nodes, config).run("dataloss")
    assert code == 1
    assert "start the router that owns the embedded Redis" in err


@pytest.mark.timeout(90)
async def test_praefect_replicate_runs_workers_on_its_own(setup: Setup, store: RepositoryStore) -> None:
    source = make_bare_repo(setup.nodes["gitaly-1"].storage, "standalone.git", 2)
    await store.track_repository(VS, "standalone.git", primary="gitaly-1", assigned=NAMES)
    # Its replays are traced like a router's (spans printed by the console exporter).
    env = {**clean_env(), "OTEL_TRACES_EXPORTER": "console"}
    process = await asyncio.create_subprocess_exec(
        *PRAEFECT, "replicate", "--config", str(setup.config), "--id", "replicator-1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
    )
    try:
        assert process.stdout is not None
        started = ""
        async with asyncio.timeout(20):  # log lines (stderr) may come first
            while "praefect replicate running as" not in started:
                line = (await process.stdout.readline()).decode()
                assert line, f"praefect replicate exited before it started:\n{started}"
                started += line
        assert "praefect replicate running as replicator-1 with 3 workers" in started, started

        async def replicated() -> bool:
            metadata = await store.require(VS, "standalone.git")
            return bool(metadata.up_to_date == tuple(NAMES))

        await eventually(replicated, within=30, what="the standalone workers to replicate")
        for name in NAMES[1:]:
            assert refs_of(setup.nodes[name].repo("standalone.git")) == refs_of(source)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            rest = (await process.stdout.read()).decode()
            await process.wait()
    assert process.returncode == 0, rest
    assert '"service.name": "praefect-replicate"' in rest and '"name": "replicate ' in rest, (
        f"the standalone workers' replays are traced:\n{rest[-3000:]}"
    )
