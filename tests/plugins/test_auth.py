"""The default auth plugin: the router's external token, checked on every call."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc import aio

from praefect.core.tokens import bearer_metadata, sign_v2
from praefect.plugins.auth import auth_stats
from praefect.protos.gitaly import repository_pb2, server_pb2, server_pb2_grpc, shared_pb2
from tests.support.recording_node import RecordingNode, recording_node
from tests.support.router import ROUTER_TOKEN, router_settings, running_router

EXISTS = "/gitaly.RepositoryService/RepositoryExists"
REQUEST = repository_pb2.RepositoryExistsRequest(
    repository=shared_pb2.Repository(storage_name="praefect", relative_path="a.git")
).SerializeToString()


@pytest.fixture
async def node() -> AsyncIterator[RecordingNode]:
    async with recording_node() as recording:
        yield recording


async def call(node: RecordingNode, metadata: tuple[tuple[str, str], ...], **auth: Any) -> grpc.StatusCode:
    settings = router_settings({"gitaly-1": node.address}, auth=auth) if auth else router_settings({"gitaly-1": node.address})
    async with running_router(settings) as router:
        assert router.bound_addr
        async with aio.insecure_channel(router.bound_addr) as channel:
            try:
                await channel.unary_unary(EXISTS)(REQUEST, metadata=metadata)
            except aio.AioRpcError as error:
                return error.code()
    return grpc.StatusCode.OK


async def test_valid_v2_token_is_admitted(node: RecordingNode) -> None:
    assert await call(node, (bearer_metadata(ROUTER_TOKEN),)) is grpc.StatusCode.OK
    assert len(node.calls) == 1


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        pytest.param((), grpc.StatusCode.UNAUTHENTICATED, id="missing"),
        pytest.param((("authorization", "Basic abc"),), grpc.StatusCode.UNAUTHENTICATED, id="not-bearer"),
        pytest.param((("authorization", "Bearer v2.zz.12"),), grpc.StatusCode.UNAUTHENTICATED, id="malformed-v2"),
        pytest.param((("authorization", f"Bearer {ROUTER_TOKEN}"),), grpc.StatusCode.UNAUTHENTICATED, id="v1-disabled"),
        pytest.param((bearer_metadata("another-secret"),), grpc.StatusCode.PERMISSION_DENIED, id="wrong-secret"),
        pytest.param(
            (bearer_metadata(ROUTER_TOKEN, time.time() - 120),), grpc.StatusCode.PERMISSION_DENIED, id="stale"
        ),
    ],
)
async def test_bad_credentials_are_rejected_before_the_node(
    node: RecordingNode, metadata: tuple[tuple[str, str], ...], expected: grpc.StatusCode
) -> None:
    assert await call(node, metadata) is expected
    assert node.calls == []


async def test_rejection_message_says_what_to_do(node: RecordingNode) -> None:
    async with running_router(router_settings({"gitaly-1": node.address})) as router:
        assert router.bound_addr
        async with aio.insecure_channel(router.bound_addr) as channel:
            with pytest.raises(aio.AioRpcError) as caught:
                await channel.unary_unary(EXISTS)(REQUEST)
    assert "authorization: Bearer" in (caught.value.details() or "")


async def test_v1_token_is_admitted_when_enabled(node: RecordingNode) -> None:
    metadata = (("authorization", f"Bearer {ROUTER_TOKEN}"),)
    assert await call(node, metadata, allow_v1_tokens=True) is grpc.StatusCode.OK
    assert await call(node, (("authorization", "Bearer wrong"),), allow_v1_tokens=True) is grpc.StatusCode.PERMISSION_DENIED


async def test_transitioning_mode_admits_and_counts_failures(node: RecordingNode) -> None:
    settings = router_settings({"gitaly-1": node.address}, auth={"transitioning": True})
    async with running_router(settings) as router:
        assert router.bound_addr and router.router
        async with aio.insecure_channel(router.bound_addr) as channel:
            await channel.unary_unary(EXISTS)(REQUEST)
            await channel.unary_unary(EXISTS)(REQUEST, metadata=(bearer_metadata("wrong"),))
            await channel.unary_unary(EXISTS)(REQUEST, metadata=(bearer_metadata(ROUTER_TOKEN),))
        stats = auth_stats(router.router)
    assert len(node.calls) == 3
    assert stats.admitted == 2
    assert stats.failures == {"missing": 1, "wrong": 1}


async def test_a_reused_token_is_accepted_until_it_expires(node: RecordingNode) -> None:
    token = sign_v2(ROUTER_TOKEN)
    metadata = (("authorization", f"Bearer {token}"),)
    assert await call(node, metadata) is grpc.StatusCode.OK
    assert await call(node, metadata) is grpc.StatusCode.OK  # same header, served from the cache
    stale = (("authorization", f"Bearer {sign_v2(ROUTER_TOKEN, time.time() - 31)}"),)
    assert await call(node, stale) is grpc.StatusCode.PERMISSION_DENIED


async def test_services_the_router_answers_need_a_token_too(node: RecordingNode) -> None:
    async with running_router(router_settings({"gitaly-1": node.address})) as router:
        assert router.bound_addr
        async with aio.insecure_channel(router.bound_addr) as channel:
            stub = server_pb2_grpc.ServerServiceStub(channel)
            with pytest.raises(aio.AioRpcError) as caught:
                await stub.ServerInfo(server_pb2.ServerInfoRequest())
            assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(aio.AioRpcError) as caught:
                await stub.ServerInfo(server_pb2.ServerInfoRequest(), metadata=(bearer_metadata("nope"),))
            assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED


async def test_health_needs_no_token(node: RecordingNode) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async with running_router(router_settings({"gitaly-1": node.address})) as router:
        assert router.bound_addr
        async with aio.insecure_channel(router.bound_addr) as channel:
            response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert response.status == health_pb2.HealthCheckResponse.SERVING
