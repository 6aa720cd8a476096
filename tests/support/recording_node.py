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

import grpc
from grpc import aio

from tests.support.generic_grpc import generic_server, handler_of_kind, method_kind

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

        return handler_of_kind(
            method_kind(details.method),
            unary_unary=unary_unary,
            unary_stream=unary_stream,
            stream_unary=stream_unary,
            stream_stream=stream_stream,
        )


@contextlib.asynccontextmanager
async def recording_node() -> AsyncIterator[RecordingNode]:
    node = RecordingNode()
    async with generic_server(node._handler) as (server, address):
        node.server, node.address = server, address
        try:
            yield node
        finally:
            node.release.set()
