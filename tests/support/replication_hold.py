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
from praefect.settings import parse_address
from tests.support.generic_grpc import LARGE_MESSAGES, generic_server, handler_of_kind, method_kind


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
        self.channel = aio.insecure_channel(str(parse_address(upstream).grpc_target), options=LARGE_MESSAGES)
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
        kind = method_kind(method)
        proxy = self
        # The upstream call of the same kind: bytes or an iterator of them in,
        # bytes or an iterator of them out.
        if kind is CallKind.UNARY_UNARY:
            forward: Any = self.channel.unary_unary(method)
        elif kind is CallKind.UNARY_STREAM:
            forward = self.channel.unary_stream(method)
        elif kind is CallKind.STREAM_UNARY:
            forward = self.channel.stream_unary(method)
        else:
            forward = self.channel.stream_stream(method)

        async def one_response(request: Any, context: aio.ServicerContext) -> bytes:
            call = await proxy._begin(method)
            try:
                response: bytes = await forward(
                    request, metadata=_forwarded(context), timeout=context.time_remaining()
                )
                return response
            except aio.AioRpcError as error:
                await _relay_error(context, error)
                raise
            finally:
                proxy._end(call)

        async def responses(request: Any, context: aio.ServicerContext) -> AsyncIterator[bytes]:
            call = await proxy._begin(method)
            try:
                async for response in forward(
                    request, metadata=_forwarded(context), timeout=context.time_remaining()
                ):
                    yield response
            except aio.AioRpcError as error:
                await _relay_error(context, error)
            finally:
                proxy._end(call)

        return handler_of_kind(
            kind,
            unary_unary=one_response,
            unary_stream=responses,
            stream_unary=one_response,
            stream_stream=responses,
        )


def _forwarded(context: aio.ServicerContext) -> tuple[tuple[str, str | bytes], ...]:
    return tuple(
        (key, value)
        for key, value in context.invocation_metadata() or ()
        if not key.startswith((":", "grpc-"))
    )


async def _relay_error(context: aio.ServicerContext, error: aio.AioRpcError) -> None:
    await context.abort(error.code(), error.details() or "", trailing_metadata=error.trailing_metadata())


@contextlib.asynccontextmanager
async def holding_proxy(upstream: str) -> AsyncIterator[HoldingProxy]:
    """A proxy to the node at ``upstream`` (``tcp://host:port``) on a free loopback port."""
    proxy = HoldingProxy(upstream)
    try:
        async with generic_server(proxy.handler) as (_, address):
            proxy.address = address
            try:
                yield proxy
            finally:
                proxy.release.set()
    finally:
        await proxy.channel.close()
