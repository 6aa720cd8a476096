"""A real router in front of three real `praefect node serve` processes.

Each call kind goes through the router to git on a node: unary
(RepositoryExists, CreateRepository, FindCommit), server streaming
(GetBlob, CreateBundle), client streaming (CreateRepositoryFromBundle,
UpdateReferences) and bidirectional streaming (SSHUploadPack).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import grpc
import pytest
from grpc import aio

from praefect.core.tokens import bearer_metadata
from praefect.protos.gitaly import (
    blob_pb2,
    blob_pb2_grpc,
    commit_pb2,
    commit_pb2_grpc,
    ref_pb2,
    ref_pb2_grpc,
    repository_pb2,
    repository_pb2_grpc,
    server_pb2,
    server_pb2_grpc,
    shared_pb2,
    ssh_pb2,
    ssh_pb2_grpc,
)
from tests.core.conftest import Nodes
from tests.support.gitenv import git, make_work_repo
from tests.support.grpc_client import auth
from tests.support.processes import start_node
from tests.support.router import (
    NODE_TOKEN,
    ROUTER_TOKEN,
    processes_matching,
    router_settings,
    running_router,
    wait_until,
)

AUTH = auth(ROUTER_TOKEN)  # signs a fresh v2 token per call
_names = itertools.count()


def new_repo() -> shared_pb2.Repository:
    return shared_pb2.Repository(storage_name="praefect", relative_path=f"group/project-{next(_names)}.git")


async def create_from_bundle(channel: aio.Channel, repository: shared_pb2.Repository, source: Path) -> None:
    bundle = source.parent / f"{source.name}.bundle"
    git(["bundle", "create", str(bundle), "--all"], cwd=source)
    data = bundle.read_bytes()
    chunks = [data[i : i + 1000] for i in range(0, len(data), 1000)]
    requests = [repository_pb2.CreateRepositoryFromBundleRequest(repository=repository, data=chunks[0])]
    requests += [repository_pb2.CreateRepositoryFromBundleRequest(data=chunk) for chunk in chunks[1:]]
    stub = repository_pb2_grpc.RepositoryServiceStub(channel)
    await stub.CreateRepositoryFromBundle(iter(requests), metadata=AUTH)


@pytest.fixture
async def populated(channel: aio.Channel, tmp_path: Path) -> tuple[shared_pb2.Repository, Path]:
    """A repository with three commits, created through the router."""
    work = make_work_repo(tmp_path / "work", commits=3)
    repository = new_repo()
    await create_from_bundle(channel, repository, work)
    return repository, work


async def test_unary_calls_reach_git_on_the_primary(channel: aio.Channel, nodes: Nodes) -> None:
    stub = repository_pb2_grpc.RepositoryServiceStub(channel)
    repository = new_repo()

    before = await stub.RepositoryExists(repository_pb2.RepositoryExistsRequest(repository=repository), metadata=AUTH)
    await stub.CreateRepository(repository_pb2.CreateRepositoryRequest(repository=repository), metadata=AUTH)
    after = await stub.RepositoryExists(repository_pb2.RepositoryExistsRequest(repository=repository), metadata=AUTH)

    assert (before.exists, after.exists) == (False, True)
    # the primary received its own storage name: the repository is in its storage
    assert (nodes.roots["gitaly-1"] / repository.relative_path / "HEAD").is_file()


async def test_client_stream_and_unary_find_commit(
    channel: aio.Channel, populated: tuple[shared_pb2.Repository, Path]
) -> None:
    repository, work = populated
    head = git(["rev-parse", "HEAD"], cwd=work).strip()

    response = await commit_pb2_grpc.CommitServiceStub(channel).FindCommit(
        commit_pb2.FindCommitRequest(repository=repository, revision=b"HEAD"), metadata=AUTH
    )

    assert response.commit.id == head
    assert response.commit.subject == b"commit 2"


async def test_server_streams_get_blob_and_create_bundle(
    channel: aio.Channel, populated: tuple[shared_pb2.Repository, Path]
) -> None:
    repository, work = populated
    oid = git(["rev-parse", "HEAD:file1.txt"], cwd=work).strip()

    chunks = [
        response
        async for response in blob_pb2_grpc.BlobServiceStub(channel).GetBlob(
            blob_pb2.GetBlobRequest(repository=repository, oid=oid, limit=-1), metadata=AUTH
        )
    ]
    bundle = b"".join(
        [
            response.data
            async for response in repository_pb2_grpc.RepositoryServiceStub(channel).CreateBundle(
                repository_pb2.CreateBundleRequest(repository=repository), metadata=AUTH
            )
        ]
    )

    assert b"".join(chunk.data for chunk in chunks) == b"content 1\n"
    assert chunks[0].oid == oid
    assert bundle.startswith(b"# v2 git bundle") or bundle.startswith(b"# v3 git bundle")


async def test_client_stream_update_references(
    channel: aio.Channel, populated: tuple[shared_pb2.Repository, Path], nodes: Nodes
) -> None:
    repository, work = populated
    head = git(["rev-parse", "HEAD"], cwd=work).strip()
    update = ref_pb2.UpdateReferencesRequest.Update(
        reference=b"refs/heads/feature", old_object_id=b"0" * 40, new_object_id=head.encode()
    )

    await ref_pb2_grpc.RefServiceStub(channel).UpdateReferences(
        iter([ref_pb2.UpdateReferencesRequest(repository=repository, updates=[update])]), metadata=AUTH
    )

    on_disk = git(["rev-parse", "refs/heads/feature"], cwd=nodes.roots["gitaly-1"] / repository.relative_path)
    assert on_disk.strip() == head


async def test_bidi_ssh_upload_pack_advertises_refs(
    channel: aio.Channel, populated: tuple[shared_pb2.Repository, Path]
) -> None:
    repository, _ = populated
    call = ssh_pb2_grpc.SSHServiceStub(channel).SSHUploadPack(metadata=AUTH)
    await call.write(ssh_pb2.SSHUploadPackRequest(repository=repository))
    stdout = b""
    while b"refs/heads/main" not in stdout:
        response = await call.read()
        assert response is not aio.EOF, f"upload-pack ended early: {stdout!r}"
        stdout += response.stdout
    await call.write(ssh_pb2.SSHUploadPackRequest(stdin=b"0000"))  # no wants: done
    await call.done_writing()
    statuses = []
    while (response := await call.read()) is not aio.EOF:
        if response.HasField("exit_status"):
            statuses.append(response.exit_status.value)
    assert statuses == [0]
    assert await call.code() is grpc.StatusCode.OK


async def test_cancelling_a_stream_kills_git_on_the_node(
    channel: aio.Channel, populated: tuple[shared_pb2.Repository, Path], nodes: Nodes
) -> None:
    repository, _ = populated
    repo_dir = str(nodes.roots["gitaly-1"] / repository.relative_path)
    call = ssh_pb2_grpc.SSHServiceStub(channel).SSHUploadPack(metadata=AUTH)
    await call.write(ssh_pb2.SSHUploadPackRequest(repository=repository))
    await call.read()  # git is running: it sent its advertisement and waits for us
    assert processes_matching("upload-pack", repo_dir)

    call.cancel()

    await wait_until(lambda: not processes_matching("upload-pack", repo_dir), "git upload-pack to exit")


async def test_deadline_ends_the_node_call_too(
    channel: aio.Channel, populated: tuple[shared_pb2.Repository, Path], nodes: Nodes
) -> None:
    repository, _ = populated
    repo_dir = str(nodes.roots["gitaly-1"] / repository.relative_path)
    call = ssh_pb2_grpc.SSHServiceStub(channel).SSHUploadPack(metadata=AUTH, timeout=1.0)
    await call.write(ssh_pb2.SSHUploadPackRequest(repository=repository))
    await call.read()
    assert processes_matching("upload-pack", repo_dir)

    with pytest.raises(aio.AioRpcError) as caught:
        while await call.read() is not aio.EOF:
            pass

    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    await wait_until(lambda: not processes_matching("upload-pack", repo_dir), "git upload-pack to exit")


async def test_missing_and_wrong_tokens(channel: aio.Channel) -> None:
    stub = repository_pb2_grpc.RepositoryServiceStub(channel)
    request = repository_pb2.RepositoryExistsRequest(repository=new_repo())

    with pytest.raises(aio.AioRpcError) as missing:
        await stub.RepositoryExists(request)
    with pytest.raises(aio.AioRpcError) as wrong:
        await stub.RepositoryExists(request, metadata=(bearer_metadata("not-the-token"),))

    assert missing.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert wrong.value.code() is grpc.StatusCode.PERMISSION_DENIED


async def test_unknown_virtual_storage(channel: aio.Channel) -> None:
    request = repository_pb2.RepositoryExistsRequest(
        repository=shared_pb2.Repository(storage_name="gitaly-1", relative_path="a.git")
    )
    with pytest.raises(aio.AioRpcError) as caught:
        await repository_pb2_grpc.RepositoryServiceStub(channel).RepositoryExists(request, metadata=AUTH)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "unknown virtual storage 'gitaly-1'" in (caught.value.details() or "")


async def test_server_info_is_aggregated_by_virtual_storage(channel: aio.Channel) -> None:
    response = await server_pb2_grpc.ServerServiceStub(channel).ServerInfo(
        server_pb2.ServerInfoRequest(), metadata=AUTH
    )
    (status,) = response.storage_statuses
    assert status.storage_name == "praefect"
    assert (status.readable, status.writeable, status.replication_factor) == (True, True, 3)
    assert status.filesystem_id
    assert response.git_version

    disk = await server_pb2_grpc.ServerServiceStub(channel).DiskStatistics(
        server_pb2.DiskStatisticsRequest(), metadata=AUTH
    )
    assert [s.storage_name for s in disk.storage_statuses] == ["praefect"]
    assert disk.storage_statuses[0].available > 0


async def test_a_node_that_is_down_gives_unavailable_naming_it(nodes: Nodes, tmp_path: Path) -> None:
    doomed = start_node({"gitaly-9": tmp_path / "gitaly-9"}, NODE_TOKEN)
    address = f"tcp://{doomed.address}"
    settings = router_settings({"gitaly-9": address, "gitaly-2": nodes.address("gitaly-2")})
    async with running_router(settings) as router:
        assert router.bound_addr
        async with aio.insecure_channel(router.bound_addr) as channel:
            stub = repository_pb2_grpc.RepositoryServiceStub(channel)
            request = repository_pb2.RepositoryExistsRequest(repository=new_repo())
            await stub.RepositoryExists(request, metadata=AUTH)  # up: fine
            doomed.kill9()
            with pytest.raises(aio.AioRpcError) as caught:
                await stub.RepositoryExists(request, metadata=AUTH, timeout=10)
            info = await server_pb2_grpc.ServerServiceStub(channel).ServerInfo(
                server_pb2.ServerInfoRequest(), metadata=AUTH
            )
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    assert f"gitaly-9 ({address})" in (caught.value.details() or "")
    # the virtual storage's primary is gone: not readable, but the call still answers
    assert (info.storage_statuses[0].readable, info.storage_statuses[0].writeable) == (False, False)


async def test_a_wrong_node_token_surfaces_as_permission_denied(nodes: Nodes) -> None:
    settings = router_settings(nodes.addresses, node_tokens={"gitaly-1": "stale-token"})
    async with running_router(settings) as router:
        assert router.bound_addr
        async with aio.insecure_channel(router.bound_addr) as channel:
            with pytest.raises(aio.AioRpcError) as caught:
                await repository_pb2_grpc.RepositoryServiceStub(channel).RepositoryExists(
                    repository_pb2.RepositoryExistsRequest(repository=new_repo()), metadata=AUTH
                )
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED



