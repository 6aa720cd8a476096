"""RepositoryService: exists, create, remove, size, object format, local branches."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import pytest
from grpc import aio

from praefect.node.server import NodeServer
from praefect.protos.gitaly import repository_pb2 as pb
from praefect.protos.gitaly import repository_pb2_grpc, shared_pb2
from tests.support.bridge import NodeRemote, push
from tests.support.gitenv import git, make_work_repo
from tests.support.repository_calls import (
    create,
    expect_error,
    files_under,
    node_auth,
    repo,
    repository_stub,
)


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    return tmp_path / "storage"


async def test_create_makes_a_bare_repository_with_head_on_main(channel: aio.Channel, storage: Path) -> None:
    stub = repository_stub(channel)
    await create(stub, "group/project.git")

    path = storage / "group" / "project.git"
    assert git(["rev-parse", "--is-bare-repository"], cwd=path).strip() == "true"
    assert git(["symbolic-ref", "HEAD"], cwd=path).strip() == "refs/heads/main"
    exists = await stub.RepositoryExists(pb.RepositoryExistsRequest(repository=repo("group/project.git")), metadata=node_auth())
    assert exists.exists


async def test_create_honours_the_default_branch(channel: aio.Channel, storage: Path) -> None:
    stub = repository_stub(channel)
    await create(stub, "a.git", default_branch=b"develop")
    await create(stub, "b.git", default_branch=b"refs/heads/trunk")

    assert git(["symbolic-ref", "HEAD"], cwd=storage / "a.git").strip() == "refs/heads/develop"
    assert git(["symbolic-ref", "HEAD"], cwd=storage / "b.git").strip() == "refs/heads/trunk"


@pytest.mark.parametrize("branch", [b"-evil", b"bad..name", b"with space", b"\xff"])
async def test_create_refuses_a_malformed_default_branch(channel: aio.Channel, storage: Path, branch: bytes) -> None:
    stub = repository_stub(channel)
    error = await expect_error(
        stub.CreateRepository(pb.CreateRepositoryRequest(repository=repo("x.git"), default_branch=branch), metadata=node_auth()),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "default_branch" in (error.details() or "")
    assert not (storage / "x.git").exists()


async def test_create_sha256_and_object_format(channel: aio.Channel, storage: Path) -> None:
    stub = repository_stub(channel)
    await create(stub, "sha256.git", object_format=shared_pb2.OBJECT_FORMAT_SHA256)
    await create(stub, "sha1.git")

    assert git(["rev-parse", "--show-object-format"], cwd=storage / "sha256.git").strip() == "sha256"
    sha256 = await stub.ObjectFormat(pb.ObjectFormatRequest(repository=repo("sha256.git")), metadata=node_auth())
    sha1 = await stub.ObjectFormat(pb.ObjectFormatRequest(repository=repo("sha1.git")), metadata=node_auth())
    assert sha256.format == shared_pb2.OBJECT_FORMAT_SHA256
    assert sha1.format == shared_pb2.OBJECT_FORMAT_SHA1


async def test_create_refuses_an_unknown_object_format(channel: aio.Channel, storage: Path) -> None:
    stub = repository_stub(channel)
    request = pb.CreateRepositoryRequest(repository=repo("x.git"), object_format=shared_pb2.ObjectFormat.ValueType(7))
    error = await expect_error(stub.CreateRepository(request, metadata=node_auth()), grpc.StatusCode.INVALID_ARGUMENT)
    assert "object_format" in (error.details() or "")


async def test_create_twice_is_already_exists(channel: aio.Channel, storage: Path) -> None:
    stub = repository_stub(channel)
    await create(stub, "dup.git")
    error = await expect_error(create(stub, "dup.git"), grpc.StatusCode.ALREADY_EXISTS)
    assert "dup.git" in (error.details() or "")
    assert str(storage) not in (error.details() or "")


async def test_create_over_a_non_repository_directory_is_already_exists(channel: aio.Channel, storage: Path) -> None:
    (storage / "occupied").mkdir(parents=True)
    (storage / "occupied" / "file").write_text("x")
    await expect_error(create(repository_stub(channel), "occupied"), grpc.StatusCode.ALREADY_EXISTS)
    assert (storage / "occupied" / "file").read_text() == "x"


async def test_concurrent_creates_of_one_path_make_exactly_one_repository(channel: aio.Channel, storage: Path) -> None:
    stub = repository_stub(channel)
    results = await asyncio.gather(*(create(stub, "race.git") for _ in range(6)), return_exceptions=True)

    failures = [r for r in results if isinstance(r, BaseException)]
    assert len(failures) == 5, results
    assert all(isinstance(f, aio.AioRpcError) and f.code() == grpc.StatusCode.ALREADY_EXISTS for f in failures)
    assert git(["rev-parse", "--is-bare-repository"], cwd=storage / "race.git").strip() == "true"


async def test_create_leaves_no_scratch_files_behind(channel: aio.Channel, storage: Path) -> None:
    await create(repository_stub(channel), "clean.git")
    assert not [p for p in files_under(storage) if p.startswith("+praefect/tmp/")]


async def test_remove_deletes_the_repository(channel: aio.Channel, storage: Path) -> None:
    stub = repository_stub(channel)
    await create(stub, "group/gone.git")
    await stub.RemoveRepository(pb.RemoveRepositoryRequest(repository=repo("group/gone.git")), metadata=node_auth())

    assert not (storage / "group" / "gone.git").exists()
    assert not [p for p in files_under(storage) if p.startswith("+praefect/tmp/")]
    exists = await stub.RepositoryExists(pb.RepositoryExistsRequest(repository=repo("group/gone.git")), metadata=node_auth())
    assert not exists.exists


async def test_remove_a_missing_repository_is_not_found(channel: aio.Channel) -> None:
    stub = repository_stub(channel)
    error = await expect_error(
        stub.RemoveRepository(pb.RemoveRepositoryRequest(repository=repo("nowhere.git")), metadata=node_auth()),
        grpc.StatusCode.NOT_FOUND,
    )
    assert "nowhere.git" in (error.details() or "")


async def test_repository_exists_is_false_for_a_plain_directory(channel: aio.Channel, storage: Path) -> None:
    (storage / "plain").mkdir(parents=True)
    response = await repository_stub(channel).RepositoryExists(
        pb.RepositoryExistsRequest(repository=repo("plain")), metadata=node_auth()
    )
    assert not response.exists


async def test_repository_size_is_in_kib(channel: aio.Channel, node: NodeServer, storage: Path, tmp_path: Path) -> None:
    stub = repository_stub(channel)
    await create(stub, "sized.git")
    empty = await stub.RepositorySize(pb.RepositorySizeRequest(repository=repo("sized.git")), metadata=node_auth())

    work = make_work_repo(tmp_path / "work", commits=1)
    (work / "random.bin").write_bytes(os.urandom(300 * 1024))  # incompressible
    git(["add", "."], cwd=work)
    git(["commit", "-q", "-m", "big"], cwd=work)
    assert node.bound_addr
    await push(NodeRemote(node.bound_addr, "default", "sized.git", "node-secret-token"), work, "main")
    grown = await stub.RepositorySize(pb.RepositorySizeRequest(repository=repo("sized.git")), metadata=node_auth())

    on_disk = sum(p.stat().st_size for p in (storage / "sized.git").rglob("*") if p.is_file() and not p.is_symlink())
    assert empty.size < 10
    assert grown.size == on_disk // 1024
    assert 300 <= grown.size < 400


async def test_has_local_branches(channel: aio.Channel, node: NodeServer, tmp_path: Path) -> None:
    stub = repository_stub(channel)
    await create(stub, "branches.git")
    before = await stub.HasLocalBranches(pb.HasLocalBranchesRequest(repository=repo("branches.git")), metadata=node_auth())
    assert node.bound_addr
    await push(NodeRemote(node.bound_addr, "default", "branches.git", "node-secret-token"), make_work_repo(tmp_path / "w", 1), "main")
    after = await stub.HasLocalBranches(pb.HasLocalBranchesRequest(repository=repo("branches.git")), metadata=node_auth())

    assert not before.value
    assert after.value


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.RepositorySize(pb.RepositorySizeRequest(repository=repo("missing.git")), metadata=node_auth()),
        lambda s: s.ObjectFormat(pb.ObjectFormatRequest(repository=repo("missing.git")), metadata=node_auth()),
        lambda s: s.HasLocalBranches(pb.HasLocalBranchesRequest(repository=repo("missing.git")), metadata=node_auth()),
    ],
    ids=["RepositorySize", "ObjectFormat", "HasLocalBranches"],
)
async def test_reads_of_a_missing_repository_are_not_found(
    channel: aio.Channel, call: Callable[[repository_pb2_grpc.RepositoryServiceStub], Awaitable[object]]
) -> None:
    error = await expect_error(call(repository_stub(channel)), grpc.StatusCode.NOT_FOUND)
    assert "missing.git" in (error.details() or "")
