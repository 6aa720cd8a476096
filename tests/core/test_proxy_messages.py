"""Through the router, a clone arrives in the node's messages of up to
128 KiB, one router message per node message: the router neither splits
nor merges them, so the node's batching saves the router and the client
their per-message cost too (docs/performance.md)."""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from grpc import aio

from praefect.node import git as node_git
from praefect.node import pktline
from praefect.node.git import MESSAGE_SIZE_LIMIT
from praefect.node.server import NodeServer, NodeServerConfig
from praefect.protos.gitaly import (
    shared_pb2,
    smarthttp_pb2,
    smarthttp_pb2_grpc,
    ssh_pb2,
    ssh_pb2_grpc,
)
from tests.support.gitenv import git, make_work_repo
from tests.support.grpc_client import auth
from tests.support.pack_messages import LONG_HOLD_SECONDS
from tests.support.router import (
    NODE_TOKEN,
    ROUTER_TOKEN,
    VIRTUAL_STORAGE,
    router_settings,
    running_router,
)
from tests.support.smarthttp_client import bare_copy, head_of, upload_pack_v0_request

NODE = "gitaly-1"
REPO = "group/big.git"
CALL_SECONDS = 30.0
AUTH = auth(ROUTER_TOKEN)


@pytest.fixture(autouse=True)
def long_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    """The in-process node holds output that may wait for a minute: messages
    end only at the size limit, a flush or git's end, whatever the load."""
    monkeypatch.setattr(node_git, "HOLD_SECONDS", LONG_HOLD_SECONDS)


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[NodeServer]:
    config = NodeServerConfig(listen_addr="127.0.0.1:0", storages={NODE: tmp_path / NODE}, token=NODE_TOKEN)
    async with NodeServer(config) as server:
        yield server


@pytest.fixture
async def channel(node: NodeServer) -> AsyncIterator[aio.Channel]:
    async with running_router(router_settings({NODE: f"tcp://{node.bound_addr}"})) as router:
        assert router.bound_addr
        async with aio.insecure_channel(router.bound_addr) as ch:
            yield ch


@pytest.fixture
def head(tmp_path: Path) -> str:
    """REPO on the node, its head adding 1 MiB of random data."""
    work = make_work_repo(tmp_path / "work", commits=1)
    (work / "noise.bin").write_bytes(os.urandom(1024 * 1024))
    git(["add", "."], cwd=work)
    git(["commit", "-q", "-m", "noise"], cwd=work)
    bare_copy(work, tmp_path / NODE / REPO)
    return head_of(work)


def repository() -> shared_pb2.Repository:
    return shared_pb2.Repository(storage_name=VIRTUAL_STORAGE, relative_path=REPO)


async def test_a_post_upload_pack_clone_arrives_in_full_messages(channel: aio.Channel, head: str) -> None:
    async def requests() -> AsyncIterator[smarthttp_pb2.PostUploadPackRequest]:
        yield smarthttp_pb2.PostUploadPackRequest(repository=repository(), data=upload_pack_v0_request(head))

    stub = smarthttp_pb2_grpc.SmartHTTPServiceStub(channel)
    async with asyncio.timeout(CALL_SECONDS):
        messages = [response.data async for response in stub.PostUploadPack(requests(), metadata=AUTH)]

    total = sum(map(len, messages))
    assert total > 1024 * 1024
    # git may answer NAK before the client's end of stream reaches the node:
    # that packet alone then goes out at once (negotiation is never held).
    # Every message after it but the last is full.
    assert len(messages) <= math.ceil(total / MESSAGE_SIZE_LIMIT) + 1
    assert all(len(message) == MESSAGE_SIZE_LIMIT for message in messages[1:-1]), [len(m) for m in messages]
    assert b"".join(messages).startswith(pktline.encode("NAK\n"))


async def test_an_ssh_clone_arrives_in_full_messages_while_the_client_stays(channel: aio.Channel, head: str) -> None:
    finished = asyncio.Event()

    async def requests() -> AsyncIterator[ssh_pb2.SSHUploadPackRequest]:
        yield ssh_pb2.SSHUploadPackRequest(repository=repository(), stdin=upload_pack_v0_request(head))
        await finished.wait()  # as git over ssh: open until git exits

    stub = ssh_pb2_grpc.SSHServiceStub(channel)
    responses = []
    async with asyncio.timeout(CALL_SECONDS):
        async for response in stub.SSHUploadPack(requests(), metadata=AUTH):
            responses.append(response)
            if response.HasField("exit_status"):
                finished.set()

    assert responses[-1].exit_status.value == 0
    stdout = [response.stdout for response in responses if response.stdout]
    data = b"".join(stdout)
    pack_start = data.index(pktline.encode("NAK\n")) + len(pktline.encode("NAK\n"))
    # The advertisement and the NAK go out as git writes them; the messages
    # that carry the pack are full but the last (and one shared with the NAK).
    ends = [sum(map(len, stdout[: index + 1])) for index in range(len(stdout))]
    carrying = [len(message) for message, end in zip(stdout, ends, strict=True) if end > pack_start]
    assert max(map(len, stdout)) <= MESSAGE_SIZE_LIMIT
    assert len(carrying) <= math.ceil((len(data) - pack_start) / MESSAGE_SIZE_LIMIT) + 1, carrying
