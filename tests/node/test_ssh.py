"""SSHService: upload-pack / receive-pack streams, validation, concurrency, cancellation."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc import aio

from praefect.node.git import MESSAGE_SIZE_LIMIT
from praefect.node.server import NodeServer
from praefect.protos.gitaly import ssh_pb2, ssh_pb2_grpc
from tests.node.conftest import NODE_TOKEN
from tests.support.bridge import NodeRemote, clone, push
from tests.support.gitenv import git, make_work_repo
from tests.support.repository_calls import create, expect_error, node_auth, repo, repository_stub

FLUSH = b"0000"


def pkt(text: str) -> bytes:
    return f"{len(text) + 4:04x}".encode() + text.encode()


@pytest.fixture
async def seeded(channel: aio.Channel, tmp_path: Path) -> Path:
    """`project.git` with main (3 commits)."""
    await create(repository_stub(channel), "project.git")
    path = tmp_path / "storage" / "project.git"
    git(["push", "-q", str(path), "main"], cwd=make_work_repo(tmp_path / "seed", commits=3))
    return path


async def upload_pack(
    channel: aio.Channel,
    stdin: list[bytes],
    *,
    relative_path: str = "project.git",
    git_protocol: str = "",
    git_config_options: tuple[str, ...] = (),
) -> list[ssh_pb2.SSHUploadPackResponse]:
    async def requests() -> AsyncIterator[ssh_pb2.SSHUploadPackRequest]:
        yield ssh_pb2.SSHUploadPackRequest(
            repository=repo(relative_path), git_protocol=git_protocol, git_config_options=git_config_options
        )
        for chunk in stdin:
            yield ssh_pb2.SSHUploadPackRequest(stdin=chunk)

    stub = ssh_pb2_grpc.SSHServiceStub(channel)
    return [r async for r in stub.SSHUploadPack(requests(), metadata=node_auth(), timeout=30)]


def stdout_of(responses: list[ssh_pb2.SSHUploadPackResponse]) -> bytes:
    return b"".join(r.stdout for r in responses)


async def test_upload_pack_advertises_refs_and_ends_with_the_exit_status(channel: aio.Channel, seeded: Path) -> None:
    responses = await upload_pack(channel, [FLUSH])

    head = git(["rev-parse", "main"], cwd=seeded).strip()
    assert f"{head} refs/heads/main".encode() in stdout_of(responses)
    assert responses[-1].HasField("exit_status") and responses[-1].exit_status.value == 0
    assert not any(r.HasField("exit_status") for r in responses[:-1])


async def test_git_protocol_v2_is_passed_to_git(channel: aio.Channel, seeded: Path) -> None:
    ls_refs = pkt("command=ls-refs\n") + b"0001" + pkt("symrefs\n") + pkt("ref-prefix HEAD\n") + FLUSH
    responses = await upload_pack(channel, [ls_refs], git_protocol="version=2")

    out = stdout_of(responses)
    assert out.startswith(pkt("version 2\n"))
    assert b"HEAD symref-target:refs/heads/main" in out
    assert responses[-1].exit_status.value == 0


async def test_a_fetch_streams_the_pack_in_bounded_chunks(channel: aio.Channel, tmp_path: Path) -> None:
    await create(repository_stub(channel), "project.git")
    work = make_work_repo(tmp_path / "work", commits=1)
    (work / "noise.bin").write_bytes(os.urandom(2 * 1024 * 1024))
    git(["add", "."], cwd=work)
    git(["commit", "-q", "-m", "noise"], cwd=work)
    git(["push", "-q", str(tmp_path / "storage" / "project.git"), "main"], cwd=work)
    want = git(["rev-parse", "HEAD"], cwd=work).strip()

    responses = await upload_pack(channel, [pkt(f"want {want}\n") + FLUSH + pkt("done\n")])

    chunks = [r.stdout for r in responses if r.stdout]
    assert max(len(c) for c in chunks) <= MESSAGE_SIZE_LIMIT
    assert len(chunks) >= 2 * 1024 * 1024 // MESSAGE_SIZE_LIMIT
    assert responses[-1].exit_status.value == 0
    # After the advertisement and NAK comes the whole pack: git can index it.
    pack = stdout_of(responses).split(b"0008NAK\n", 1)[1]
    assert pack.startswith(b"PACK")
    check = tmp_path / "check.git"
    git(["init", "-q", "--bare", str(check)])
    git(["index-pack", "--stdin", "--fix-thin"], cwd=check, input=pack)
    git(["cat-file", "-e", f"{want}^{{tree}}:noise.bin"], cwd=check)


async def test_valid_config_options_are_accepted(channel: aio.Channel, seeded: Path) -> None:
    responses = await upload_pack(
        channel, [FLUSH], git_config_options=("uploadpack.allowFilter=true", "uploadpack.allowAnySHA1InWant=true")
    )
    assert b"filter" in stdout_of(responses)
    assert b"allow-reachable-sha1-in-want" in stdout_of(responses) or b"allow-tip-sha1-in-want" in stdout_of(responses)


@pytest.mark.parametrize(
    "option",
    [
        "-c",
        "--upload-pack=evil",
        "noequals",
        "=value",
        "core.sshCommand=touch /tmp/x",
        "uploadpack.packObjectsHook=touch /tmp/x",
        "alias.x=!touch /tmp/x",
        "include.path=/etc/passwd",
        "uploadpack.allowFilter=true\nalias.x=y",
    ],
)
async def test_unsafe_config_options_are_refused(channel: aio.Channel, seeded: Path, option: str) -> None:
    # Only the first request: the node refuses it before reading more.
    error = await expect_error(upload_pack(channel, [], git_config_options=(option,)), grpc.StatusCode.INVALID_ARGUMENT)
    assert "git_config_options" in (error.details() or "")


@pytest.mark.parametrize("protocol", ["-v", "version=2 --x", "version=2\nx"])
async def test_malformed_git_protocol_is_refused(channel: aio.Channel, seeded: Path, protocol: str) -> None:
    error = await expect_error(upload_pack(channel, [], git_protocol=protocol), grpc.StatusCode.INVALID_ARGUMENT)
    assert "git_protocol" in (error.details() or "")


async def test_empty_stream_and_missing_repository(channel: aio.Channel) -> None:
    stub = ssh_pb2_grpc.SSHServiceStub(channel)

    async def nothing() -> AsyncIterator[ssh_pb2.SSHReceivePackRequest]:
        return
        yield  # pragma: no cover

    empty = await expect_error(_drain(stub.SSHReceivePack(nothing(), metadata=node_auth())), grpc.StatusCode.INVALID_ARGUMENT)
    assert "first request" in (empty.details() or "")
    missing = await expect_error(upload_pack(channel, [], relative_path="ghost.git"), grpc.StatusCode.NOT_FOUND)
    assert "ghost.git" in (missing.details() or "")


async def _drain(call: aio.StreamStreamCall) -> None:
    async for _ in call:
        pass


async def test_concurrent_pushes_to_one_branch_apply_or_fail_cleanly(node: NodeServer, seeded: Path, tmp_path: Path) -> None:
    assert node.bound_addr
    remote = NodeRemote(node.bound_addr, "default", "project.git", NODE_TOKEN)
    works = []
    for i in range(4):
        work = tmp_path / f"clone{i}"
        await clone(remote, work)
        (work / f"change{i}.txt").write_text(f"{i}\n")
        git(["add", "."], cwd=work)
        git(["commit", "-q", "-m", f"change {i}"], cwd=work)
        works.append(work)

    results = await asyncio.gather(*(push(remote, w, "main", check=False) for w in works))

    winners = [w for w, r in zip(works, results, strict=True) if r.returncode == 0]
    assert len(winners) >= 1
    for result in results:
        if result.returncode != 0:
            assert "rejected" in result.stderr or "lock" in result.stderr or "failed" in result.stderr, result.stderr
    tip = git(["rev-parse", "refs/heads/main"], cwd=seeded)
    assert tip in {git(["rev-parse", "HEAD"], cwd=w) for w in winners}
    git(["fsck", "--no-progress"], cwd=seeded)


async def test_concurrent_pushes_to_different_branches_all_apply(node: NodeServer, seeded: Path, tmp_path: Path) -> None:
    assert node.bound_addr
    remote = NodeRemote(node.bound_addr, "default", "project.git", NODE_TOKEN)
    work = tmp_path / "clone"
    await clone(remote, work)

    await asyncio.gather(*(push(remote, work, f"main:refs/heads/branch{i}") for i in range(5)))

    refs = git(["for-each-ref", "--format=%(refname)", "refs/heads/"], cwd=seeded).split()
    assert {f"refs/heads/branch{i}" for i in range(5)} <= set(refs)


def _upload_pack_pids(path: Path) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path("/proc", entry, "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"upload-pack" in argv and str(path).encode() in argv:
            pids.append(int(entry))
    return pids


def _state(pid: int) -> str | None:
    try:
        return Path("/proc", str(pid), "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


async def _wait_until_gone(pid: int, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while (state := _state(pid)) is not None:
        if time.monotonic() > deadline:
            raise AssertionError(f"git upload-pack (pid {pid}) still exists in state {state!r} after {within} s")
        await asyncio.sleep(0.05)


async def _start_idle_upload_pack(channel: aio.Channel, deadline: float | None = None) -> aio.StreamStreamCall:
    """An upload-pack that advertised its refs and now waits for the client."""
    stub = ssh_pb2_grpc.SSHServiceStub(channel)
    call = stub.SSHUploadPack(metadata=node_auth(), timeout=deadline)
    await call.write(ssh_pb2.SSHUploadPackRequest(repository=repo("project.git")))
    first = await call.read()
    assert first is not aio.EOF and first.stdout
    return call


async def _find_upload_pack(path: Path, within: float = 10.0) -> int:
    deadline = time.monotonic() + within
    while not (pids := _upload_pack_pids(path)):
        if time.monotonic() > deadline:
            raise AssertionError("no git upload-pack process found for the repository")
        await asyncio.sleep(0.05)
    assert len(pids) == 1, pids
    return pids[0]


async def test_cancelling_the_call_kills_git(channel: aio.Channel, seeded: Path) -> None:
    call = await _start_idle_upload_pack(channel)
    pid = await _find_upload_pack(seeded)
    assert _state(pid) not in (None, "Z")

    call.cancel()

    await _wait_until_gone(pid)
    assert _upload_pack_pids(seeded) == []


async def test_cancelling_mid_pack_kills_git(channel: aio.Channel, tmp_path: Path) -> None:
    """Cancel while git is blocked writing a pack the client does not read."""
    await create(repository_stub(channel), "project.git")
    path = tmp_path / "storage" / "project.git"
    work = make_work_repo(tmp_path / "work", commits=1)
    (work / "noise.bin").write_bytes(os.urandom(8 * 1024 * 1024))
    git(["add", "."], cwd=work)
    git(["commit", "-q", "-m", "noise"], cwd=work)
    git(["push", "-q", str(path), "main"], cwd=work)
    want = git(["rev-parse", "HEAD"], cwd=work).strip()
    call = await _start_idle_upload_pack(channel)
    pid = await _find_upload_pack(path)

    await call.write(ssh_pb2.SSHUploadPackRequest(stdin=pkt(f"want {want}\n") + FLUSH + pkt("done\n")))
    received = 0
    while received < 256 * 1024:  # the pack is flowing, far from complete
        response = await call.read()
        assert response is not aio.EOF and not response.HasField("exit_status")
        received += len(response.stdout)
    assert _state(pid) not in (None, "Z"), "git finished before the cancel: the test proves nothing"
    call.cancel()

    await _wait_until_gone(pid)
    assert _upload_pack_pids(path) == []


async def test_a_passed_deadline_kills_git(channel: aio.Channel, seeded: Path) -> None:
    call = await _start_idle_upload_pack(channel, deadline=1.0)
    pid = await _find_upload_pack(seeded)

    with pytest.raises(aio.AioRpcError) as raised:
        while await call.read() is not aio.EOF:  # the rest of the advertisement, if any
            pass
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    await _wait_until_gone(pid)
