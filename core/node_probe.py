"""Asking one node about itself: health and ServerInfo, with its own token.

Used by the router's ServerService (aggregation) and by ``praefect check``
/ ``praefect dial-nodes``.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from praefect.core.tokens import bearer_metadata
from praefect.protos.gitaly import server_pb2, server_pb2_grpc

__all__ = ["NodeReport", "disk_statistics", "probe_node", "server_info"]


async def server_info(
    channel: aio.Channel, token: str, deadline: float | None
) -> server_pb2.ServerInfoResponse:
    """The node's ServerInfo within ``deadline`` seconds; raises ``aio.AioRpcError``."""
    stub = server_pb2_grpc.ServerServiceStub(channel)
    response: server_pb2.ServerInfoResponse = await stub.ServerInfo(
        server_pb2.ServerInfoRequest(), metadata=(bearer_metadata(token),), timeout=deadline
    )
    return response


async def disk_statistics(
    channel: aio.Channel, token: str, deadline: float | None
) -> server_pb2.DiskStatisticsResponse:
    """The node's DiskStatistics; raises ``aio.AioRpcError``."""
    stub = server_pb2_grpc.ServerServiceStub(channel)
    response: server_pb2.DiskStatisticsResponse = await stub.DiskStatistics(
        server_pb2.DiskStatisticsRequest(), metadata=(bearer_metadata(token),), timeout=deadline
    )
    return response


@dataclass(frozen=True, slots=True)
class NodeReport:
    """What ``probe_node`` found: ``error`` is empty when the node is fine."""

    reachable: bool
    token_ok: bool
    healthy: bool
    git_version: str = ""
    server_version: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


async def probe_node(
    channel: aio.Channel, token: str, storage_name: str, deadline: float
) -> NodeReport:
    """Reachability, token match and health of one node; never raises for RPC errors."""
    try:
        info = await server_info(channel, token, deadline)
    except aio.AioRpcError as error:
        code = error.code()
        if code is grpc.StatusCode.PERMISSION_DENIED:
            return NodeReport(
                True, False, False,
                error="permission denied: the token configured for this node does not "
                "match the node's token",
            )
        if code is grpc.StatusCode.UNAUTHENTICATED:
            return NodeReport(
                True, False, False,
                error=f"unauthenticated: the node rejected the router's token ({error.details()})",
            )
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return NodeReport(False, False, False, error=f"unreachable: {error.details()}")
        return NodeReport(True, False, False, error=f"ServerInfo failed: {code.name}: {error.details()}")
    try:
        health = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=deadline
        )
    except aio.AioRpcError as error:
        return NodeReport(
            True, True, False, info.git_version, info.server_version,
            error=f"health check failed: {error.code().name}: {error.details()}",
        )
    if health.status != health_pb2.HealthCheckResponse.SERVING:
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(health.status)
        return NodeReport(True, True, False, info.git_version, info.server_version, error=f"not serving ({status})")
    names = [status.storage_name for status in info.storage_statuses]
    if storage_name not in names:
        return NodeReport(
            True, True, True, info.git_version, info.server_version,
            error=f"the node has no storage {storage_name!r} (it has {', '.join(names) or 'none'}): "
            "the node's name in the settings must be its storage name",
        )
    return NodeReport(True, True, True, info.git_version, info.server_version)
