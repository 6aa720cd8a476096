"""ServerService on a node: versions, probed storage state, a stable
filesystem id per storage, and disk statistics."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc import aio

from praefect.core import __version__
from praefect.node.server import NodeServer, NodeServerConfig
from praefect.node.services.server import filesystem_type
from praefect.protos.gitaly import server_pb2, server_pb2_grpc
from tests.node.conftest import NODE_TOKEN, STORAGE
from tests.support.grpc_client import auth


@pytest.fixture
def stub(channel: aio.Channel) -> server_pb2_grpc.ServerServiceStub:
    return server_pb2_grpc.ServerServiceStub(channel)


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    return tmp_path / "storage"


@pytest.fixture
def installed_git_version() -> str:
    output = subprocess.run(["git", "version"], capture_output=True, text=True, check=True).stdout
    return output.strip().removeprefix("git version ")


@pytest.fixture
def mount_table_fs_type(storage: Path) -> str:
    """What findmnt says the storage's filesystem is."""
    findmnt = shutil.which("findmnt")
    if findmnt is None:
        pytest.skip("findmnt is not installed")
    storage.mkdir(parents=True, exist_ok=True)
    command = [findmnt, "-n", "-o", "FSTYPE", "--target", str(storage)]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()


async def server_info(stub: server_pb2_grpc.ServerServiceStub) -> server_pb2.ServerInfoResponse:
    response: server_pb2.ServerInfoResponse = await stub.ServerInfo(
        server_pb2.ServerInfoRequest(), metadata=auth(NODE_TOKEN), timeout=10
    )
    return response


async def disk_statistics(stub: server_pb2_grpc.ServerServiceStub) -> server_pb2.DiskStatisticsResponse:
    response: server_pb2.DiskStatisticsResponse = await stub.DiskStatistics(
        server_pb2.DiskStatisticsRequest(), metadata=auth(NODE_TOKEN), timeout=10
    )
    return response


@pytest.fixture
async def two_storage_node(tmp_path: Path) -> AsyncIterator[tuple[NodeServer, aio.Channel]]:
    config = NodeServerConfig(
        listen_addr="127.0.0.1:0",
        storages={"gitaly-1": tmp_path / "s1", "gitaly-2": tmp_path / "s2"},
        token=NODE_TOKEN,
    )
    async with NodeServer(config) as server:
        assert server.bound_addr
        async with aio.insecure_channel(server.bound_addr) as channel:
            yield server, channel


async def test_server_info_reports_versions_and_a_healthy_storage(
    stub: server_pb2_grpc.ServerServiceStub, storage: Path, installed_git_version: str
) -> None:
    response = await server_info(stub)

    assert response.server_version == __version__
    assert response.git_version == installed_git_version
    [status] = response.storage_statuses
    assert status.storage_name == STORAGE
    assert status.readable and status.writeable
    assert status.replication_factor == 0  # only the router knows replicas
    # The probe leaves nothing behind but the id file.
    assert sorted(p.name for p in (storage / "+praefect").iterdir()) == ["filesystem_id"]


async def test_fs_type_comes_from_the_mount_table(
    stub: server_pb2_grpc.ServerServiceStub, mount_table_fs_type: str
) -> None:
    [status] = (await server_info(stub)).storage_statuses

    assert status.fs_type == mount_table_fs_type


def test_fs_type_picks_the_longest_mount_point_and_unescapes(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "/dev/vda / ext4 rw 0 0\n"
        "tmpfs /srv/git\\040data tmpfs rw 0 0\n"
        "nfs:/x /srv/git\\040data/nfs nfs4 rw 0 0\n"
    )

    assert filesystem_type(Path("/srv/git data/repos"), mounts) == "tmpfs"
    assert filesystem_type(Path("/srv/git data/nfs/a"), mounts) == "nfs4"
    assert filesystem_type(Path("/srv/other"), mounts) == "ext4"
    assert filesystem_type(Path("/srv"), tmp_path / "no-such-file") == "unknown"


async def test_filesystem_id_is_a_uuid_stable_across_calls_and_restarts(
    node: NodeServer, stub: server_pb2_grpc.ServerServiceStub, storage: Path
) -> None:
    [first] = (await server_info(stub)).storage_statuses
    [again] = (await server_info(stub)).storage_statuses
    assert uuid.UUID(first.filesystem_id)
    assert again.filesystem_id == first.filesystem_id
    assert (storage / "+praefect" / "filesystem_id").read_text().strip() == first.filesystem_id

    config = NodeServerConfig(listen_addr="127.0.0.1:0", storages={STORAGE: storage}, token=NODE_TOKEN)
    async with NodeServer(config) as restarted:
        assert restarted.bound_addr
        async with aio.insecure_channel(restarted.bound_addr) as channel:
            [after_restart] = (await server_info(server_pb2_grpc.ServerServiceStub(channel))).storage_statuses
    assert after_restart.filesystem_id == first.filesystem_id


async def test_concurrent_first_calls_agree_on_the_filesystem_id(
    stub: server_pb2_grpc.ServerServiceStub,
) -> None:
    responses = await asyncio.gather(*(server_info(stub) for _ in range(16)))

    ids = {response.storage_statuses[0].filesystem_id for response in responses}
    assert len(ids) == 1 and "" not in ids


async def test_each_storage_has_its_own_filesystem_id(
    two_storage_node: tuple[NodeServer, aio.Channel],
) -> None:
    _, channel = two_storage_node

    response = await server_info(server_pb2_grpc.ServerServiceStub(channel))

    by_name = {status.storage_name: status for status in response.storage_statuses}
    assert set(by_name) == {"gitaly-1", "gitaly-2"}
    assert by_name["gitaly-1"].filesystem_id != by_name["gitaly-2"].filesystem_id
    assert all(status.readable and status.writeable for status in by_name.values())


async def test_storage_where_the_probe_cannot_write_is_not_writeable(
    stub: server_pb2_grpc.ServerServiceStub, storage: Path
) -> None:
    # A file where the node's directory belongs makes every write fail, even
    # for root, whom permission bits do not stop.
    (storage / "+praefect").write_text("in the way\n")

    [status] = (await server_info(stub)).storage_statuses

    assert status.readable
    assert not status.writeable
    assert status.filesystem_id == ""


async def test_missing_storage_directory_is_neither_readable_nor_writeable(
    stub: server_pb2_grpc.ServerServiceStub, storage: Path
) -> None:
    shutil.rmtree(storage)

    [status] = (await server_info(stub)).storage_statuses

    assert (status.readable, status.writeable) == (False, False)
    assert not await asyncio.to_thread(storage.exists)  # the probe does not recreate it


async def test_disk_statistics_match_statvfs(
    stub: server_pb2_grpc.ServerServiceStub, storage: Path
) -> None:
    response = await disk_statistics(stub)

    stat = os.statvfs(storage)
    [status] = response.storage_statuses
    assert status.storage_name == STORAGE
    tolerance = 256 * 1024 * 1024  # other processes write to the same disk meanwhile
    assert abs(status.available - stat.f_bavail * stat.f_frsize) < tolerance
    assert abs(status.used - (stat.f_blocks - stat.f_bfree) * stat.f_frsize) < tolerance
    assert status.available > 0 and status.used > 0


async def test_disk_statistics_leave_out_a_storage_that_cannot_be_read(
    two_storage_node: tuple[NodeServer, aio.Channel], tmp_path: Path
) -> None:
    _, channel = two_storage_node
    shutil.rmtree(tmp_path / "s2")

    response = await disk_statistics(server_pb2_grpc.ServerServiceStub(channel))

    assert [status.storage_name for status in response.storage_statuses] == ["gitaly-1"]


@pytest.mark.parametrize("method", ["ServerInfo", "DiskStatistics"])
async def test_missing_token_is_unauthenticated(channel: aio.Channel, method: str) -> None:
    call = getattr(server_pb2_grpc.ServerServiceStub(channel), method)
    request = getattr(server_pb2, f"{method}Request")()

    with pytest.raises(aio.AioRpcError) as caught:
        await call(request, timeout=10)

    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("method", ["ServerInfo", "DiskStatistics"])
async def test_wrong_token_is_permission_denied(channel: aio.Channel, method: str) -> None:
    call = getattr(server_pb2_grpc.ServerServiceStub(channel), method)
    request = getattr(server_pb2, f"{method}Request")()

    with pytest.raises(aio.AioRpcError) as caught:
        await call(request, metadata=auth("not-the-token"), timeout=10)

    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
