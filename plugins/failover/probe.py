"""One health check of one node: gRPC health, then a storage read/write probe.

1. ``grpc.health.v1.Health/Check`` within ``failover.health_check_timeout``:
   the node must answer SERVING.
2. ``gitaly.ServerService/ServerInfo`` (with the node's token) within
   ``failover.probe_timeout``: the node reports each storage's ``readable``
   and ``writeable``, which it computes by listing the storage and writing,
   syncing and removing a probe file under ``<storage>/+praefect/`` (see
   :mod:`praefect.node.services.server`). A full, read-only or broken disk
   fails the probe, so the node counts as down although its process answers.

The node's storage named like the node (a node's name is its storage name)
must be readable and writeable.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from praefect.protos.gitaly import server_pb2, server_pb2_grpc

__all__ = ["NodeCheck", "check_node"]


@dataclass(frozen=True, slots=True)
class NodeCheck:
    """The outcome of one check; ``reason`` says what failed (empty when healthy)."""

    healthy: bool
    reason: str = ""


def _rpc_failure(what: str, error: aio.AioRpcError) -> NodeCheck:
    code = error.code()
    name = code.name if isinstance(code, grpc.StatusCode) else str(code)
    return NodeCheck(False, f"{what} failed: {name}: {error.details() or 'no details'}")


async def check_node(
    channel: aio.Channel,
    auth: tuple[str, str],
    storage: str,
    *,
    health_timeout: float,
    probe_timeout: float,
) -> NodeCheck:
    """Check the node behind ``channel``; ``auth`` is its ``authorization`` metadata."""
    try:
        health = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=health_timeout
        )
    except aio.AioRpcError as error:
        return _rpc_failure("gRPC health check", error)
    if health.status != health_pb2.HealthCheckResponse.SERVING:
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(health.status)
        return NodeCheck(False, f"the node is not serving (health status {status})")
    try:
        info: server_pb2.ServerInfoResponse = await server_pb2_grpc.ServerServiceStub(
            channel
        ).ServerInfo(server_pb2.ServerInfoRequest(), metadata=(auth,), timeout=probe_timeout)
    except aio.AioRpcError as error:
        return _rpc_failure("storage probe (ServerInfo)", error)
    for status in info.storage_statuses:
        if status.storage_name != storage:
            continue
        if not status.readable:
            return NodeCheck(False, f"storage {storage!r} is not readable")
        if not status.writeable:
            return NodeCheck(
                False,
                f"storage {storage!r} is not writeable: the node could not write a probe "
                "file (disk full, read-only or failing?)",
            )
        return NodeCheck(True)
    names = ", ".join(status.storage_name for status in info.storage_statuses) or "none"
    return NodeCheck(False, f"the node has no storage {storage!r} (it has {names})")
