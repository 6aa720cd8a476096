"""The benchmark's streaming clients: GetBlob of a whole blob, and a clone.

Responses are counted as bytes (raw multi-callables without
deserializers); only the first and last message are decoded, to check that
the blob had its size and the clone got a complete protocol v2 pack
response.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from grpc import aio

from praefect.core.tokens import bearer_metadata
from praefect.node import pktline
from praefect.protos.gitaly import blob_pb2, shared_pb2, smarthttp_pb2

GET_BLOB = "/gitaly.BlobService/GetBlob"
POST_UPLOAD_PACK = "/gitaly.SmartHTTPService/PostUploadPack"
STREAM_SECONDS = 300.0


def get_blob_request(storage: str, relative_path: str, oid: str) -> bytes:
    repository = shared_pb2.Repository(storage_name=storage, relative_path=relative_path)
    data: bytes = blob_pb2.GetBlobRequest(repository=repository, oid=oid, limit=-1).SerializeToString()
    return data


def upload_pack_request(storage: str, relative_path: str, wants: Sequence[str]) -> bytes:
    """PostUploadPack's only message: a protocol v2 ``fetch`` of every ``want``, as a clone asks."""
    body = b"".join(
        [
            pktline.encode("command=fetch\n"),
            pktline.encode("object-format=sha1\n"),
            b"0001",
            pktline.encode("ofs-delta\n"),
            pktline.encode("no-progress\n"),
            *(pktline.encode(f"want {oid}\n") for oid in wants),
            pktline.encode("done\n"),
            pktline.FLUSH,
        ]
    )
    repository = shared_pb2.Repository(storage_name=storage, relative_path=relative_path)
    data: bytes = smarthttp_pb2.PostUploadPackRequest(
        repository=repository, git_protocol="version=2", data=body
    ).SerializeToString()
    return data


async def get_blob(channel: aio.Channel, request: bytes, token: str, expected_size: int) -> tuple[int, float]:
    """Bytes received and seconds for one GetBlob of a whole blob."""
    call = channel.unary_stream(GET_BLOB)
    started = time.perf_counter()
    received = 0
    payload = 0
    async with asyncio.timeout(STREAM_SECONDS):
        async for message in call(request, metadata=(bearer_metadata(token),)):
            received += len(message)
            if payload == 0:  # the first message carries the size
                payload = blob_pb2.GetBlobResponse.FromString(message).size
    seconds = time.perf_counter() - started
    if payload != expected_size or received < expected_size:
        raise RuntimeError(f"GetBlob returned {received} bytes for a blob of {payload}, expected {expected_size}")
    return received, seconds


async def upload_pack(channel: aio.Channel, request: bytes, token: str) -> tuple[int, float]:
    """Bytes received and seconds for one full clone through PostUploadPack."""
    call = channel.stream_stream(POST_UPLOAD_PACK)
    started = time.perf_counter()
    received = 0
    first = last = b""
    async with asyncio.timeout(STREAM_SECONDS):
        stream = call(iter((request,)), metadata=(bearer_metadata(token),))
        async for message in stream:
            received += len(message)
            if not first:
                first = message
            last = message
    seconds = time.perf_counter() - started
    first_data = smarthttp_pb2.PostUploadPackResponse.FromString(first).data
    last_data = smarthttp_pb2.PostUploadPackResponse.FromString(last).data
    if b"packfile\n" not in first_data[:64] or not last_data.endswith(pktline.FLUSH):
        raise RuntimeError(
            f"PostUploadPack did not send a complete protocol v2 pack response "
            f"(starts {first_data[:32]!r}, ends {last_data[-8:]!r})"
        )
    return received, seconds
