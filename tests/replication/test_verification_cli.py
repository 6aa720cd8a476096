"""`praefect verify`, run as a real process against a real Redis."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from praefect.core.mutation import ChangeType
from praefect.plugins.replication.embedded_redis import EmbeddedRedis
from praefect.plugins.replication.state import RepositoryStore
from praefect.plugins.replication.verification_store import VerificationStore
from tests.support.replication_cluster import VS
from tests.support.router import clean_env, write_settings

NAMES = ["gitaly-1", "gitaly-2", "gitaly-3"]
PRAEFECT = [sys.executable, "-m", "praefect.core.cli"]


@pytest.fixture
def config(tmp_path: Path, redis_server: EmbeddedRedis, redis_dir: Path) -> Path:
    # Nothing listens there: `verify` only marks, in Redis.
    return write_settings(
        tmp_path / "praefect.toml",
        {name: f"tcp://127.0.0.1:{1000 + index}" for index, name in enumerate(NAMES)},
        redis={"data_dir": str(redis_dir)},
    )


async def _praefect(config: Path, *args: str) -> tuple[int, str, str]:
    env = clean_env()
    env["COLUMNS"] = "250"
    process = await asyncio.create_subprocess_exec(
        *PRAEFECT, *args, "--config", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )
    async with asyncio.timeout(30):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def _repositories(store: RepositoryStore) -> None:
    """a.git and b.git on every node; c.git with no replica on gitaly-2 yet."""
    for path in ("a.git", "b.git", "c.git"):
        await store.track_repository(VS, path, primary="gitaly-1", assigned=NAMES)
        for name in ("gitaly-2", "gitaly-3"):
            if (path, name) != ("c.git", "gitaly-2"):
                await store.set_replica_generation(VS, path, name, 0)


async def test_verify_node_marks_every_replica_of_the_node(config: Path, store: RepositoryStore) -> None:
    await _repositories(store)
    code, out, err = await _praefect(config, "verify", "--node", "gitaly-2")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "Marked 2 replicas on gitaly-2 in praefect for verification."
    assert lines[1].startswith("1 more repositories assigned to gitaly-2 have no replica there yet")
    verifications = VerificationStore(store)
    for path in ("a.git", "b.git"):
        entries = await verifications.entries(VS, path, NAMES)
        assert entries["gitaly-2"].marked, path
        assert entries["gitaly-1"].score is None and entries["gitaly-3"].score is None, "only gitaly-2"
    assert (await verifications.entries(VS, "c.git", ["gitaly-2"]))["gitaly-2"].score is None


async def test_verify_relative_path_prints_the_replicas_it_marked(
    config: Path, store: RepositoryStore
) -> None:
    await _repositories(store)
    await store.record_mutation(VS, "c.git", change=ChangeType.UPDATE, source="gitaly-1", assigned=NAMES)
    code, out, err = await _praefect(config, "verify", "--relative-path", "c.git")
    assert code == 0, err
    rows = {cells[0]: cells[1:] for cells in map(_cells, out.splitlines()) if cells[:1] and cells[0].startswith("gitaly-")}
    assert rows["gitaly-1"] == ["primary", "1", "-", "yes"], "never seeded by a worker: not in the due set"
    assert rows["gitaly-2"] == ["replica", "-", "-", "no: no replica yet (nothing to verify)"]
    assert rows["gitaly-3"] == ["replica", "0", "-", "yes"]
    assert "Marked 2 replicas for verification" in out
    entries = await VerificationStore(store).entries(VS, "c.git", NAMES)
    assert [entries[name].marked for name in NAMES] == [True, False, True]


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.split("│") if cell.strip()]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--node", "gitaly-9"], 1, "node 'gitaly-9' is not in virtual storage 'praefect' (it has gitaly-1"),
        (["--relative-path", "nowhere.git"], 1, "repository 'nowhere.git' is not tracked in virtual storage"),
        (["--virtual-storage", "other", "--node", "gitaly-1"], 1, "unknown virtual storage 'other'"),
        (["--node", "gitaly-1", "--relative-path", "a.git"], 2, "give --node NODE or --relative-path PATH"),
    ],
)
async def test_verify_refuses_what_it_cannot_mark(
    config: Path, store: RepositoryStore, args: list[str], code: int, message: str
) -> None:
    await _repositories(store)
    status, out, err = await _praefect(config, "verify", *args)
    assert status == code, (out, err)
    assert message in err, err
    assert await store.client.keys("*verify*") == [], "nothing was marked"


async def test_verify_says_when_verification_is_off(
    tmp_path: Path, redis_server: EmbeddedRedis, redis_dir: Path, store: RepositoryStore
) -> None:
    await _repositories(store)
    config = write_settings(
        tmp_path / "off.toml",
        {name: f"tcp://127.0.0.1:{1000 + index}" for index, name in enumerate(NAMES)},
        redis={"data_dir": str(redis_dir)},
        replication={"verification_interval": 0},
    )
    code, out, err = await _praefect(config, "verify", "--node", "gitaly-3")
    assert code == 0, err
    assert out.startswith("Marked 3 replicas on gitaly-3")
    assert "replication.verification_interval is 0" in err
