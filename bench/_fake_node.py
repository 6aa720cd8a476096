"""A stand-in node for the router-floor measurement: GetBlob from memory.

Run as ``python _fake_node.py TOTAL_BYTES TOKEN``; it prints ``praefect
node listening on HOST:PORT`` like a real node. GetBlob answers with
TOTAL_BYTES of data in messages of ``limit`` bytes each (the request's
``limit`` field chooses the message size; no repository is read), so that
what a stream costs the router can be measured without git, disk or the
node's own work, for several message sizes. Only that one method exists;
the token is checked as a real node does, so the router's calls are real.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import grpc
from grpc import aio

from praefect.core.tokens import TokenError, authorization_from_metadata, verify
from praefect.protos.gitaly import blob_pb2

GET_BLOB = "/gitaly.BlobService/GetBlob"
MAX_MESSAGE = 64 * 1024 * 1024


class FakeNode(grpc.GenericRpcHandler):  # type: ignore[misc]
    def __init__(self, total: int, token: str) -> None:
        self._total = total
        self._token = token
        self._payloads: dict[int, bytes] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        if handler_call_details.method != GET_BLOB:
            return None
        return grpc.unary_stream_rpc_method_handler(self.get_blob)

    async def get_blob(self, request: bytes, context: aio.ServicerContext) -> None:
        try:
            verify(authorization_from_metadata(context.invocation_metadata()), self._token)
        except TokenError as error:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(error))
        size = blob_pb2.GetBlobRequest.FromString(request).limit
        if size <= 0 or size > MAX_MESSAGE // 2:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "set limit to the message size wanted")
        payload = self._payloads.get(size)
        if payload is None:
            payload = self._payloads[size] = os.urandom(size)
        rest = blob_pb2.GetBlobResponse(data=payload).SerializeToString()
        await context.write(blob_pb2.GetBlobResponse(size=self._total, oid="0" * 40, data=payload).SerializeToString())
        for _ in range(self._total // size - 1):
            await context.write(rest)


async def serve(total: int, token: str) -> None:
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", MAX_MESSAGE),
        ("grpc.max_send_message_length", MAX_MESSAGE),
    ]
    server = aio.server(options=options)
    server.add_generic_rpc_handlers((FakeNode(total, token),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"praefect node listening on 127.0.0.1:{port}", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), sys.argv[2]))
