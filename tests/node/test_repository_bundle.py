"""RepositoryService: CreateBundle and CreateRepositoryFromBundle."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc import aio

from praefect.protos.gitaly import repository_pb2 as pb
from praefect.protos.gitaly import repository_pb2_grpc, shared_pb2
from tests.support.gitenv import git, make_work_repo
from tests.support.repository_calls import (
    checksum,
    create,
    expect_error,
    files_under,
    node_auth,
    repo,
    repository_stub,
)

CHUNK = 64 * 1024


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    return tmp_path / "storage"


async def seed(stub: repository_pb2_grpc.RepositoryServiceStub, storage: Path, tmp_path: Path, name: str, *, big: bool = False) -> Path:
    """A repository with main, a second branch and a tag; `big` adds 400 KiB of noise."""
    await create(stub, name)
    work = make_work_repo(tmp_path / f"work-{name}", commits=2)
    if big:
        (work / "noise.bin").write_bytes(os.urandom(400 * 1024))
        git(["add", "."], cwd=work)
        git(["commit", "-q", "-m", "noise"], cwd=work)
    git(["branch", "topic", "HEAD~1"], cwd=work)
    git(["tag", "-a", "-m", "release", "v1.0", "HEAD~1"], cwd=work)
    git(["push", "-q", str(storage / name), "main", "topic", "v1.0"], cwd=work)
    return storage / name


async def bundle_bytes(stub: repository_pb2_grpc.RepositoryServiceStub, name: str) -> list[bytes]:
    return [r.data async for r in stub.CreateBundle(pb.CreateBundleRequest(repository=repo(name)), metadata=node_auth())]


async def upload(name: str, chunks: list[bytes], *, first_data: bytes = b"") -> AsyncIterator[pb.CreateRepositoryFromBundleRequest]:
    yield pb.CreateRepositoryFromBundleRequest(repository=repo(name), data=first_data)
    for chunk in chunks:
        yield pb.CreateRepositoryFromBundleRequest(data=chunk)


def show_refs(path: Path) -> str:
    return git(["show-ref", "--head"], cwd=path)


async def test_create_bundle_streams_a_valid_bundle_in_64_kib_chunks(channel: aio.Channel, storage: Path, tmp_path: Path) -> None:
    stub = repository_stub(channel)
    await seed(stub, storage, tmp_path, "big.git", big=True)
    chunks = await bundle_bytes(stub, "big.git")

    assert len(chunks) > 3
    assert all(len(c) == CHUNK for c in chunks[:-1]) and 0 < len(chunks[-1]) <= CHUNK
    bundle = tmp_path / "out.bundle"
    bundle.write_bytes(b"".join(chunks))
    heads = git(["bundle", "list-heads", str(bundle)])
    assert "refs/heads/main" in heads and "refs/heads/topic" in heads and "refs/tags/v1.0" in heads
    git(["clone", "-q", "--mirror", str(bundle), str(tmp_path / "mirror.git")])
    assert git(["rev-parse", "refs/heads/main"], cwd=tmp_path / "mirror.git") == git(["rev-parse", "main"], cwd=storage / "big.git")


async def test_create_bundle_of_an_empty_repository_is_failed_precondition(channel: aio.Channel) -> None:
    stub = repository_stub(channel)
    await create(stub, "empty.git")
    error = await expect_error(bundle_bytes(stub, "empty.git"), grpc.StatusCode.FAILED_PRECONDITION)
    assert "empty.git" in (error.details() or "")


async def test_create_bundle_of_a_missing_repository_is_not_found(channel: aio.Channel) -> None:
    error = await expect_error(bundle_bytes(repository_stub(channel), "ghost.git"), grpc.StatusCode.NOT_FOUND)
    assert "ghost.git" in (error.details() or "")


async def test_bundle_round_trip_recreates_refs_and_head(channel: aio.Channel, storage: Path, tmp_path: Path) -> None:
    stub = repository_stub(channel)
    source = await seed(stub, storage, tmp_path, "source.git", big=True)
    git(["symbolic-ref", "HEAD", "refs/heads/topic"], cwd=source)
    chunks = await bundle_bytes(stub, "source.git")

    await stub.CreateRepositoryFromBundle(upload("group/copy.git", chunks), metadata=node_auth())

    copy = storage / "group" / "copy.git"
    assert show_refs(copy) == show_refs(source)
    assert git(["symbolic-ref", "HEAD"], cwd=copy).strip() == "refs/heads/topic"
    assert await checksum(stub, repo("group/copy.git")) == await checksum(stub, repo("source.git"))
    git(["fsck", "--no-progress"], cwd=copy)
    assert not [p for p in files_under(storage) if p.startswith("+praefect/tmp/")]


async def test_bundle_data_in_the_first_message_counts(channel: aio.Channel, storage: Path, tmp_path: Path) -> None:
    stub = repository_stub(channel)
    await seed(stub, storage, tmp_path, "small.git")
    chunks = await bundle_bytes(stub, "small.git")
    data = b"".join(chunks)

    await stub.CreateRepositoryFromBundle(upload("one.git", [data[10:]], first_data=data[:10]), metadata=node_auth())
    assert show_refs(storage / "one.git") == show_refs(storage / "small.git")


async def test_bundle_of_a_sha256_repository_round_trips(channel: aio.Channel, storage: Path, tmp_path: Path) -> None:
    stub = repository_stub(channel)
    await create(stub, "sha256.git", object_format=shared_pb2.OBJECT_FORMAT_SHA256)
    work = tmp_path / "work256"
    git(["init", "-q", "--object-format=sha256", "-b", "main", str(work)])
    (work / "f").write_text("x\n")
    git(["add", "."], cwd=work)
    git(["commit", "-q", "-m", "one"], cwd=work)
    git(["push", "-q", str(storage / "sha256.git"), "main"], cwd=work)

    await stub.CreateRepositoryFromBundle(upload("copy256.git", await bundle_bytes(stub, "sha256.git")), metadata=node_auth())
    assert git(["rev-parse", "--show-object-format"], cwd=storage / "copy256.git").strip() == "sha256"
    assert show_refs(storage / "copy256.git") == show_refs(storage / "sha256.git")


async def test_from_bundle_into_an_existing_repository_is_already_exists(channel: aio.Channel, storage: Path, tmp_path: Path) -> None:
    stub = repository_stub(channel)
    await seed(stub, storage, tmp_path, "src.git")
    await create(stub, "taken.git")
    chunks = await bundle_bytes(stub, "src.git")

    error = await expect_error(stub.CreateRepositoryFromBundle(upload("taken.git", chunks), metadata=node_auth()), grpc.StatusCode.ALREADY_EXISTS)
    assert "taken.git" in (error.details() or "")
    assert git(["for-each-ref"], cwd=storage / "taken.git") == ""


@pytest.mark.parametrize(
    ("payload", "text"),
    [
        ([], "no bundle data"),
        ([b"this is not a bundle at all"], "not a git bundle"),
        ([b"# v2 git bundle\n" + b"1" * 40 + b" refs/heads/main\n\nPACKgarbage"], "bundle"),
        ([b"# v3 git bundle\n@object-format=sha1\n\n"], "no references"),
    ],
    ids=["empty", "garbage", "corrupt-pack", "no-refs"],
)
async def test_bad_bundles_are_invalid_and_leave_nothing(channel: aio.Channel, storage: Path, payload: list[bytes], text: str) -> None:
    stub = repository_stub(channel)
    before = {p for p in files_under(storage) if not p.startswith("+praefect")}

    error = await expect_error(stub.CreateRepositoryFromBundle(upload("bad.git", payload), metadata=node_auth()), grpc.StatusCode.INVALID_ARGUMENT)

    details = error.details() or ""
    assert text in details
    assert str(storage) not in details and "+praefect" not in details
    assert not (storage / "bad.git").exists()
    assert {p for p in files_under(storage) if not p.startswith("+praefect")} == before
    assert not [p for p in files_under(storage) if p.startswith("+praefect/tmp/")]


async def test_from_bundle_needs_the_repository_in_the_first_message(channel: aio.Channel) -> None:
    stub = repository_stub(channel)

    async def no_repository() -> AsyncIterator[pb.CreateRepositoryFromBundleRequest]:
        yield pb.CreateRepositoryFromBundleRequest(data=b"# v2 git bundle\n")

    error = await expect_error(stub.CreateRepositoryFromBundle(no_repository(), metadata=node_auth()), grpc.StatusCode.INVALID_ARGUMENT)
    assert "repository" in (error.details() or "")
