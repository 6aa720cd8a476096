"""Bad repositories and tokens on every RPC of RepositoryService and SSHService:
the precise code, a message naming the field, nothing created on disk, and
never a storage's absolute path in the message."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import grpc
import pytest
from grpc import aio

from praefect.protos.gitaly import repository_pb2 as pb
from praefect.protos.gitaly import shared_pb2, ssh_pb2, ssh_pb2_grpc
from tests.support.grpc_client import auth
from tests.support.repository_calls import expect_error, files_under, node_auth, repository_stub

Call = Callable[[aio.Channel, shared_pb2.Repository | None, Sequence[tuple[str, str]]], Awaitable[object]]


async def _stream(call: AsyncIterator[object]) -> None:
    async for _ in call:
        pass


def _req(message: type, repository: shared_pb2.Repository | None, **fields: object) -> object:
    return message(repository=repository, **fields) if repository is not None else message(**fields)


async def _one(request: object) -> AsyncIterator[object]:
    yield request


CALLS: dict[str, Call] = {
    "RepositoryExists": lambda ch, r, md: repository_stub(ch).RepositoryExists(_req(pb.RepositoryExistsRequest, r), metadata=md),
    "CreateRepository": lambda ch, r, md: repository_stub(ch).CreateRepository(_req(pb.CreateRepositoryRequest, r), metadata=md),
    "RemoveRepository": lambda ch, r, md: repository_stub(ch).RemoveRepository(_req(pb.RemoveRepositoryRequest, r), metadata=md),
    "RepositorySize": lambda ch, r, md: repository_stub(ch).RepositorySize(_req(pb.RepositorySizeRequest, r), metadata=md),
    "ObjectFormat": lambda ch, r, md: repository_stub(ch).ObjectFormat(_req(pb.ObjectFormatRequest, r), metadata=md),
    "HasLocalBranches": lambda ch, r, md: repository_stub(ch).HasLocalBranches(_req(pb.HasLocalBranchesRequest, r), metadata=md),
    "WriteRef": lambda ch, r, md: repository_stub(ch).WriteRef(
        _req(pb.WriteRefRequest, r, ref=b"refs/heads/x", revision=b"0" * 40), metadata=md
    ),
    "CalculateChecksum": lambda ch, r, md: repository_stub(ch).CalculateChecksum(_req(pb.CalculateChecksumRequest, r), metadata=md),
    "ReplicateRepository": lambda ch, r, md: repository_stub(ch).ReplicateRepository(
        _req(pb.ReplicateRepositoryRequest, r, source=shared_pb2.Repository(storage_name="elsewhere", relative_path="x.git")),
        metadata=md,
    ),
    "OptimizeRepository": lambda ch, r, md: repository_stub(ch).OptimizeRepository(_req(pb.OptimizeRepositoryRequest, r), metadata=md),
    "CreateBundle": lambda ch, r, md: _stream(repository_stub(ch).CreateBundle(_req(pb.CreateBundleRequest, r), metadata=md)),
    "CreateRepositoryFromBundle": lambda ch, r, md: repository_stub(ch).CreateRepositoryFromBundle(
        _one(_req(pb.CreateRepositoryFromBundleRequest, r, data=b"# v2 git bundle\n")), metadata=md
    ),
    "FindMergeBase": lambda ch, r, md: repository_stub(ch).FindMergeBase(
        _req(pb.FindMergeBaseRequest, r, revisions=[b"a", b"b"]), metadata=md
    ),
    "SSHUploadPack": lambda ch, r, md: _stream(
        ssh_pb2_grpc.SSHServiceStub(ch).SSHUploadPack(_one(_req(ssh_pb2.SSHUploadPackRequest, r)), metadata=md)
    ),
    "SSHReceivePack": lambda ch, r, md: _stream(
        ssh_pb2_grpc.SSHServiceStub(ch).SSHReceivePack(_one(_req(ssh_pb2.SSHReceivePackRequest, r)), metadata=md)
    ),
}

BAD_REPOSITORIES: dict[str, tuple[shared_pb2.Repository | None, str]] = {
    "missing": (None, "repository is required"),
    "empty-storage": (shared_pb2.Repository(relative_path="a.git"), "storage_name"),
    "empty-path": (shared_pb2.Repository(storage_name="default"), "relative_path"),
    "dot-dot": (shared_pb2.Repository(storage_name="default", relative_path="../outside/evil.git"), "'..'"),
    "dot-dot-inside": (shared_pb2.Repository(storage_name="default", relative_path="a/../../outside/evil.git"), "'..'"),
    "absolute": (shared_pb2.Repository(storage_name="default", relative_path="{outside}/evil.git"), "absolute"),
    "symlink-out": (shared_pb2.Repository(storage_name="default", relative_path="link/evil.git"), "symbolic link"),
    "unknown-storage": (shared_pb2.Repository(storage_name="nope", relative_path="a.git"), "unknown storage"),
    "internal-directory": (shared_pb2.Repository(storage_name="default", relative_path="+praefect/tmp/x.git"), "internal"),
}


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """The storage (with a symlink `link` pointing outside it) and the outside directory."""
    storage, outside = tmp_path / "storage", tmp_path / "outside"
    storage.mkdir(exist_ok=True)
    outside.mkdir()
    (storage / "link").symlink_to(outside)
    return storage, outside


@pytest.mark.parametrize("case", list(BAD_REPOSITORIES))
@pytest.mark.parametrize("method", list(CALLS))
async def test_bad_repository_is_invalid_argument_and_touches_nothing(
    channel: aio.Channel, layout: tuple[Path, Path], tmp_path: Path, method: str, case: str
) -> None:
    storage, outside = layout
    repository, text = BAD_REPOSITORIES[case]
    if repository is not None and repository.relative_path.startswith("{outside}"):
        repository = shared_pb2.Repository(
            storage_name=repository.storage_name, relative_path=repository.relative_path.format(outside=outside)
        )
    before = files_under(storage)

    error = await expect_error(CALLS[method](channel, repository, node_auth()), grpc.StatusCode.INVALID_ARGUMENT)

    details = error.details() or ""
    assert text in details
    assert str(storage) not in details
    assert files_under(storage) == before
    assert files_under(outside) == set()


@pytest.mark.parametrize(
    "method", [m for m in CALLS if m not in ("RepositoryExists", "CreateRepository", "CreateRepositoryFromBundle", "ReplicateRepository")]
)
async def test_missing_repository_is_not_found_naming_the_path(channel: aio.Channel, tmp_path: Path, method: str) -> None:
    missing = shared_pb2.Repository(storage_name="default", relative_path="group/missing.git")
    error = await expect_error(CALLS[method](channel, missing, node_auth()), grpc.StatusCode.NOT_FOUND)
    details = error.details() or ""
    assert "group/missing.git" in details
    assert str(tmp_path) not in details


@pytest.mark.parametrize("method", ["CreateRepository", "SSHUploadPack", "CalculateChecksum"])
async def test_tokens_are_required(channel: aio.Channel, tmp_path: Path, method: str) -> None:
    repository = shared_pb2.Repository(storage_name="default", relative_path="t.git")

    await expect_error(CALLS[method](channel, repository, ()), grpc.StatusCode.UNAUTHENTICATED)
    await expect_error(CALLS[method](channel, repository, auth("wrong-token")), grpc.StatusCode.PERMISSION_DENIED)
    assert not (tmp_path / "storage" / "t.git").exists()
