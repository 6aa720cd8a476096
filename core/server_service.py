"""``gitaly.ServerService`` answered by the router, aggregated over nodes.

Clients see one storage per virtual storage, named by the virtual storage:
readable and writeable when its primary's storage is, with the primary's
filesystem type and id, and ``replication_factor`` = its node count.
DiskStatistics reports each virtual storage's primary's figures. A node that
does not answer makes its virtual storage unreadable and unwriteable (and
leaves it out of DiskStatistics) instead of failing the call.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, TypeVar

from grpc import aio

from praefect.core import __version__
from praefect.core.node_probe import disk_statistics, server_info
from praefect.core.routing_types import NodeRef
from praefect.protos.gitaly import server_pb2, server_pb2_grpc

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from praefect.core.local_services import ServiceRegistrar
    from praefect.core.router import Router

__all__ = ["RouterServerService", "register"]

log = logging.getLogger("praefect.router")

# A node that takes longer than this is reported as not readable.
NODE_TIMEOUT = 5.0

T = TypeVar("T")


class RouterServerService(server_pb2_grpc.ServerServiceServicer):  # type: ignore[misc, unused-ignore]
    def __init__(self, router: Router) -> None:
        self._router = router

    async def ServerInfo(
        self, request: server_pb2.ServerInfoRequest, context: aio.ServicerContext
    ) -> server_pb2.ServerInfoResponse:
        answers = await self._ask_primaries(server_info, context)
        statuses = []
        git_version = ""
        for vs in self._router.cluster.virtual_storages:
            info = answers.get(vs.configured_primary)
            status = server_pb2.ServerInfoResponse.StorageStatus(
                storage_name=vs.name, replication_factor=len(vs.nodes)
            )
            if info is not None:
                git_version = git_version or info.git_version
                for node_status in info.storage_statuses:
                    if node_status.storage_name == vs.configured_primary.name:
                        status.readable = node_status.readable
                        status.writeable = node_status.writeable
                        status.fs_type = node_status.fs_type
                        status.filesystem_id = node_status.filesystem_id
            statuses.append(status)
        return server_pb2.ServerInfoResponse(
            server_version=__version__, git_version=git_version, storage_statuses=statuses
        )

    async def DiskStatistics(
        self, request: server_pb2.DiskStatisticsRequest, context: aio.ServicerContext
    ) -> server_pb2.DiskStatisticsResponse:
        answers = await self._ask_primaries(disk_statistics, context)
        statuses = []
        for vs in self._router.cluster.virtual_storages:
            stats = answers.get(vs.configured_primary)
            for node_status in stats.storage_statuses if stats is not None else ():
                if node_status.storage_name == vs.configured_primary.name:
                    statuses.append(
                        server_pb2.DiskStatisticsResponse.StorageStatus(
                            storage_name=vs.name,
                            available=node_status.available,
                            used=node_status.used,
                        )
                    )
        return server_pb2.DiskStatisticsResponse(storage_statuses=statuses)

    async def _ask_primaries(
        self,
        ask: Callable[[aio.Channel, str, float | None], Awaitable[T]],
        context: aio.ServicerContext,
    ) -> dict[NodeRef, T]:
        remaining = context.time_remaining()
        timeout = NODE_TIMEOUT if remaining is None else min(remaining, NODE_TIMEOUT)
        primaries = [vs.configured_primary for vs in self._router.cluster.virtual_storages]
        channels = self._router.node_channels
        results = await asyncio.gather(
            *(ask(channels[node].channel, channels[node].endpoint.token, timeout) for node in primaries),
            return_exceptions=True,
        )
        answers: dict[NodeRef, T] = {}
        for node, result in zip(primaries, results, strict=True):
            if isinstance(result, aio.AioRpcError):
                log.warning("%s did not answer: %s: %s", node, result.code().name, result.details())
            elif isinstance(result, BaseException):
                raise result
            else:
                answers[node] = result
        return answers


def register(router: Router, registrar: ServiceRegistrar) -> None:
    server_pb2_grpc.add_ServerServiceServicer_to_server(RouterServerService(router), registrar)
