"""The node's commit service (not implemented yet: calls get UNIMPLEMENTED)."""

from __future__ import annotations

from grpc import aio

from praefect.node.context import NodeContext


def register(server: aio.Server, ctx: NodeContext) -> None:
    """Add this service's servicer to `server`."""
