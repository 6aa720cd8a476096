"""`praefect failover`, `accept-dataloss` and `metadata` against a real Redis.

The commands only read and change state in Redis, so the repositories'
state is set up there directly; the nodes' addresses are never dialled.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from praefect.core.mutation import ChangeType
from praefect.plugins.failover.votes import HealthVotes
from praefect.plugins.replication.embedded_redis import EmbeddedRedis
from praefect.plugins.replication.state import RepositoryStore
from praefect.settings import to_toml
from tests.support.failover_cluster import VS
from tests.support.processes import PRAEFECT
from tests.support.router import clean_env, router_settings_mapping

NODES = ("gitaly-1", "gitaly-2", "gitaly-3")


@pytest.fixture
def config(tmp_path: Path, redis_server: EmbeddedRedis) -> Path:
    mapping = router_settings_mapping(
        {name: f"tcp://127.0.0.1:{9000 + i}" for i, name in enumerate(NODES)},
        redis={"url": redis_server.url},
    )
    path = tmp_path / "praefect.toml"
    path.write_text(to_toml(mapping))
    return path


async def praefect(config: Path, *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *PRAEFECT, *args, "--config", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**clean_env(), "COLUMNS": "200"},  # rich would wrap table cells at 80
    )
    out, _ = await process.communicate()
    return process.returncode or 0, out.decode()


async def repository(
    store: RepositoryStore, path: str, *, writes: int, behind: dict[str, int], primary: str = "gitaly-1"
) -> None:
    """Tracked on NODES with ``primary``; after ``writes`` writes the nodes in ``behind`` lack that many."""
    await store.track_repository(VS, path, primary=primary, assigned=NODES)
    for _ in range(writes):
        await store.record_mutation(VS, path, change=ChangeType.UPDATE, source=primary, assigned=NODES)
    for name in NODES:
        if name != primary:
            await store.set_replica_generation(VS, path, name, writes - behind.get(name, 0))


async def test_failover_moves_current_repositories_and_refuses_an_outdated_target(
    config: Path, store: RepositoryStore
) -> None:
    await repository(store, "a.git", writes=3, behind={"gitaly-3": 2})
    await repository(store, "b.git", writes=2, behind={})
    await repository(store, "c.git", writes=1, behind={}, primary="gitaly-3")
    status, out = await praefect(config, "failover", "--to", "gitaly-3")
    assert status == 1, out
    assert "refused: gitaly-3 is behind by 2 changes, which would be lost" in out
    assert "already the primary" in out and "1 moved, 1 refused, 1 unchanged." in out
    assert [(await store.require(VS, p)).primary for p in ("a.git", "b.git", "c.git")] == [
        "gitaly-1", "gitaly-3", "gitaly-3",
    ]


async def test_forced_failover_to_an_outdated_node_reports_and_accepts_the_loss(
    config: Path, store: RepositoryStore, client: aioredis.Redis
) -> None:
    await repository(store, "a.git", writes=3, behind={"gitaly-3": 2})
    status, out = await praefect(
        config, "failover", "--to", "gitaly-3", "--relative-path", "a.git", "--force"
    )
    assert status == 0, out
    assert "forced: 2 changes lost; gitaly-3 is authoritative at generation 4" in out
    after = await store.require(VS, "a.git")
    assert (after.primary, after.generation, after.up_to_date) == ("gitaly-3", 4, ("gitaly-3",))
    assert await client.hget(store.keys(VS).repository("a.git"), "acked") == "4"
    assert await client.xlen(store.keys(VS).events("gitaly-1")) >= 1, "the others replicate from gitaly-3"


async def test_a_write_recorded_after_the_command_looked_is_never_lost_by_the_move(
    store: RepositoryStore, client: aioredis.Redis
) -> None:
    # The command reads a repository, then moves it; a write recorded in
    # between leaves the target behind. Without --force the move is refused;
    # with it, the change the target lacks now is reported as lost.
    from praefect.core.cli.failover_cmd import _move, _Redis
    from praefect.plugins.failover.election import Elector

    votes = HealthVotes(client, window=10.0)
    redis = _Redis(store, votes, Elector(store, votes.scripts))
    await repository(store, "race.git", writes=2, behind={})
    looked = await store.require(VS, "race.git")
    await store.record_mutation(VS, "race.git", change=ChangeType.UPDATE, source="gitaly-1", assigned=NODES)

    move = await _move(redis, looked, "gitaly-2", force=False)
    assert move.refused and "gitaly-2 fell behind meanwhile" in move.result, move
    assert (await store.require(VS, "race.git")).primary == "gitaly-1"

    move = await _move(redis, looked, "gitaly-2", force=True)
    assert not move.refused and move.result.startswith("forced: 1 change lost"), move
    after = await store.require(VS, "race.git")
    assert after.primary == "gitaly-2" and after.is_up_to_date("gitaly-2"), after


async def test_failover_to_a_node_the_routers_see_down_is_refused(
    config: Path, store: RepositoryStore, client: aioredis.Redis
) -> None:
    await repository(store, "a.git", writes=1, behind={})
    await HealthVotes(client, window=5).vote(VS, "router-1", {"gitaly-2": False})
    status, out = await praefect(config, "failover", "--to", "gitaly-2")
    assert status == 1
    assert "gitaly-2 is down in the routers' health view" in out
    assert (await store.require(VS, "a.git")).primary == "gitaly-1"


async def test_failover_names_unknown_nodes_and_repositories(config: Path, store: RepositoryStore) -> None:
    status, out = await praefect(config, "failover", "--to", "gitaly-9")
    assert status == 1 and "node 'gitaly-9' is not in virtual storage 'praefect'" in out
    status, out = await praefect(config, "failover", "--to", "gitaly-2", "--relative-path", "no.git")
    assert status == 1 and "repository 'no.git' is not tracked" in out


async def test_accept_dataloss_makes_the_chosen_replica_authoritative_and_primary(
    config: Path, store: RepositoryStore, client: aioredis.Redis
) -> None:
    await repository(store, "a.git", writes=4, behind={"gitaly-2": 1, "gitaly-3": 3})
    status, out = await praefect(
        config, "accept-dataloss", "--relative-path", "a.git", "--authoritative-storage", "gitaly-2"
    )
    assert status == 0, out
    assert "gitaly-2 is now authoritative for a.git in praefect at generation 5, and its primary." in out
    assert "Accepted the loss of 1 change that gitaly-2 lacked." in out
    assert "Replication from gitaly-2 to gitaly-1, gitaly-3 is scheduled." in out
    after = await store.require(VS, "a.git")
    assert (after.primary, after.generation, after.up_to_date) == ("gitaly-2", 5, ("gitaly-2",))
    assert await client.hget(store.keys(VS).repository("a.git"), "acked") == "5"


async def test_accept_dataloss_refuses_a_node_without_a_replica(config: Path, store: RepositoryStore) -> None:
    await store.track_repository(VS, "a.git", primary="gitaly-1", assigned=NODES)
    status, out = await praefect(
        config, "accept-dataloss", "--relative-path", "a.git", "--authoritative-storage", "gitaly-3"
    )
    assert status == 1
    assert "gitaly-3 has no replica of 'a.git': choose a node that has one" in out
    assert (await store.require(VS, "a.git")).generation == 0, "nothing changed"


async def test_metadata_shows_primary_generations_health_and_assignment(
    config: Path, store: RepositoryStore, client: aioredis.Redis
) -> None:
    await repository(store, "a.git", writes=3, behind={"gitaly-3": 2})
    await HealthVotes(client, window=5).vote(VS, "router-1", {"gitaly-1": False})
    status, out = await praefect(config, "metadata", "--relative-path", "a.git")
    assert status == 0, out
    assert "Primary: gitaly-1" in out and "Generation: 3" in out
    assert "Acknowledged generation: 3 (not recorded)" in out
    assert "primary down; failover to gitaly-2 possible" in out
    rows = {line.split()[1]: line for line in out.splitlines() if line.startswith("│ gitaly-")}
    assert "primary" in rows["gitaly-1"] and "no (down since" in rows["gitaly-1"]
    assert "behind by 2 changes" in rows["gitaly-3"] and "yes" in rows["gitaly-3"]
    assert set(rows) == set(NODES)
