"""`praefect failover`, `accept-dataloss` and `metadata` with a copy running into the node.

The commands run as processes against a real Redis; the copy is a lease
taken in Redis the way a replication worker takes it (the nodes' addresses
are never dialled).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from praefect.core.mutation import ChangeType
from praefect.plugins.replication.embedded_redis import EmbeddedRedis
from praefect.plugins.replication.state import RepositoryStore
from praefect.settings import to_toml
from tests.support.failover_cluster import VS
from tests.support.processes import PRAEFECT
from tests.support.router import clean_env, router_settings_mapping

NODES = ("gitaly-1", "gitaly-2", "gitaly-3")
PATH = "a.git"
LONG = 120.0
#: how long a test waits for a command
COMMAND_TIMEOUT = 30


@pytest.fixture
def config(tmp_path: Path, redis_server: EmbeddedRedis) -> Path:
    mapping = router_settings_mapping(
        {name: f"tcp://127.0.0.1:{9000 + i}" for i, name in enumerate(NODES)},
        redis={"url": redis_server.url},
    )
    path = tmp_path / "praefect.toml"
    path.write_text(to_toml(mapping))
    return path


async def _start(config: Path, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *PRAEFECT, *args, "--config", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**clean_env(), "COLUMNS": "200"},  # rich would wrap table cells at 80
    )


async def praefect(config: Path, *args: str) -> tuple[int, str]:
    process = await _start(config, *args)
    out, err = await asyncio.wait_for(process.communicate(), COMMAND_TIMEOUT)
    return process.returncode or 0, out.decode() + err.decode()


async def _repository(store: RepositoryStore) -> None:
    """Primary gitaly-1 after one write; gitaly-2 and gitaly-3 up to date."""
    await store.track_repository(VS, PATH, primary="gitaly-1", assigned=NODES)
    await store.record_mutation(VS, PATH, change=ChangeType.UPDATE, source="gitaly-1", assigned=NODES)
    for name in ("gitaly-2", "gitaly-3"):
        await store.set_replica_generation(VS, PATH, name, 1)


async def test_failover_to_a_node_being_copied_into_waits_then_refuses(
    config: Path, store: RepositoryStore
) -> None:
    await _repository(store)
    await store.take_copy_lease(VS, PATH, "gitaly-2", ttl=LONG)
    status, out = await praefect(
        config, "failover", "--to", "gitaly-2", "--relative-path", PATH, "--copy-wait", "0.3"
    )
    assert status == 1, out
    assert "a.git: a copy (replication) into gitaly-2 is running; waiting up to 0." in out
    assert (
        "refused: a copy (replication) into gitaly-2 is still running, and gitaly-2 cannot "
        "become primary before it ends; run again in a moment"
    ) in " ".join(out.split()), out
    assert "Copies into gitaly-2 were still running" in out
    assert "--force to lose what it lacks" not in out, "--force would not help"
    assert (await store.require(VS, PATH)).primary == "gitaly-1", "nothing moved"


async def test_failover_moves_as_soon_as_the_copy_into_the_node_ends(
    config: Path, store: RepositoryStore
) -> None:
    await _repository(store)
    lease = await store.take_copy_lease(VS, PATH, "gitaly-2", ttl=LONG)
    process = await _start(
        config, "failover", "--to", "gitaly-2", "--relative-path", PATH, "--copy-wait", "60"
    )
    assert process.stderr is not None
    line = await asyncio.wait_for(process.stderr.readline(), COMMAND_TIMEOUT)
    assert b"a copy (replication) into gitaly-2 is running; waiting up to" in line, line
    assert await store.release_copy_lease(lease), "the copy ends while the command waits"
    out, _ = await asyncio.wait_for(process.communicate(), COMMAND_TIMEOUT)
    assert process.returncode == 0, out.decode()
    assert "1 moved, 0 refused, 0 unchanged." in out.decode()
    assert (await store.require(VS, PATH)).primary == "gitaly-2"


async def test_accept_dataloss_does_not_make_a_node_being_copied_into_the_primary(
    config: Path, store: RepositoryStore
) -> None:
    await _repository(store)
    await store.take_copy_lease(VS, PATH, "gitaly-3", ttl=LONG)
    status, out = await praefect(
        config, "accept-dataloss", "--relative-path", PATH, "--authoritative-storage", "gitaly-3",
        "--copy-wait", "0.2",
    )
    assert status == 1, out
    flat = " ".join(out.split())
    assert (
        "gitaly-3 is now authoritative for a.git in praefect at generation 2, but not its "
        "primary yet: a copy (replication) into gitaly-3 is still running"
    ) in flat, out
    assert "Run `praefect failover --to gitaly-3 --relative-path a.git` in a moment." in flat
    after = await store.require(VS, PATH)
    assert (after.primary, after.generation, after.up_to_date) == ("gitaly-1", 2, ("gitaly-3",))


async def test_metadata_shows_the_copies_running_into_replicas(config: Path, store: RepositoryStore) -> None:
    await _repository(store)
    status, out = await praefect(config, "metadata", "--relative-path", PATH)
    assert status == 0 and "Copies (replication) running into" not in out, out
    await store.take_copy_lease(VS, PATH, "gitaly-3", ttl=LONG)
    status, out = await praefect(config, "metadata", "--relative-path", PATH)
    assert status == 0, out
    assert "Copies (replication) running into: gitaly-3 (lease expires within" in out, out
    assert "not electable as primary until the copy ends" in out
