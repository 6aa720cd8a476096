"""A naive gRPC bytes proxy: the baseline the router's design improves on.

Every method is handled as bidirectional streaming (one generic
stream-stream handler), each call builds a new multi-callable, requests are
fed through an async generator and responses relayed with ``async for``;
metadata (with the client's token) is passed on unchanged and nothing is
decoded, authenticated or routed. It is what a first Python proxy looks
like, and it does less per call than the router, so the benchmark can show
what the router's per-method call kinds and cached objects save.

    python bench/_naive_proxy.py NODE_HOST:PORT

prints ``praefect naive-proxy listening on HOST:PORT`` and serves until
SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import grpc
from grpc import aio

MAX_MESSAGE = 64 * 1024 * 1024
OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
]
HOP_BY_HOP = frozenset({"user-agent", "te", "host", "connection", "content-type", "grpc-timeout"})


class NaiveProxy(grpc.GenericRpcHandler):  # type: ignore[misc]
    def __init__(self, channel: aio.Channel) -> None:
        self._channel = channel

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method: str = handler_call_details.method
        channel = self._channel

        async def forward(requests: AsyncIterator[bytes], context: aio.ServicerContext) -> AsyncIterator[bytes]:
            metadata = tuple(
                (key, value) for key, value in context.invocation_metadata() or () if key not in HOP_BY_HOP
            )

            async def relay_requests() -> AsyncIterator[bytes]:
                async for request in requests:
                    yield request

            call: Any = channel.stream_stream(method)(
                relay_requests(), metadata=metadata, timeout=context.time_remaining()
            )
            try:
                async for response in call:
                    yield response
            except aio.AioRpcError as error:
                await context.abort(error.code(), error.details() or "")

        return grpc.stream_stream_rpc_method_handler(forward)


async def serve(node: str) -> None:
    async with aio.insecure_channel(node, options=OPTIONS) as channel:
        server = aio.server(options=OPTIONS)
        server.add_generic_rpc_handlers((NaiveProxy(channel),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopping.set)
        print(f"praefect naive-proxy listening on 127.0.0.1:{port}", flush=True)
        await stopping.wait()
        await server.stop(1)


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1]))
