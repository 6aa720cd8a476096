"""A gRPC server on loopback that serves every method through one function.

The test doubles that stand where a node would (a recording node, a holding
proxy) take any method as raw bytes:

    async with generic_server(double.handler) as (server, address):
        ...  # address: tcp://127.0.0.1:PORT

``handler`` gets each call's details and returns the method handler for it,
usually ``handler_of_kind(method_kind(details.method), ...)``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from grpc import aio

from praefect.core.methods import CallKind
from praefect.core.registry import default_registry

_LIMIT = 64 * 1024 * 1024
#: as a real node: the router's tests send more than 4 MiB
LARGE_MESSAGES = [("grpc.max_receive_message_length", _LIMIT), ("grpc.max_send_message_length", _LIMIT)]

Handler = Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None]


def method_kind(method: str) -> CallKind:
    """The call kind of a Gitaly method; unary for a method the registry does not know."""
    info = default_registry().get(method)
    return info.kind if info is not None else CallKind.UNARY_UNARY


def handler_of_kind(
    kind: CallKind,
    *,
    unary_unary: Callable[..., Any],
    unary_stream: Callable[..., Any],
    stream_unary: Callable[..., Any],
    stream_stream: Callable[..., Any],
) -> grpc.RpcMethodHandler:
    """The raw-bytes method handler of ``kind``, made of the behaviour for it."""
    if kind is CallKind.UNARY_STREAM:
        handler: grpc.RpcMethodHandler = grpc.unary_stream_rpc_method_handler(unary_stream)
    elif kind is CallKind.STREAM_UNARY:
        handler = grpc.stream_unary_rpc_method_handler(stream_unary)
    elif kind is CallKind.STREAM_STREAM:
        handler = grpc.stream_stream_rpc_method_handler(stream_stream)
    else:
        handler = grpc.unary_unary_rpc_method_handler(unary_unary)
    return handler


class _Generic(grpc.GenericRpcHandler):  # type: ignore[misc]
    def __init__(self, handler: Handler) -> None:
        self._handler = handler

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        return self._handler(details)


@contextlib.asynccontextmanager
async def generic_server(handler: Handler) -> AsyncIterator[tuple[aio.Server, str]]:
    """A started server on a free loopback port and its ``tcp://`` address;
    stopped without a grace period."""
    server = aio.server(options=LARGE_MESSAGES)
    server.add_generic_rpc_handlers((_Generic(handler),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield server, f"tcp://127.0.0.1:{port}"
    finally:
        await server.stop(0)
