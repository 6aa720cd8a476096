"""A transparent gRPC proxy in front of a real node that can hold one call.

    async with holding_proxy(node.address) as proxy:
        settings point the node's address at proxy.address
        proxy.hold_next(REPLICATE_REPOSITORY)
        ...                                   # the next such call waits at the proxy
        await proxy.held.wait()
        proxy.release.set()                   # now it reaches the node

Every call is forwarded as raw bytes to the node, with its metadata and
deadline, in all four call kinds (the router's calls, its health checks,
and other nodes fetching from this one through the ``gitaly-servers``
address). Each call is recorded with a sequence number when it starts and
when it ends, so a test can tell what reached the node before what.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
from grpc import aio

from praefect.core.methods import CallKind
from praefect.core.registry import default_registry
from praefect.settings import parse_address

_LIMIT = 64 * 1024 * 1024
_OPTIONS = [("grpc.max_receive_message_length", _LIMIT), ("grpc.max_send_message_length", _LIMIT)]


@dataclass
class ProxiedCall:
    method: str
    #: it waited at the proxy until ``release``
    held: bool
    #: sequence numbers (one clock for every start and end)
    started: int
    ended: int | None = None


class HoldingProxy:
    def __init__(self, upstream: str) -> None:
        self.channel = aio.insecure_channel(str(parse_address(upstream).grpc_target), options=_OPTIONS)
        self.calls: list[ProxiedCall] = []
        self.held = asyncio.Event()
        self.release = asyncio.Event()
        self.address = ""
        self._hold: str | None = None
        self._clock = itertools.count()

    def hold_next(self, method: str) -> None:
        """Hold the next call of ``method`` until ``release`` is set."""
        self._hold = method
        self.held.clear()
        self.release.clear()

    def named(self, method: str) -> list[ProxiedCall]:
        return [call for call in self.calls if call.method == method]

    async def _begin(self, method: str) -> ProxiedCall:
        held = self._hold == method
        call = ProxiedCall(method, held, next(self._clock))
        self.calls.append(call)
        if held:
            self._hold = None
            self.held.set()
            await self.release.wait()
        return call

    def _end(self, call: ProxiedCall) -> None:
        call.ended = next(self._clock)

    def handler(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method: str = details.method
        info = default_registry().get(method)
        kind = info.kind if info is not None else CallKind.UNARY_UNARY
        proxy, channel = self, self.channel

        async def unary_unary(request: bytes, context: aio.ServicerContext) -> bytes:
            call = await proxy._begin(method)
            try:
                response: bytes = await channel.unary_unary(method)(
                    request, metadata=_forwarded(context), timeout=context.time_remaining()
                )
                return response
            except aio.AioRpcError as error:
                await _relay_error(context, error)
                raise
            finally:
                proxy._end(call)

        async def unary_stream(request: bytes, context: aio.ServicerContext) -> AsyncIterator[bytes]:
            call = await proxy._begin(method)
            try:
                upstream: Any = channel.unary_stream(method)(
                    request, metadata=_forwarded(context), timeout=context.time_remaining()
                )
                async for response in upstream:
                    yield response
            except aio.AioRpcError as error:
                await _relay_error(context, error)
            finally:
                proxy._end(call)

        async def stream_unary(requests: AsyncIterator[bytes], context: aio.ServicerContext) -> bytes:
            call = await proxy._begin(method)
            try:
                response: bytes = await channel.stream_unary(method)(
                    requests, metadata=_forwarded(context), timeout=context.time_remaining()
                )
                return response
            except aio.AioRpcError as error:
                await _relay_error(context, error)
                raise
            finally:
                proxy._end(call)

        async def stream_stream(
            requests: AsyncIterator[bytes], context: aio.ServicerContext
        ) -> AsyncIterator[bytes]:
            call = await proxy._begin(method)
            try:
                upstream: Any = channel.stream_stream(method)(
                    requests, metadata=_forwarded(context), timeout=context.time_remaining()
                )
                async for response in upstream:
                    yield response
            except aio.AioRpcError as error:
                await _relay_error(context, error)
            finally:
                proxy._end(call)

        handlers: dict[CallKind, Any] = {
            CallKind.UNARY_UNARY: grpc.unary_unary_rpc_method_handler(unary_unary),
            CallKind.UNARY_STREAM: grpc.unary_stream_rpc_method_handler(unary_stream),
            CallKind.STREAM_UNARY: grpc.stream_unary_rpc_method_handler(stream_unary),
            CallKind.STREAM_STREAM: grpc.stream_stream_rpc_method_handler(stream_stream),
        }
        handler: grpc.RpcMethodHandler = handlers[kind]
        return handler


def _forwarded(context: aio.ServicerContext) -> tuple[tuple[str, str | bytes], ...]:
    return tuple(
        (key, value)
        for key, value in context.invocation_metadata() or ()
        if not key.startswith((":", "grpc-"))
    )


async def _relay_error(context: aio.ServicerContext, error: aio.AioRpcError) -> None:
    await context.abort(error.code(), error.details() or "", trailing_metadata=error.trailing_metadata())


class _Generic(grpc.GenericRpcHandler):  # type: ignore[misc]
    def __init__(self, proxy: HoldingProxy) -> None:
        self._proxy = proxy

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        return self._proxy.handler(details)


@contextlib.asynccontextmanager
async def holding_proxy(upstream: str) -> AsyncIterator[HoldingProxy]:
    """A proxy to the node at ``upstream`` (``tcp://host:port``) on a free loopback port."""
    proxy = HoldingProxy(upstream)
    server = aio.server(options=_OPTIONS)
    server.add_generic_rpc_handlers((_Generic(proxy),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    proxy.address = f"tcp://127.0.0.1:{port}"
    try:
        yield proxy
    finally:
        proxy.release.set()
        await server.stop(0)
        await proxy.channel.close()
