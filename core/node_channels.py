"""One gRPC channel per storage node, reused by every call.

Each node gets a single ``grpc.aio`` channel for the router's lifetime,
and per method a cached raw-bytes multi-callable (no serializers: the
router forwards bytes). Every node call carries a v2 token signed with that
node's own token; the signature is reused within its second.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from grpc import aio

from praefect.core.keepalive import client_keepalive_options
from praefect.core.methods import CallKind, MethodInfo
from praefect.core.routing_types import NodeRef
from praefect.core.telemetry.node_calls import instrument_node_callable
from praefect.core.tokens import bearer_metadata

__all__ = ["NodeChannel", "NodeChannels", "NodeEndpoint", "channel_options"]


@dataclass(frozen=True, slots=True)
class NodeEndpoint:
    """How to reach one node: its reference, gRPC target and internal token."""

    node: NodeRef
    grpc_target: str
    token: str


def channel_options(max_message_size: int) -> list[tuple[str, Any]]:
    """Options of a router -> node channel."""
    return [
        ("grpc.max_receive_message_length", max_message_size),
        ("grpc.max_send_message_length", max_message_size),
        # Reconnect quickly once a node is back instead of backing off for
        # up to two minutes (gRPC's default maximum).
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 5_000),
        ("grpc.enable_retries", 0),
        # A node whose host vanished mid-stream fails the call in ~50 s, not
        # when TCP gives up; idle connections are the health checks' to watch.
        *client_keepalive_options(),
    ]


class NodeChannel:
    """The channel to one node with its cached multi-callables and token."""

    __slots__ = ("_callables", "_token", "_token_metadata", "_token_second", "channel", "endpoint")

    def __init__(self, endpoint: NodeEndpoint, max_message_size: int) -> None:
        self.endpoint = endpoint
        self.channel = aio.insecure_channel(
            endpoint.grpc_target, options=channel_options(max_message_size)
        )
        self._callables: dict[str, Any] = {}
        self._token = endpoint.token
        self._token_second = -1
        self._token_metadata: tuple[str, str] = ("authorization", "")

    @property
    def node(self) -> NodeRef:
        return self.endpoint.node

    def auth_metadata(self) -> tuple[str, str]:
        """``authorization`` metadata with a v2 token for this node."""
        now = int(time.time())
        if now != self._token_second:
            self._token_metadata = bearer_metadata(self._token, now)
            self._token_second = now
        return self._token_metadata

    def callable_for(self, method: MethodInfo) -> Any:
        """A raw-bytes multi-callable of the method's own call kind."""
        found = self._callables.get(method.name)
        if found is None:
            found = self._callables[method.name] = instrument_node_callable(
                self._make_callable(method.name, method.kind), self.node, method.name
            )
        return found

    def _make_callable(self, name: str, kind: CallKind) -> Any:
        # `_registered_method=True` lets grpc pre-register the method path on
        # the channel instead of interning it on every call.
        if kind is CallKind.UNARY_UNARY:
            return self.channel.unary_unary(name, _registered_method=True)
        if kind is CallKind.UNARY_STREAM:
            return self.channel.unary_stream(name, _registered_method=True)
        if kind is CallKind.STREAM_UNARY:
            return self.channel.stream_unary(name, _registered_method=True)
        return self.channel.stream_stream(name, _registered_method=True)

    async def close(self) -> None:
        await self.channel.close()


class NodeChannels:
    """The channels of every node, keyed by :class:`NodeRef`."""

    def __init__(self, endpoints: Iterable[NodeEndpoint], max_message_size: int) -> None:
        self._channels: dict[NodeRef, NodeChannel] = {
            endpoint.node: NodeChannel(endpoint, max_message_size) for endpoint in endpoints
        }

    def __getitem__(self, node: NodeRef) -> NodeChannel:
        return self._channels[node]

    def __iter__(self) -> Iterator[NodeChannel]:
        return iter(self._channels.values())

    def __len__(self) -> int:
        return len(self._channels)

    def __contains__(self, node: object) -> bool:
        return node in self._channels

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
