from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio

from praefect.protos.gitaly import blob_pb2, blob_pb2_grpc, shared_pb2
from tests.node.conftest import NODE_TOKEN, STORAGE
from tests.support.diff_watch import (
    open_fds,
    wait_for_fds,
    wait_for_no_git_children,
)
from tests.support.grpc_client import auth
from tests.support.seed_diff import (
    BIG_BLOB_SIZE,
    PATH_WITH_NEWLINE,
    DiffRepo,
    copy_repo,
    seed_diff_repo,
)

MAX_MESSAGE_DATA = 1024 * 1024


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> DiffRepo:
    return seed_diff_repo(tmp_path_factory.mktemp("blob-template"))


@pytest.fixture
def repo(template: DiffRepo, tmp_path: Path) -> DiffRepo:
    return copy_repo(template, tmp_path / "storage")


@pytest.fixture
def stub(channel: aio.Channel) -> blob_pb2_grpc.BlobServiceStub:
    return blob_pb2_grpc.BlobServiceStub(channel)


def repository(relative_path: str) -> shared_pb2.Repository:
    return shared_pb2.Repository(storage_name=STORAGE, relative_path=relative_path)


async def get_blob(
    stub: blob_pb2_grpc.BlobServiceStub, repo: DiffRepo, oid: str, limit: int = -1
) -> list[blob_pb2.GetBlobResponse]:
    request = blob_pb2.GetBlobRequest(
        repository=repository(repo.relative_path), oid=oid, limit=limit
    )
    return [
        message async for message in stub.GetBlob(request, metadata=auth(NODE_TOKEN), timeout=30)
    ]


@dataclass
class Blob:
    """One entry of a GetBlobs answer, stitched together from its messages."""

    first: blob_pb2.GetBlobsResponse
    data: bytes
    messages: int

    def __getattr__(self, name: str) -> Any:
        return getattr(self.first, name)


async def get_blobs(
    stub: blob_pb2_grpc.BlobServiceStub,
    repo: DiffRepo,
    revision_paths: list[tuple[str, bytes]],
    limit: int = -1,
) -> list[Blob]:
    request = blob_pb2.GetBlobsRequest(
        repository=repository(repo.relative_path),
        revision_paths=[
            blob_pb2.GetBlobsRequest.RevisionPath(revision=r, path=p) for r, p in revision_paths
        ],
        limit=limit,
    )
    blobs: list[Blob] = []
    async for message in stub.GetBlobs(request, metadata=auth(NODE_TOKEN), timeout=30):
        assert len(message.data) <= MAX_MESSAGE_DATA
        if message.revision or message.path:
            blobs.append(Blob(message, message.data, 1))
            continue
        # A continuation carries data only.
        assert message == blob_pb2.GetBlobsResponse(data=message.data)
        blobs[-1].data += message.data
        blobs[-1].messages += 1
    return blobs


async def test_get_blob_returns_a_small_blob_in_one_message(
    stub: blob_pb2_grpc.BlobServiceStub, repo: DiffRepo
) -> None:
    messages = await get_blob(stub, repo, repo.readme_oid)

    assert messages == [
        blob_pb2.GetBlobResponse(size=12, oid=repo.readme_oid, data=b"hello\nWORLD\n")
    ]


async def test_get_blob_streams_a_large_blob_in_several_messages(
    stub: blob_pb2_grpc.BlobServiceStub, repo: DiffRepo
) -> None:
    messages = await get_blob(stub, repo, repo.big_blob_oid)

    assert len(messages) > 3
    assert (messages[0].size, messages[0].oid) == (BIG_BLOB_SIZE, repo.big_blob_oid)
    assert all(message.size == 0 and message.oid == "" for message in messages[1:])
    assert all(0 < len(message.data) <= MAX_MESSAGE_DATA for message in messages)
    assert b"".join(message.data for message in messages) == repo.big_blob


@pytest.mark.parametrize("limit", [0, 1, 200_000, BIG_BLOB_SIZE, BIG_BLOB_SIZE + 1])
async def test_get_blob_returns_at_most_limit_bytes_and_the_full_size(
    stub: blob_pb2_grpc.BlobServiceStub, repo: DiffRepo, limit: int
) -> None:
    messages = await get_blob(stub, repo, repo.big_blob_oid, limit=limit)

    assert (messages[0].size, messages[0].oid) == (BIG_BLOB_SIZE, repo.big_blob_oid)
    assert b"".join(message.data for message in messages) == repo.big_blob[:limit]
    if limit == 0:
        assert len(messages) == 1


@pytest.mark.parametrize("what", ["unknown", "tree", "commit"])
async def test_get_blob_of_a_missing_or_non_blob_object_is_one_empty_message(
    stub: blob_pb2_grpc.BlobServiceStub, repo: DiffRepo, what: str
) -> None:
    oid = {"unknown": "1" * 40, "tree": repo.object_id(repo.head, "docs"), "commit": repo.head}[
        what
    ]

    assert await get_blob(stub, repo, oid) == [blob_pb2.GetBlobResponse()]


@pytest.mark.parametrize(
    "oid",
    ["", "abc", "1" * 39, "1" * 41, "g" * 40, "-" + "1" * 39, "HEAD", "1" * 64],
)
async def test_get_blob_refuses_what_is_not_a_full_object_id(
    stub: blob_pb2_grpc.BlobServiceStub, repo: DiffRepo, oid: str
) -> None:
    with pytest.raises(aio.AioRpcError) as raised:
        await get_blob(stub, repo, oid)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "40 hexadecimal characters" in (raised.value.details() or "")


async def test_get_blob_of_a_sha256_repository_wants_sha256_ids(
    stub: blob_pb2_grpc.BlobServiceStub, tmp_path: Path
) -> None:
    repo = seed_diff_repo(tmp_path / "storage", "sha256.git", object_format="sha256")

    messages = await get_blob(stub, repo, repo.readme_oid)
    assert messages == [
        blob_pb2.GetBlobResponse(size=12, oid=repo.readme_oid, data=b"hello\nWORLD\n")
    ]

    with pytest.raises(aio.AioRpcError) as raised:
        await get_blob(stub, repo, repo.readme_oid[:40])
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "64 hexadecimal characters" in (raised.value.details() or "")


@pytest.mark.parametrize("method", ["GetBlob", "GetBlobs"])
async def test_blobs_of_a_missing_repository_are_not_found(
    stub: blob_pb2_grpc.BlobServiceStub, tmp_path: Path, method: str
) -> None:
    request = blob_pb2.GetBlobsRequest(
        repository=repository("nope.git"),
        revision_paths=[blob_pb2.GetBlobsRequest.RevisionPath(revision="HEAD", path=b"README.md")],
    )
    if method == "GetBlob":
        call = stub.GetBlob(
            blob_pb2.GetBlobRequest(repository=repository("nope.git"), oid="1" * 40),
            metadata=auth(NODE_TOKEN),
        )
    else:
        call = stub.GetBlobs(request, metadata=auth(NODE_TOKEN))
    with pytest.raises(aio.AioRpcError) as raised:
        [m async for m in call]
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert "nope.git" in (raised.value.details() or "")
    assert str(tmp_path) not in (raised.value.details() or "")


async def test_get_blobs_returns_metadata_and_data_per_path(
    stub: blob_pb2_grpc.BlobServiceStub, repo: DiffRepo
) -> None:
    blobs = await get_blobs(
        stub,
        repo,
        [
            ("main", b"README.md"),
            (repo.base, b"docs/guide.txt"),
            ("main", b"run.sh"),
            ("main", b"link"),
        ],
    )

    readme, guide, script, link = blobs
    assert (readme.revision, readme.path, readme.oid, readme.size) == (
        "main",
        b"README.md",
        repo.readme_oid,
        12,
    )
    assert (readme.mode, readme.type, readme.is_submodule, readme.data) == (
        0o100644,
        shared_pb2.BLOB,
        False,
        b"hello\nWORLD\n",
    )
    assert guide.revision == repo.base and guide.path == b"docs/guide.txt"
    assert guide.data == b"".join(f"guide line {i}\n".encode() for i in range(20))
    assert script.mode == 0o100755
    assert (link.mode, link.data) == (0o120000, b"README.md")


async def test_get_blobs_streams_a_large_blob_in_several_messages(
    stub: blob_pb2_grpc.BlobServiceStub, repo: DiffRepo
) -> None:
    blobs = await get_blobs(
        stub, repo, [("main", b"big.bin"), ("main", b"README.md"), ("main", b"big.bin")]
    )

    assert [blob.path for blob in blobs] == [b"big.bin", b"README.md", b"big.bin"]
    for big in (blobs[0], blobs[2]):
        assert big.messages > 3
        assert (big.size, big.oid, big.data) == (BIG_BLOB_SIZE, repo.big_blob_oid, repo.big_blob)
    assert blobs[1].data == b"hello\nWORLD\n"


@pytest.mark.parametrize("limit", [0, 5, 300_000])
async def test_get_blobs_honours_the_limit_for_every_blob(
    stub: blob_pb2_grpc.BlobServiceStub, repo: DiffRepo, limit: int
) -> None:
    blobs = await get_blobs(
        stub,
        repo,
        [("main", b"big.bin"), ("main", b"README.md"), ("main", b"big.bin")],
        limit=limit,
    )

    assert [blob.size for blob in blobs] == [BIG_BLOB_SIZE, 12, BIG_BLOB_SIZE]
    assert blobs[0].data == repo.big_blob[:limit] == blobs[2].data
    assert blobs[1].data == b"hello\nWORLD\n"[:limit]


async def test_get_blobs_reports_submodules_and_directories_without_data(
    stub: blob_pb2_grpc.BlobServiceStub, repo: DiffRepo
) -> None:
    submodule, directory = await get_blobs(
        stub, repo, [("main", b"vendor/lib"), ("main", b"docs/")]
    )

    assert (submodule.is_submodule, submodule.type, submodule.mode) == (
        True,
        shared_pb2.COMMIT,
        0o160000,
    )
    assert (submodule.oid, submodule.data, submodule.size) == (repo.submodule_commit, b"", 0)
    assert (directory.path, directory.type, directory.mode) == (b"docs", shared_pb2.TREE, 0o40000)
    assert (
        directory.oid == repo.object_id("main", "docs")
        and directory.size > 0
        and directory.data == b""
    )


async def test_get_blobs_answers_missing_paths_with_revision_and_path_only(
    stub: blob_pb2_grpc.BlobServiceStub, repo: DiffRepo
) -> None:
    blobs = await get_blobs(
        stub,
        repo,
        [
            ("main", b"no/such/file"),
            ("main", b"README.md/inside"),
            ("no-such-branch", b"README.md"),
            ("main", PATH_WITH_NEWLINE),
            ("main", b""),
        ],
    )

    assert [blob.first for blob in blobs[:3]] == [
        blob_pb2.GetBlobsResponse(revision="main", path=b"no/such/file"),
        blob_pb2.GetBlobsResponse(revision="main", path=b"README.md/inside"),
        blob_pb2.GetBlobsResponse(revision="no-such-branch", path=b"README.md"),
    ]
    # A path with a newline is found: paths never go to git as text.
    assert blobs[3].data == b"newline 2\n"
    assert blobs[4].first == blob_pb2.GetBlobsResponse(revision="main")


@pytest.mark.parametrize(
    ("revision_paths", "needle"),
    [
        ([("--all", b"README.md")], "must not start with '-'"),
        ([("main", b"README.md"), ("-x", b"README.md")], "must not start with '-'"),
        ([("main:README.md", b"x")], "not allowed"),
        ([("", b"README.md")], "empty revision"),
        ([], "revision_paths"),
    ],
)
async def test_get_blobs_refuses_bad_revisions(
    stub: blob_pb2_grpc.BlobServiceStub,
    repo: DiffRepo,
    revision_paths: list[tuple[str, bytes]],
    needle: str,
) -> None:
    with pytest.raises(aio.AioRpcError) as raised:
        await get_blobs(stub, repo, revision_paths)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in (raised.value.details() or "")


async def test_cancelling_get_blob_kills_cat_file_and_ends_the_call(
    stub: blob_pb2_grpc.BlobServiceStub, repo: DiffRepo
) -> None:
    await get_blob(stub, repo, repo.readme_oid)  # the channel is connected
    fds = open_fds()
    request = blob_pb2.GetBlobRequest(
        repository=repository(repo.relative_path), oid=repo.big_blob_oid, limit=-1
    )
    call = stub.GetBlob(request, metadata=auth(NODE_TOKEN), timeout=30)
    first = await call.read()
    assert isinstance(first, blob_pb2.GetBlobResponse) and first.size == BIG_BLOB_SIZE

    call.cancel()

    await wait_for_no_git_children()
    await wait_for_fds(fds)


async def test_get_blobs_restarts_cat_file_after_a_large_unread_blob(
    stub: blob_pb2_grpc.BlobServiceStub, repo: DiffRepo
) -> None:
    await get_blob(stub, repo, repo.readme_oid)  # the channel is connected
    fds = open_fds()

    blobs = await get_blobs(
        stub, repo, [("main", b"big.bin"), ("main", b"README.md")] * 3, limit=10
    )

    assert [blob.data for blob in blobs] == [repo.big_blob[:10], b"hello\nWORLD\n"[:10]] * 3
    await wait_for_no_git_children()
    await wait_for_fds(fds)
