"""How SSHUploadPack cuts git's output into messages: packs in messages of
up to 128 KiB while the client keeps its stream open, and nothing that
ends a response (a flush) is held back; `OutputHold`'s reading of the
pkt-line framing."""

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
from praefect.node.git import MESSAGE_SIZE_LIMIT, OutputHold
from praefect.protos.gitaly import ssh_pb2, ssh_pb2_grpc
from tests.support.gitenv import git, make_work_repo
from tests.support.pack_messages import LONG_HOLD_SECONDS
from tests.support.repository_calls import create, node_auth, repo, repository_stub
from tests.support.smarthttp_client import head_of

CALL_SECONDS = 30.0
BLOB_BYTES = 1024 * 1024


def stdin_open() -> bool:
    return False


def band(data: bytes, number: int = 1) -> bytes:
    """A side-band packet of band `number`."""
    packet: bytes = pktline.encode(bytes([number]) + data)
    return packet


# -- OutputHold: what may wait -----------------------------------------------------


def test_a_side_band_packet_may_wait_for_more() -> None:
    assert OutputHold(stdin_open)(band(b"PACK...")) is True


def test_negotiation_and_advertisement_packets_never_wait() -> None:
    hold = OutputHold(stdin_open)
    assert hold(pktline.encode("0123 refs/heads/main\n") + pktline.FLUSH) is False
    assert hold(pktline.encode("NAK\n")) is False
    assert hold(pktline.encode("ACK 0123 common\n")) is False


def test_a_flush_after_side_band_packets_ends_the_wait() -> None:
    hold = OutputHold(stdin_open)
    assert hold(pktline.encode("packfile\n") + band(b"data")) is True
    assert hold(band(b"more") + pktline.FLUSH) is False


def test_a_packet_split_across_chunks_is_followed() -> None:
    hold = OutputHold(stdin_open)
    packet = band(b"x" * 100)
    # header cut in two, then the band byte alone: the rest is on its way
    assert hold(packet[:2]) is True
    assert hold(packet[2:4]) is True
    assert hold(packet[4:5] + packet[5:50]) is True
    assert hold(packet[50:]) is True
    # a plain packet whose first payload byte comes in a later chunk
    nak = pktline.encode("NAK\n")
    assert hold(nak[:4]) is True
    assert hold(nak[4:]) is False


def test_output_that_is_not_pkt_lines_never_waits() -> None:
    hold = OutputHold(stdin_open)
    assert hold(pktline.encode("NAK\n") + b"PACK\x00\x00\x00\x02") is False
    assert hold(band(b"looks like a packet")) is False


def test_anything_may_wait_once_gits_stdin_is_closed() -> None:
    hold = OutputHold(lambda: True)
    assert hold(pktline.encode("NAK\n")) is True
    assert hold(pktline.FLUSH) is True


# -- SSHUploadPack through a node -----------------------------------------------------


@pytest.fixture
def long_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    """Output that may wait does so for a minute: a message can then only
    end at the size limit, a flush or the end of git's output, whatever the
    machine's load, and anything that waited for the hold would fail the
    test by its deadline."""
    monkeypatch.setattr(node_git, "HOLD_SECONDS", LONG_HOLD_SECONDS)


@pytest.fixture
async def big_repository(channel: aio.Channel, tmp_path: Path) -> str:
    """`project.git` whose head adds 1 MiB of random data; returns the head."""
    await create(repository_stub(channel), "project.git")
    work = make_work_repo(tmp_path / "work", commits=1)
    (work / "noise.bin").write_bytes(os.urandom(BLOB_BYTES))
    git(["add", "."], cwd=work)
    git(["commit", "-q", "-m", "noise"], cwd=work)
    git(["push", "-q", str(tmp_path / "storage" / "project.git"), "main"], cwd=work)
    return head_of(work)


@pytest.mark.usefixtures("long_hold")
async def test_a_v0_fetch_sends_the_pack_in_full_messages_while_the_client_stays(
    channel: aio.Channel, big_repository: str
) -> None:
    finished = asyncio.Event()

    async def requests() -> AsyncIterator[ssh_pb2.SSHUploadPackRequest]:
        yield ssh_pb2.SSHUploadPackRequest(
            repository=repo("project.git"),
            stdin=pktline.encode(f"want {big_repository} side-band-64k ofs-delta no-progress\n")
            + pktline.FLUSH
            + pktline.encode("done\n"),
        )
        # Like git over ssh: the client's side stays open until git exits,
        # so only the side-band framing lets the node batch the pack.
        await finished.wait()

    stub = ssh_pb2_grpc.SSHServiceStub(channel)
    responses = []
    async with asyncio.timeout(CALL_SECONDS):
        async for response in stub.SSHUploadPack(requests(), metadata=node_auth()):
            responses.append(response)
            if response.HasField("exit_status"):
                finished.set()

    assert responses[-1].exit_status.value == 0
    stdout = [r.stdout for r in responses if r.stdout]
    data = b"".join(stdout)
    pack_start = data.index(pktline.encode("NAK\n")) + len(pktline.encode("NAK\n"))
    pack_bytes = len(data) - pack_start
    assert pack_bytes > BLOB_BYTES
    assert max(len(message) for message in stdout) <= MESSAGE_SIZE_LIMIT
    # Messages that carry pack bytes: all full but the last, plus at most
    # one shared with the NAK (16 KiB messages would make 65 of them).
    carrying = messages_from(stdout, pack_start)
    assert len(carrying) <= math.ceil(pack_bytes / MESSAGE_SIZE_LIMIT) + 1, [len(m) for m in carrying]
    assert data.endswith(pktline.FLUSH)


@pytest.mark.usefixtures("long_hold")
async def test_a_v2_fetch_response_ends_without_waiting_for_the_client(
    channel: aio.Channel, big_repository: str
) -> None:
    """In protocol v2 git reads the next command after the pack's flush: the
    client only ends the session once it has that flush, so a held flush
    would stall the call until the hold ran out."""
    response_complete = asyncio.Event()

    async def requests() -> AsyncIterator[ssh_pb2.SSHUploadPackRequest]:
        command = b"".join(
            [
                pktline.encode("command=fetch\n"),
                pktline.encode("object-format=sha1\n"),
                b"0001",
                pktline.encode("no-progress\n"),
                pktline.encode(f"want {big_repository}\n"),
                pktline.encode("done\n"),
                pktline.FLUSH,
            ]
        )
        yield ssh_pb2.SSHUploadPackRequest(repository=repo("project.git"), git_protocol="version=2", stdin=command)
        await response_complete.wait()
        yield ssh_pb2.SSHUploadPackRequest(stdin=pktline.FLUSH)  # end of the session

    stub = ssh_pb2_grpc.SSHServiceStub(channel)
    stdout: list[bytes] = []
    exit_status = None
    try:
        async with asyncio.timeout(CALL_SECONDS):
            async for response in stub.SSHUploadPack(requests(), metadata=node_auth()):
                if response.stdout:
                    stdout.append(response.stdout)
                    if fetch_response_complete(b"".join(stdout)):
                        response_complete.set()
                if response.HasField("exit_status"):
                    exit_status = response.exit_status.value
    except TimeoutError:
        raise AssertionError(
            f"the fetch response did not end within {CALL_SECONDS} s: its last flush was held back "
            f"({sum(map(len, stdout))} bytes received)"
        ) from None

    assert exit_status == 0
    data = b"".join(stdout)
    assert max(len(message) for message in stdout) <= MESSAGE_SIZE_LIMIT
    # The advertisement goes out as git writes it (one message per line);
    # the response, from its section header on, in full messages.
    response_start = data.index(pktline.encode("packfile\n"))
    carrying = messages_from(stdout, response_start)
    assert len(carrying) <= math.ceil((len(data) - response_start) / MESSAGE_SIZE_LIMIT) + 1, [
        len(m) for m in carrying
    ]


def messages_from(messages: list[bytes], offset: int) -> list[bytes]:
    """The messages that carry bytes at or after `offset` of their concatenation."""
    found, end = [], 0
    for message in messages:
        end += len(message)
        if end > offset:
            found.append(message)
    return found


def fetch_response_complete(data: bytes) -> bool:
    """The capability advertisement, then a fetch response up to its flush."""
    try:
        packets = list(pktline.decode(data))
    except pktline.PktLineError:
        return False  # a packet is still incomplete
    return b"packfile\n" in packets and packets[-1] is None
