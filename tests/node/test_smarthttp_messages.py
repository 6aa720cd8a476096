"""How the node cuts git's output into messages (`read_messages`), and
PostUploadPack's pack in messages of the 128 KiB limit once the client has
sent its request."""

from __future__ import annotations

import asyncio
import math
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from grpc import aio

from praefect.node import git as node_git
from praefect.node import pktline
from praefect.node.git import MESSAGE_SIZE_LIMIT, read_messages
from praefect.protos.gitaly import shared_pb2, smarthttp_pb2, smarthttp_pb2_grpc
from tests.node.conftest import NODE_TOKEN, STORAGE
from tests.support.gitenv import git, make_work_repo
from tests.support.grpc_client import auth
from tests.support.pack_messages import LONG_HOLD_SECONDS
from tests.support.smarthttp_client import bare_copy, head_of, upload_pack_v0_request

REPO = "group/project.git"
WAIT_SECONDS = 10.0
PIECE = 8 * 1024

# Writes as many bytes as each line of its stdin says, each in one write.
PACER = """
import sys
out = sys.stdout.buffer
for line in sys.stdin.buffer:
    out.write(b"x" * int(line))
    out.flush()
"""


@asynccontextmanager
async def pacer() -> AsyncIterator[tuple[asyncio.StreamWriter, asyncio.StreamReader]]:
    """A process whose output comes when and in the pieces the test asks for."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PACER, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        yield process.stdin, process.stdout
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def write_pieces(stdin: asyncio.StreamWriter, count: int, size: int = PIECE) -> None:
    stdin.write(f"{size}\n".encode() * count)
    await stdin.drain()


async def next_message(messages: AsyncIterator[bytes]) -> bytes | None:
    async with asyncio.timeout(WAIT_SECONDS):
        return await anext(messages, None)


def always(chunk: bytes) -> bool:
    return True


def never(chunk: bytes) -> bool:
    return False


# -- read_messages -----------------------------------------------------------------


async def test_output_that_may_wait_is_batched_up_to_the_limit() -> None:
    async with pacer() as (stdin, stdout):
        messages = read_messages(stdout, may_hold=always, hold=LONG_HOLD_SECONDS)
        await write_pieces(stdin, 20)  # 160 KiB in 8 KiB writes

        first = await next_message(messages)
        stdin.close()  # the pacer exits: end of output
        second = await next_message(messages)
        end = await next_message(messages)

    assert first is not None and len(first) == MESSAGE_SIZE_LIMIT
    assert second is not None and len(second) == 20 * PIECE - MESSAGE_SIZE_LIMIT
    assert end is None


async def test_output_that_may_not_wait_goes_out_as_it_comes() -> None:
    async with pacer() as (stdin, stdout):
        messages = read_messages(stdout, may_hold=never, hold=LONG_HOLD_SECONDS)
        received = []
        for _ in range(3):
            # Nothing more is written until this piece arrived: a reader
            # that waited for more would run into the deadline.
            await write_pieces(stdin, 1)
            received.append(await next_message(messages))

    assert [len(message or b"") for message in received] == [PIECE] * 3


async def test_the_end_of_output_ends_a_message_at_once() -> None:
    async with pacer() as (stdin, stdout):
        messages = read_messages(stdout, may_hold=always, hold=LONG_HOLD_SECONDS)
        await write_pieces(stdin, 1)
        stdin.close()

        message = await next_message(messages)
        end = await next_message(messages)

    assert message is not None and len(message) == PIECE
    assert end is None


async def test_a_message_waits_no_longer_than_the_hold() -> None:
    async with pacer() as (stdin, stdout):
        messages = read_messages(stdout, may_hold=always, hold=0.05)
        await write_pieces(stdin, 1)

        message = await next_message(messages)  # git writes nothing more

    assert message is not None and len(message) == PIECE


async def test_the_hold_policy_sees_every_byte_in_order() -> None:
    seen: list[bytes] = []

    def policy(chunk: bytes) -> bool:
        seen.append(chunk)
        return len(seen) % 3 != 0

    async with pacer() as (stdin, stdout):
        messages = read_messages(stdout, may_hold=policy, hold=LONG_HOLD_SECONDS)
        await write_pieces(stdin, 40, size=PIECE + 123)
        stdin.close()
        received = [message async for message in messages]

    assert b"".join(seen) == b"".join(received) == b"x" * (40 * (PIECE + 123))
    assert max(map(len, received)) <= MESSAGE_SIZE_LIMIT


# -- PostUploadPack ----------------------------------------------------------------


@pytest.fixture
def long_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    """Output that may wait does so for a minute: messages then end only at
    the size limit or the end of git's output, whatever the machine's load."""
    monkeypatch.setattr(node_git, "HOLD_SECONDS", LONG_HOLD_SECONDS)


@pytest.fixture
def stub(channel: aio.Channel) -> smarthttp_pb2_grpc.SmartHTTPServiceStub:
    return smarthttp_pb2_grpc.SmartHTTPServiceStub(channel)


async def upload_pack_requests(data: bytes) -> AsyncIterator[smarthttp_pb2.PostUploadPackRequest]:
    """The whole request in one message, then the end of the stream."""
    yield smarthttp_pb2.PostUploadPackRequest(
        repository=shared_pb2.Repository(storage_name=STORAGE, relative_path=REPO), data=data
    )


@pytest.mark.usefixtures("long_hold")
async def test_the_pack_comes_in_messages_of_the_limit(
    stub: smarthttp_pb2_grpc.SmartHTTPServiceStub, tmp_path: Path
) -> None:
    work = make_work_repo(tmp_path / "work", commits=1)
    (work / "noise.bin").write_bytes(os.urandom(2 * 1024 * 1024))
    git(["add", "."], cwd=work)
    git(["commit", "-q", "-m", "noise"], cwd=work)
    bare = bare_copy(work, tmp_path / "storage" / REPO)

    async with asyncio.timeout(60):
        responses = [
            response.data
            async for response in stub.PostUploadPack(
                upload_pack_requests(upload_pack_v0_request(head_of(bare))), metadata=auth(NODE_TOKEN)
            )
        ]

    total = sum(map(len, responses))
    assert total > 2 * 1024 * 1024
    # Once the client's whole request is in, git never waits for it: every
    # message is full but the last (8 KiB side-band packets would make 257),
    # and the first when git answered NAK before the client's end of stream
    # reached the node (negotiation output is never held).
    assert len(responses) <= math.ceil(total / MESSAGE_SIZE_LIMIT) + 1
    assert all(len(message) == MESSAGE_SIZE_LIMIT for message in responses[1:-1]), [len(m) for m in responses]
    assert b"".join(responses).startswith(pktline.encode("NAK\n"))
