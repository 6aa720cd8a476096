"""The benchmark's streaming clients: GetBlob of a whole blob, and a clone
through PostUploadPack and through SSHUploadPack.

Responses are counted as bytes and messages (raw multi-callables without
deserializers); only the first and last message are decoded, to check that
the blob had its size and the clone got a complete pack response.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from grpc import aio

from praefect.core.tokens import bearer_metadata
from praefect.node import pktline
from praefect.protos.gitaly import blob_pb2, shared_pb2, smarthttp_pb2, ssh_pb2

GET_BLOB = "/gitaly.BlobService/GetBlob"
POST_UPLOAD_PACK = "/gitaly.SmartHTTPService/PostUploadPack"
SSH_UPLOAD_PACK = "/gitaly.SSHService/SSHUploadPack"
STREAM_SECONDS = 300.0


@dataclass(frozen=True)
class Streamed:
    """What one streaming call moved."""

    size: int  # bytes of the response messages
    seconds: float
    messages: int


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


def ssh_upload_pack_request(storage: str, relative_path: str, wants: Sequence[str]) -> bytes:
    """SSHUploadPack's first message: a protocol v0 fetch of every ``want``
    with nothing in common, side-band-64k, as ``git clone`` over ssh sends
    it after the advertisement."""
    body = b"".join(
        [
            pktline.encode(f"want {wants[0]} multi_ack_detailed side-band-64k ofs-delta no-progress\n"),
            *(pktline.encode(f"want {oid}\n") for oid in wants[1:]),
            pktline.FLUSH,
            pktline.encode("done\n"),
        ]
    )
    repository = shared_pb2.Repository(storage_name=storage, relative_path=relative_path)
    data: bytes = ssh_pb2.SSHUploadPackRequest(repository=repository, stdin=body).SerializeToString()
    return data


async def get_blob(channel: aio.Channel, request: bytes, token: str, expected_size: int) -> Streamed:
    """One GetBlob of a whole blob."""
    call = channel.unary_stream(GET_BLOB)
    started = time.perf_counter()
    received = messages = 0
    payload = 0
    async with asyncio.timeout(STREAM_SECONDS):
        async for message in call(request, metadata=(bearer_metadata(token),)):
            received += len(message)
            messages += 1
            if payload == 0:  # the first message carries the size
                payload = blob_pb2.GetBlobResponse.FromString(message).size
    seconds = time.perf_counter() - started
    if payload != expected_size or received < expected_size:
        raise RuntimeError(f"GetBlob returned {received} bytes for a blob of {payload}, expected {expected_size}")
    return Streamed(received, seconds, messages)


async def upload_pack(channel: aio.Channel, request: bytes, token: str) -> Streamed:
    """One full clone through PostUploadPack."""
    call = channel.stream_stream(POST_UPLOAD_PACK)
    started = time.perf_counter()
    received = messages = 0
    first = last = b""
    async with asyncio.timeout(STREAM_SECONDS):
        stream = call(iter((request,)), metadata=(bearer_metadata(token),))
        async for message in stream:
            received += len(message)
            messages += 1
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
    return Streamed(received, seconds, messages)


async def ssh_upload_pack(channel: aio.Channel, request: bytes, token: str) -> Streamed:
    """One full clone through SSHUploadPack. Like git over ssh, the client
    keeps its side of the stream open until git's exit status arrives."""
    call = channel.stream_stream(SSH_UPLOAD_PACK)
    finished = asyncio.Event()

    async def requests() -> AsyncIterator[bytes]:
        yield request
        await finished.wait()

    started = time.perf_counter()
    received = messages = 0
    last = b""
    async with asyncio.timeout(STREAM_SECONDS):
        async for message in call(requests(), metadata=(bearer_metadata(token),)):
            received += len(message)
            messages += 1
            last = message
            # Only the small last message can be the exit status: decoding
            # every 128 KiB message would load the client.
            if len(message) < 64 and ssh_pb2.SSHUploadPackResponse.FromString(message).HasField("exit_status"):
                finished.set()
    seconds = time.perf_counter() - started
    response = ssh_pb2.SSHUploadPackResponse.FromString(last)
    if not response.HasField("exit_status") or response.exit_status.value != 0:
        raise RuntimeError(f"SSHUploadPack did not end with exit status 0 ({response})")
    return Streamed(received, seconds, messages)
