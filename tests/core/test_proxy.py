"""The forwarding path, observed from a real gRPC server standing in for a node.

The recording node (tests/support/recording_node.py) shows exactly which
bytes, metadata and deadline arrive, and answers as each test asks.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc import aio

from praefect.core.server import RouterServer
from praefect.core.tokens import authorization_from_metadata, verify
from praefect.protos.gitaly import (
    operations_pb2,
    repository_pb2,
    shared_pb2,
)
from tests.support.grpc_client import auth
from tests.support.recording_node import BEHAVIOUR_KEY, RecordingNode, recording_node
from tests.support.router import NODE_TOKEN, ROUTER_TOKEN, router_settings, running_router

EXISTS = "/gitaly.RepositoryService/RepositoryExists"
CREATE_BUNDLE = "/gitaly.RepositoryService/CreateBundle"
FROM_BUNDLE = "/gitaly.RepositoryService/CreateRepositoryFromBundle"
UPLOAD_PACK = "/gitaly.SSHService/SSHUploadPack"
COMMIT_FILES = "/gitaly.OperationService/UserCommitFiles"
OPTIMIZE = "/gitaly.RepositoryService/OptimizeRepository"

AUTH = auth(ROUTER_TOKEN)  # signs a fresh v2 token per call


def repo(path: str = "group/project.git", storage: str = "praefect") -> shared_pb2.Repository:
    return shared_pb2.Repository(storage_name=storage, relative_path=path)


def exists_request(path: str = "group/project.git", storage: str = "praefect") -> bytes:
    data: bytes = repository_pb2.RepositoryExistsRequest(repository=repo(path, storage)).SerializeToString()
    return data


def behaviour(name: str) -> tuple[tuple[str, str], ...]:
    return (*AUTH, (BEHAVIOUR_KEY, name))


@pytest.fixture
async def node() -> AsyncIterator[RecordingNode]:
    async with recording_node() as recording:
        yield recording


@pytest.fixture
async def router(node: RecordingNode) -> AsyncIterator[RouterServer]:
    async with running_router(router_settings({"gitaly-1": node.address})) as server:
        yield server


# -- each call kind --------------------------------------------------------------


async def test_unary_call_is_forwarded_with_the_node_storage_name(channel: aio.Channel, node: RecordingNode) -> None:
    response = await channel.unary_unary(EXISTS)(exists_request(), metadata=AUTH)

    (call,) = node.calls
    forwarded = repository_pb2.RepositoryExistsRequest.FromString(call.requests[0])
    assert forwarded.repository.storage_name == "gitaly-1"
    assert forwarded.repository.relative_path == "group/project.git"
    assert response == call.requests[0]  # the node's answer comes back unchanged


async def test_server_stream_relays_every_message(channel: aio.Channel, node: RecordingNode) -> None:
    request = repository_pb2.CreateBundleRequest(repository=repo()).SerializeToString()
    responses = [message async for message in channel.unary_stream(CREATE_BUNDLE)(request, metadata=AUTH)]

    (call,) = node.calls
    assert repository_pb2.CreateBundleRequest.FromString(call.requests[0]).repository.storage_name == "gitaly-1"
    assert responses == [call.requests[0], call.requests[0]]


async def test_client_stream_rewrites_only_the_first_message(channel: aio.Channel, node: RecordingNode) -> None:
    first = repository_pb2.CreateRepositoryFromBundleRequest(repository=repo(), data=b"one")
    rest = [repository_pb2.CreateRepositoryFromBundleRequest(data=b"two").SerializeToString(), b""]

    response = await channel.stream_unary(FROM_BUNDLE)(iter([first.SerializeToString(), *rest]), metadata=AUTH)

    (call,) = node.calls
    received = repository_pb2.CreateRepositoryFromBundleRequest.FromString(call.requests[0])
    assert (received.repository.storage_name, received.data) == ("gitaly-1", b"one")
    assert call.requests[1:] == rest  # forwarded byte for byte
    assert response == b"".join(call.requests)


async def test_bidi_stream_relays_both_directions(channel: aio.Channel, node: RecordingNode) -> None:
    from praefect.protos.gitaly import ssh_pb2

    bidi = channel.stream_stream(UPLOAD_PACK)(metadata=AUTH)
    first = ssh_pb2.SSHUploadPackRequest(repository=repo(), stdin=b"0000").SerializeToString()
    await bidi.write(first)
    echoed_first = await bidi.read()
    await bidi.write(b"\x12\x03abc")  # stdin only
    echoed_second = await bidi.read()
    await bidi.done_writing()
    assert await bidi.read() is aio.EOF
    assert await bidi.code() is grpc.StatusCode.OK

    assert len(node.calls) == 1
    assert ssh_pb2.SSHUploadPackRequest.FromString(echoed_first).repository.storage_name == "gitaly-1"
    assert echoed_second == b"\x12\x03abc"


async def test_nested_target_repository_is_rewritten(channel: aio.Channel, node: RecordingNode) -> None:
    header = operations_pb2.UserCommitFilesRequest(
        header=operations_pb2.UserCommitFilesRequestHeader(repository=repo(), branch_name=b"main")
    )
    await channel.stream_unary(COMMIT_FILES)(iter([header.SerializeToString()]), metadata=AUTH)

    received = operations_pb2.UserCommitFilesRequest.FromString(node.calls[0].requests[0])
    assert received.header.repository.storage_name == "gitaly-1"
    assert received.header.branch_name == b"main"


# -- bytes, metadata and status pass through ---------------------------------------


async def test_unknown_fields_survive_the_rewrite(channel: aio.Channel, node: RecordingNode) -> None:
    # field 99 (varint 42) on the request, field 50 (string) inside the repository
    unknown_top = b"\x98\x06\x2a"
    unknown_nested = b"\x92\x03\x05hello"
    repository = repo().SerializeToString() + unknown_nested
    request = b"\x0a" + bytes([len(repository)]) + repository + unknown_top

    await channel.unary_unary(EXISTS)(request, metadata=AUTH)

    forwarded = node.calls[0].requests[0]
    assert unknown_top in forwarded
    assert unknown_nested in forwarded
    parsed = repository_pb2.RepositoryExistsRequest.FromString(forwarded)
    assert parsed.repository.storage_name == "gitaly-1"


async def test_client_metadata_is_forwarded_but_not_its_token(channel: aio.Channel, node: RecordingNode) -> None:
    metadata = (*AUTH, ("x-correlation-id", "abc-123"), ("x-trace-bin", b"\x00\x01\x02"))
    await channel.unary_unary(EXISTS)(exists_request(), metadata=metadata)

    seen = node.calls[0].metadata
    assert seen["x-correlation-id"] == "abc-123"
    assert seen["x-trace-bin"] == b"\x00\x01\x02"
    authorization = authorization_from_metadata(seen.items())
    verify(authorization, NODE_TOKEN)  # signed with the node's own token
    assert ROUTER_TOKEN not in str(authorization)


async def test_initial_and_trailing_metadata_come_back(channel: aio.Channel) -> None:
    unary = channel.unary_unary(EXISTS)(exists_request(), metadata=behaviour("metadata"))
    await unary
    assert ("x-node-initial", "hello") in tuple(await unary.initial_metadata())
    assert ("x-node-trailer", "bye") in tuple(await unary.trailing_metadata())

    request = repository_pb2.CreateBundleRequest(repository=repo()).SerializeToString()
    stream = channel.unary_stream(CREATE_BUNDLE)(request, metadata=behaviour("metadata"))
    assert len([message async for message in stream]) == 2
    assert ("x-node-initial", "hello") in tuple(await stream.initial_metadata())
    assert ("x-node-trailer", "bye") in tuple(await stream.trailing_metadata())


async def test_node_error_status_details_and_trailers_pass_through(channel: aio.Channel) -> None:
    with pytest.raises(aio.AioRpcError) as caught:
        await channel.unary_unary(EXISTS)(exists_request(), metadata=behaviour("fail"))
    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.details() == "node says no"
    assert ("x-node-trailer", "failed") in tuple(caught.value.trailing_metadata())


async def test_deadline_reaches_the_node(channel: aio.Channel, node: RecordingNode) -> None:
    with pytest.raises(aio.AioRpcError) as caught:
        await channel.unary_unary(EXISTS)(exists_request(), metadata=behaviour("hang"), timeout=0.5)
    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED

    (call,) = node.calls
    # the node got the client's remaining time (give or take gRPC's rounding)
    assert call.time_remaining is not None and call.time_remaining < 0.6
    async with asyncio.timeout(5):
        await call.cancelled.wait()  # the node's call ended with the client's


async def test_client_cancellation_reaches_the_node(channel: aio.Channel, node: RecordingNode) -> None:
    from praefect.protos.gitaly import ssh_pb2

    bidi = channel.stream_stream(UPLOAD_PACK)(metadata=behaviour("hang"))
    await bidi.write(ssh_pb2.SSHUploadPackRequest(repository=repo()).SerializeToString())
    (call,) = await node.wait_for_calls(1)

    bidi.cancel()

    async with asyncio.timeout(5):
        await call.cancelled.wait()


# -- requests the router refuses ---------------------------------------------------


async def expect_error(coroutine: object, code: grpc.StatusCode) -> str:
    with pytest.raises(aio.AioRpcError) as caught:
        await coroutine  # type: ignore[misc]
    assert caught.value.code() is code, caught.value.details()
    return caught.value.details() or ""


async def test_unknown_virtual_storage_is_invalid_argument(channel: aio.Channel, node: RecordingNode) -> None:
    details = await expect_error(
        channel.unary_unary(EXISTS)(exists_request(storage="nope"), metadata=AUTH),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "'nope'" in details and "'praefect'" in details
    assert node.calls == []


async def test_missing_repository_is_invalid_argument(channel: aio.Channel, node: RecordingNode) -> None:
    details = await expect_error(
        channel.unary_unary(EXISTS)(b"", metadata=AUTH), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "no repository" in details and "RepositoryExists" in details
    assert node.calls == []


async def test_empty_relative_path_is_invalid_argument(channel: aio.Channel) -> None:
    details = await expect_error(
        channel.unary_unary(EXISTS)(exists_request(path=""), metadata=AUTH),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "relative_path" in details


@pytest.mark.parametrize("body", [b"\xff\xff\xff\xff", b"\x0a\x10short", b"\x0b"])
async def test_malformed_request_is_invalid_argument(channel: aio.Channel, node: RecordingNode, body: bytes) -> None:
    details = await expect_error(channel.unary_unary(EXISTS)(body, metadata=AUTH), grpc.StatusCode.INVALID_ARGUMENT)
    assert "gitaly.RepositoryExistsRequest" in details
    assert node.calls == []


async def test_empty_request_stream_is_invalid_argument(channel: aio.Channel) -> None:
    details = await expect_error(
        channel.stream_unary(FROM_BUNDLE)(iter([]), metadata=AUTH), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "request stream is empty" in details


async def test_unknown_method_is_unimplemented_naming_it(channel: aio.Channel) -> None:
    details = await expect_error(
        channel.unary_unary("/gitaly.NoSuchService/Nothing")(b"", metadata=AUTH),
        grpc.StatusCode.UNIMPLEMENTED,
    )
    assert "/gitaly.NoSuchService/Nothing" in details


async def test_unreachable_node_is_unavailable_naming_it() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead = f"tcp://127.0.0.1:{probe.getsockname()[1]}"
    async with running_router(router_settings({"gitaly-1": dead})) as router:
        assert router.bound_addr
        async with aio.insecure_channel(router.bound_addr) as channel:
            details = await expect_error(
                channel.unary_unary(EXISTS)(exists_request(), metadata=AUTH, timeout=10),
                grpc.StatusCode.UNAVAILABLE,
            )
    assert f"gitaly-1 ({dead})" in details


async def test_maintenance_goes_to_every_node_with_its_storage_name() -> None:
    async with recording_node() as first, recording_node() as second:
        settings = router_settings({"gitaly-1": first.address, "gitaly-2": second.address})
        async with running_router(settings) as router:
            assert router.bound_addr
            async with aio.insecure_channel(router.bound_addr) as channel:
                request = repository_pb2.OptimizeRepositoryRequest(repository=repo()).SerializeToString()
                await channel.unary_unary(OPTIMIZE)(request, metadata=AUTH)
        names = [
            repository_pb2.OptimizeRepositoryRequest.FromString(node.calls[0].requests[0]).repository.storage_name
            for node in (first, second)
        ]
    assert names == ["gitaly-1", "gitaly-2"]


async def test_accessor_goes_to_the_primary_only() -> None:
    async with recording_node() as first, recording_node() as second:
        settings = router_settings({"gitaly-1": first.address, "gitaly-2": second.address}, primary="gitaly-2")
        async with running_router(settings) as router:
            assert router.bound_addr
            async with aio.insecure_channel(router.bound_addr) as channel:
                await channel.unary_unary(EXISTS)(exists_request(), metadata=AUTH)
        assert (len(first.calls), len(second.calls)) == (0, 1)


BIG = 5 * 1024 * 1024  # above gRPC's 4 MiB default
BIG_CHANNEL = [("grpc.max_receive_message_length", 2 * BIG), ("grpc.max_send_message_length", 2 * BIG)]


async def test_messages_above_4_mib_pass_both_ways(router: RouterServer, node: RecordingNode) -> None:
    first = repository_pb2.CreateRepositoryFromBundleRequest(repository=repo(), data=b"x" * BIG).SerializeToString()
    assert router.bound_addr
    async with aio.insecure_channel(router.bound_addr, options=BIG_CHANNEL) as channel:
        response = await channel.stream_unary(FROM_BUNDLE)(iter([first]), metadata=AUTH)
    assert len(response) > BIG  # the node's 5 MiB answer came back through the router
    assert len(node.calls[0].requests[0]) > BIG


async def test_message_size_limit_is_configurable(node: RecordingNode) -> None:
    settings = router_settings({"gitaly-1": node.address}, server={"max_message_size": 1024 * 1024})
    first = repository_pb2.CreateRepositoryFromBundleRequest(repository=repo(), data=b"x" * 2 * 1024 * 1024)
    async with running_router(settings) as router:
        assert router.bound_addr
        async with aio.insecure_channel(router.bound_addr, options=BIG_CHANNEL) as channel:
            details = await expect_error(
                channel.stream_unary(FROM_BUNDLE)(iter([first.SerializeToString()]), metadata=AUTH),
                grpc.StatusCode.RESOURCE_EXHAUSTED,
            )
    assert "larger than max" in details
    assert node.calls == []
