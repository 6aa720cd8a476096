"""Channels to source nodes: one per source, reused, closed when idle, dropped
when the source is unreachable, all closed at shutdown."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from praefect.node.server import NodeServer, NodeServerConfig
from praefect.node.source_channels import (
    SourceChannels,
    close_source_channels,
    source_channel,
    source_channels,
)
from tests.support.gitenv import git, make_work_repo
from tests.support.replication_pair import STORAGE_A, TOKEN_A, NodePair, node_pair
from tests.support.router import wait_until


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[NodePair]:
    async with node_pair(tmp_path / "nodes") as pair:
        yield pair


async def healthy(channel: aio.Channel) -> bool:
    response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    serving: bool = response.status == health_pb2.HealthCheckResponse.SERVING
    return serving


def closed(channel: aio.Channel) -> bool:
    shut_down: bool = channel.get_state() == grpc.ChannelConnectivity.SHUTDOWN
    return shut_down


def unused_address() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


async def test_one_channel_per_source_is_reused(nodes: NodePair) -> None:
    channels = SourceChannels()
    async with channels.use(nodes.source_address) as first:
        assert await healthy(first)
    async with channels.use(nodes.source_address) as second, channels.use(nodes.source_address) as third:
        assert second is first and third is first
    assert len(channels) == 1 and not closed(first)
    await channels.close()
    assert closed(first) and len(channels) == 0


async def test_an_idle_channel_is_closed_and_a_busy_one_is_not(nodes: NodePair) -> None:
    channels = SourceChannels(idle_timeout=0.05)
    async with channels.use(nodes.source_address) as busy:
        # Three idle timeouts pass while the channel is in use.
        await asyncio.sleep(0.15)
        assert not closed(busy) and await healthy(busy)
    await wait_until(lambda: closed(busy), "the idle channel to close", within=5)
    assert len(channels) == 0
    async with channels.use(nodes.source_address) as fresh:
        assert fresh is not busy and await healthy(fresh)
    await channels.close()


async def test_a_discarded_channel_serves_its_users_then_closes(nodes: NodePair) -> None:
    channels = SourceChannels()
    async with channels.use(nodes.source_address) as held:
        channels.discard(nodes.source_address)
        assert len(channels) == 0
        assert await healthy(held)
        async with channels.use(nodes.source_address) as other:
            assert other is not held
    await wait_until(lambda: closed(held), "the discarded channel to close", within=5)
    assert not closed(other)
    await channels.close()
    assert closed(other)


async def test_replications_share_the_loops_channel_until_shutdown(nodes: NodePair, tmp_path: Path) -> None:
    nodes.seed_source("project.git", make_work_repo(tmp_path / "work", commits=1))
    await nodes.replicate("project.git")
    await nodes.replicate("project.git")
    assert len(source_channels()) == 1
    async with source_channel(nodes.source_address) as channel:
        assert not closed(channel)

    await close_source_channels()

    assert closed(channel)
    assert len(source_channels()) == 0


async def test_an_unreachable_source_is_unavailable_and_its_channel_dropped(nodes: NodePair) -> None:
    with pytest.raises(aio.AioRpcError) as raised:
        await nodes.replicate("project.git", source_address=unused_address())
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "unreachable" in (raised.value.details() or "")
    assert len(source_channels()) == 0


async def test_a_restarted_source_is_replicated_from_on_the_first_try(nodes: NodePair, tmp_path: Path) -> None:
    source = nodes.seed_source("project.git", make_work_repo(tmp_path / "work", commits=1))
    await nodes.replicate("project.git")
    address = nodes.source_address
    async with source_channel(address) as kept:
        pass
    # Only the source's gRPC server stops: `NodeServer.shutdown` would also
    # close the channels of this event loop, which the target node shares.
    assert nodes.source.server is not None
    await nodes.source.server.stop(0)
    git(["branch", "topic", "main"], cwd=source)

    config = NodeServerConfig(address, {STORAGE_A: nodes.root_a}, TOKEN_A)
    async with NodeServer(config):
        await nodes.replicate("project.git")  # the kept channel reconnects at once
        async with source_channel(address) as used:
            assert used is kept

    assert "refs/heads/topic" in git(["for-each-ref"], cwd=nodes.root_b / "project.git")


async def test_a_node_closes_its_source_channels_at_shutdown(nodes: NodePair, tmp_path: Path) -> None:
    nodes.seed_source("project.git", make_work_repo(tmp_path / "work", commits=1))
    await nodes.replicate("project.git")
    channels = source_channels()
    async with source_channel(nodes.source_address) as channel:
        pass
    assert len(channels) == 1, "the replication's channel is the one looked at"

    await nodes.target.shutdown(grace=0)

    assert closed(channel)
    assert len(channels) == 0
    assert source_channels() is not channels, "the shut-down node's channels are forgotten"
