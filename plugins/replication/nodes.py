"""The calls replication makes to storage nodes.

ReplicateRepository goes to the *target* node, authenticated with the
target's own internal token; the target fetches from the *source* node,
whose address and token travel in the ``gitaly-servers`` header (standard
base64 of JSON ``{storage: {"address": ..., "token": ...}}``, Gitaly's
convention). A node's storage name is its node name.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass, field

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from praefect.core.telemetry.propagation import inject_trace_context
from praefect.core.tokens import bearer_metadata
from praefect.protos.gitaly import repository_pb2, repository_pb2_grpc, shared_pb2
from praefect.settings import parse_address

__all__ = ["GITALY_SERVERS_HEADER", "NodeClients", "NodeEndpoint", "gitaly_servers_header"]

GITALY_SERVERS_HEADER = "gitaly-servers"

# A node that was down reconnects within 2 s of its return: gRPC's default
# backoff grows to two minutes, which would leave a returned node waiting.
_CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
)


@dataclass(frozen=True, slots=True)
class NodeEndpoint:
    """One node of one virtual storage: its name (= storage name), address and token."""

    virtual_storage: str
    name: str
    address: str
    token: str = field(repr=False)

    @property
    def grpc_target(self) -> str:
        return str(parse_address(self.address).grpc_target)


def gitaly_servers_header(servers: Iterable[NodeEndpoint]) -> tuple[str, str]:
    """The ``gitaly-servers`` metadata pair naming ``servers``."""
    payload = {node.name: {"address": node.address, "token": node.token} for node in servers}
    encoded = base64.b64encode(json.dumps(payload, sort_keys=True).encode()).decode()
    return (GITALY_SERVERS_HEADER, encoded)


class NodeClients:
    """gRPC channels to the nodes, one per node, created on first use."""

    def __init__(self, endpoints: Iterable[NodeEndpoint]) -> None:
        self._endpoints = {(node.virtual_storage, node.name): node for node in endpoints}
        self._channels: dict[tuple[str, str], aio.Channel] = {}

    def endpoint(self, virtual_storage: str, name: str) -> NodeEndpoint:
        try:
            return self._endpoints[(virtual_storage, name)]
        except KeyError:
            raise LookupError(
                f"node {name!r} is not configured in virtual storage {virtual_storage!r}"
            ) from None

    def endpoints(self, virtual_storage: str | None = None) -> list[NodeEndpoint]:
        return [
            node
            for node in self._endpoints.values()
            if virtual_storage is None or node.virtual_storage == virtual_storage
        ]

    def _channel(self, virtual_storage: str, name: str) -> aio.Channel:
        key = (virtual_storage, name)
        channel = self._channels.get(key)
        if channel is None:
            channel = self._channels[key] = aio.insecure_channel(
                self.endpoint(virtual_storage, name).grpc_target, options=_CHANNEL_OPTIONS
            )
        return channel

    def _stub(self, virtual_storage: str, name: str) -> repository_pb2_grpc.RepositoryServiceStub:
        return repository_pb2_grpc.RepositoryServiceStub(self._channel(virtual_storage, name))

    async def reachable(self, virtual_storage: str, name: str, *, deadline: float) -> bool:
        """True when ``name`` answers the standard health check with SERVING."""
        stub = health_pb2_grpc.HealthStub(self._channel(virtual_storage, name))
        try:
            response = await stub.Check(health_pb2.HealthCheckRequest(), timeout=deadline)
        except aio.AioRpcError:
            return False
        return bool(response.status == health_pb2.HealthCheckResponse.SERVING)

    def _metadata(self, node: NodeEndpoint, *extra: tuple[str, str]) -> tuple[tuple[str, str], ...]:
        # The current span's W3C context (a replay's, in a worker): the
        # node's spans continue its trace. Nothing when nothing is traced.
        return (bearer_metadata(node.token), *extra, *inject_trace_context().items())

    async def replicate(
        self,
        virtual_storage: str,
        relative_path: str,
        *,
        source: str,
        target: str,
        deadline: float,
    ) -> None:
        """ReplicateRepository on ``target`` from ``source``; raises grpc.aio.AioRpcError."""
        source_node = self.endpoint(virtual_storage, source)
        target_node = self.endpoint(virtual_storage, target)
        request = repository_pb2.ReplicateRepositoryRequest(
            repository=shared_pb2.Repository(storage_name=target, relative_path=relative_path),
            source=shared_pb2.Repository(storage_name=source, relative_path=relative_path),
        )
        await self._stub(virtual_storage, target).ReplicateRepository(
            request,
            timeout=deadline,
            metadata=self._metadata(target_node, gitaly_servers_header([source_node])),
        )

    async def remove(self, virtual_storage: str, relative_path: str, *, node: str, deadline: float) -> bool:
        """RemoveRepository on ``node``; False when it had no such repository."""
        request = repository_pb2.RemoveRepositoryRequest(
            repository=shared_pb2.Repository(storage_name=node, relative_path=relative_path)
        )
        try:
            await self._stub(virtual_storage, node).RemoveRepository(
                request,
                timeout=deadline,
                metadata=self._metadata(self.endpoint(virtual_storage, node)),
            )
        except aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return False
            raise
        return True

    async def exists(self, virtual_storage: str, relative_path: str, *, node: str, deadline: float) -> bool:
        request = repository_pb2.RepositoryExistsRequest(
            repository=shared_pb2.Repository(storage_name=node, relative_path=relative_path)
        )
        response = await self._stub(virtual_storage, node).RepositoryExists(
            request,
            timeout=deadline,
            metadata=self._metadata(self.endpoint(virtual_storage, node)),
        )
        return bool(response.exists)

    async def checksum(
        self, virtual_storage: str, relative_path: str, *, node: str, deadline: float
    ) -> str | None:
        """CalculateChecksum on ``node``; None when the repository does not exist there."""
        request = repository_pb2.CalculateChecksumRequest(
            repository=shared_pb2.Repository(storage_name=node, relative_path=relative_path)
        )
        try:
            response = await self._stub(virtual_storage, node).CalculateChecksum(
                request,
                timeout=deadline,
                metadata=self._metadata(self.endpoint(virtual_storage, node)),
            )
        except aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        return str(response.checksum)

    async def close(self) -> None:
        channels, self._channels = self._channels, {}
        for channel in channels.values():
            await channel.close()
