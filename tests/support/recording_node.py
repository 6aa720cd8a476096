"""A real gRPC server on loopback that records what a router forwards to it.

It stands where a storage node would and serves any method as raw bytes, so
tests can see exactly what arrived (request bytes, metadata, deadline) and
make the "node" answer in a chosen way, picked per call by the
``x-test-behaviour`` metadata key the client sends (the router forwards it):

- ``echo`` (default): answer with the request bytes; for streams, one
  response per request message;
- ``hang``: wait until the call is cancelled (records that it was);
- ``fail``: abort with FAILED_PRECONDITION "node says no" and trailing
  metadata ``x-node-trailer: failed``;
- ``metadata``: send initial metadata ``x-node-initial: hello`` and trailing
  metadata ``x-node-trailer: bye`` around an echo;
- ``slow``: wait until ``release`` is set, then echo.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc import aio

from praefect.core.methods import CallKind
from praefect.core.registry import default_registry

BEHAVIOUR_KEY = "x-test-behaviour"


@dataclass
class RecordedCall:
    method: str
    metadata: dict[str, str | bytes]
    time_remaining: float | None
    requests: list[bytes] = field(default_factory=list)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)


class RecordingNode:
    def __init__(self) -> None:
        self.calls: list[RecordedCall] = []
        self.arrived = asyncio.Condition()
        self.release = asyncio.Event()
        self.server: aio.Server | None = None
        self.address = ""

    async def wait_for_calls(self, count: int, within: float = 10) -> list[RecordedCall]:
        async with asyncio.timeout(within):
            async with self.arrived:
                await self.arrived.wait_for(lambda: len(self.calls) >= count)
        return self.calls

    async def _record(self, call: RecordedCall) -> None:
        self.calls.append(call)
        async with self.arrived:
            self.arrived.notify_all()

    def _handler(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = default_registry().get(details.method)
        kind = method.kind if method is not None else CallKind.UNARY_UNARY
        node = self

        async def begin(context: aio.ServicerContext) -> tuple[RecordedCall, str]:
            metadata = dict(context.invocation_metadata() or ())
            call = RecordedCall(details.method, metadata, context.time_remaining())
            behaviour = str(metadata.get(BEHAVIOUR_KEY, "echo"))
            return call, behaviour

        async def act(call: RecordedCall, behaviour: str, context: aio.ServicerContext) -> None:
            if behaviour == "metadata":
                await context.send_initial_metadata((("x-node-initial", "hello"),))
                context.set_trailing_metadata((("x-node-trailer", "bye"),))
            elif behaviour == "fail":
                await context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "node says no",
                    trailing_metadata=(("x-node-trailer", "failed"),),
                )
            elif behaviour == "hang":
                try:
                    await asyncio.Event().wait()
                except asyncio.CancelledError:
                    call.cancelled.set()
                    raise
            elif behaviour == "slow":
                await node.release.wait()

        async def unary_unary(request: bytes, context: aio.ServicerContext) -> bytes:
            call, behaviour = await begin(context)
            call.requests.append(request)
            await node._record(call)
            try:
                await act(call, behaviour, context)
                return request
            finally:
                call.finished.set()

        async def unary_stream(request: bytes, context: aio.ServicerContext) -> AsyncIterator[bytes]:
            call, behaviour = await begin(context)
            call.requests.append(request)
            await node._record(call)
            try:
                await act(call, behaviour, context)
                yield request
                yield request
            finally:
                call.finished.set()

        async def stream_unary(requests: AsyncIterator[bytes], context: aio.ServicerContext) -> bytes:
            call, behaviour = await begin(context)
            await node._record(call)
            try:
                async for request in requests:
                    call.requests.append(request)
                await act(call, behaviour, context)
                return b"".join(call.requests)
            finally:
                call.finished.set()

        async def stream_stream(requests: AsyncIterator[bytes], context: aio.ServicerContext) -> AsyncIterator[bytes]:
            call, behaviour = await begin(context)
            await node._record(call)
            try:
                await act(call, behaviour, context)
                async for request in requests:
                    call.requests.append(request)
                    yield request
            except asyncio.CancelledError:
                call.cancelled.set()
                raise
            finally:
                call.finished.set()

        handlers: dict[CallKind, Any] = {
            CallKind.UNARY_UNARY: grpc.unary_unary_rpc_method_handler(unary_unary),
            CallKind.UNARY_STREAM: grpc.unary_stream_rpc_method_handler(unary_stream),
            CallKind.STREAM_UNARY: grpc.stream_unary_rpc_method_handler(stream_unary),
            CallKind.STREAM_STREAM: grpc.stream_stream_rpc_method_handler(stream_stream),
        }
        handler: grpc.RpcMethodHandler = handlers[kind]
        return handler


class _Generic(grpc.GenericRpcHandler):  # type: ignore[misc]
    def __init__(self, node: RecordingNode) -> None:
        self._node = node

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        return self._node._handler(details)


@contextlib.asynccontextmanager
async def recording_node() -> AsyncIterator[RecordingNode]:
    node = RecordingNode()
    limit = 64 * 1024 * 1024  # as a real node: the router's tests send more than 4 MiB
    server = aio.server(
        options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)]
    )
    server.add_generic_rpc_handlers((_Generic(node),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    node.server = server
    node.address = f"tcp://127.0.0.1:{port}"
    try:
        yield node
    finally:
        node.release.set()
        await server.stop(0)
