"""RepositoryService: OptimizeRepository."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from grpc import aio

from praefect.protos.gitaly import repository_pb2 as pb
from praefect.protos.gitaly import repository_pb2_grpc
from tests.support.gitenv import git, make_work_repo
from tests.support.repository_calls import (
    checksum,
    create,
    expect_error,
    node_auth,
    repo,
    repository_stub,
)

Strategy = pb.OptimizeRepositoryRequest.Strategy


def objects(path: Path) -> dict[str, int]:
    stats = {}
    for line in git(["count-objects", "-v"], cwd=path).splitlines():
        key, _, value = line.partition(":")
        stats[key] = int(value)
    return stats


async def seeded(channel: aio.Channel, tmp_path: Path, pushes: int = 3) -> tuple[repository_pb2_grpc.RepositoryServiceStub, Path]:
    """A repository that received several small pushes (loose objects, loose refs)."""
    stub = repository_stub(channel)
    await create(stub, "opt.git")
    path = tmp_path / "storage" / "opt.git"
    work = make_work_repo(tmp_path / "work", commits=1)
    for i in range(pushes):
        (work / f"more{i}.txt").write_text(f"{i}\n")
        git(["add", "."], cwd=work)
        git(["commit", "-q", "-m", f"more {i}"], cwd=work)
        git(["push", "-q", str(path), f"main:refs/heads/b{i}"], cwd=work)
    return stub, path


async def optimize(stub: repository_pb2_grpc.RepositoryServiceStub, strategy: int) -> None:
    await stub.OptimizeRepository(
        pb.OptimizeRepositoryRequest(repository=repo("opt.git"), strategy=Strategy.ValueType(strategy)),
        metadata=node_auth(),
    )


async def test_eager_repacks_everything_into_one_pack_with_a_bitmap(channel: aio.Channel, tmp_path: Path) -> None:
    stub, path = await seeded(channel, tmp_path)
    before = await checksum(stub, repo("opt.git"))
    assert objects(path)["count"] > 0

    await optimize(stub, Strategy.STRATEGY_EAGER)

    stats = objects(path)
    assert stats["count"] == 0
    assert stats["packs"] == 1
    assert list((path / "objects" / "pack").glob("*.bitmap"))
    assert (path / "packed-refs").is_file() and not list((path / "refs" / "heads").iterdir())
    assert (path / "objects" / "info" / "commit-graphs" / "commit-graph-chain").is_file()
    assert await checksum(stub, repo("opt.git")) == before
    git(["fsck", "--no-progress"], cwd=path)


@pytest.mark.parametrize("strategy", [Strategy.STRATEGY_HEURISTICAL, Strategy.STRATEGY_UNSPECIFIED])
async def test_heuristical_packs_loose_objects(channel: aio.Channel, tmp_path: Path, strategy: int) -> None:
    stub, path = await seeded(channel, tmp_path)
    before = await checksum(stub, repo("opt.git"))

    await optimize(stub, strategy)

    stats = objects(path)
    assert stats["count"] == 0 and stats["packs"] >= 1
    assert (path / "packed-refs").is_file()
    assert await checksum(stub, repo("opt.git")) == before


async def test_optimizing_an_empty_repository_succeeds(channel: aio.Channel) -> None:
    stub = repository_stub(channel)
    await create(stub, "opt.git")
    await optimize(stub, Strategy.STRATEGY_EAGER)
    await optimize(stub, Strategy.STRATEGY_HEURISTICAL)


@pytest.mark.parametrize("strategy", [Strategy.STRATEGY_OFFLOADING, Strategy.STRATEGY_REHYDRATION, 42])
async def test_unsupported_strategies_are_invalid(channel: aio.Channel, strategy: int) -> None:
    stub = repository_stub(channel)
    await create(stub, "opt.git")
    error = await expect_error(optimize(stub, strategy), grpc.StatusCode.INVALID_ARGUMENT)
    assert "STRATEGY_EAGER" in (error.details() or "")


async def test_optimizing_a_missing_repository_is_not_found(channel: aio.Channel) -> None:
    error = await expect_error(optimize(repository_stub(channel), Strategy.STRATEGY_EAGER), grpc.StatusCode.NOT_FOUND)
    assert "opt.git" in (error.details() or "")
