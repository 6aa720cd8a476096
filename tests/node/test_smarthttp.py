"""SmartHTTPService: the wire format of each RPC, clone/fetch/push with the
real git client through tests.support.http_bridge, bad input, and git being
killed when a call is cancelled or runs out of time."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio

from praefect.node import pktline
from praefect.node.git import MESSAGE_SIZE_LIMIT
from praefect.node.server import NodeServer
from praefect.protos.gitaly import shared_pb2, smarthttp_pb2, smarthttp_pb2_grpc
from tests.node.conftest import NODE_TOKEN, STORAGE
from tests.support.gitenv import git, make_work_repo
from tests.support.grpc_client import auth
from tests.support.http_bridge import GitHttpBridge
from tests.support.smarthttp_client import (
    bare_copy,
    git_client,
    head_of,
    process_group,
    process_state,
    refs_of,
    upload_pack_v0_request,
    wait_for_processes,
    wait_until_reaped,
)

REPO = "group/project.git"


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    return tmp_path / "storage"


@pytest.fixture
def work(tmp_path: Path) -> Path:
    return make_work_repo(tmp_path / "work", commits=3)


@pytest.fixture
def bare(work: Path, storage: Path) -> Path:
    """The repository REPO in the node's storage, with `work`'s history."""
    return bare_copy(work, storage / REPO)


@pytest.fixture
def stub(channel: aio.Channel) -> smarthttp_pb2_grpc.SmartHTTPServiceStub:
    return smarthttp_pb2_grpc.SmartHTTPServiceStub(channel)


@pytest.fixture
def bridge(node: NodeServer) -> Iterator[GitHttpBridge]:
    assert node.bound_addr
    with GitHttpBridge(node.bound_addr, NODE_TOKEN) as running:
        yield running


def repository(relative_path: str = REPO, storage_name: str = STORAGE) -> shared_pb2.Repository:
    return shared_pb2.Repository(storage_name=storage_name, relative_path=relative_path)


async def info_refs(
    stub: smarthttp_pb2_grpc.SmartHTTPServiceStub, service: str, **fields: Any
) -> list[bytes]:
    call = stub.InfoRefsUploadPack if service == "upload-pack" else stub.InfoRefsReceivePack
    request = smarthttp_pb2.InfoRefsRequest(repository=repository(), **fields)
    return [response.data async for response in call(request, metadata=auth(NODE_TOKEN), timeout=10)]


# -- wire format -------------------------------------------------------------


async def test_upload_pack_advertisement_v0_starts_with_the_service_announcement(
    stub: smarthttp_pb2_grpc.SmartHTTPServiceStub, bare: Path
) -> None:
    packets = list(pktline.decode(b"".join(await info_refs(stub, "upload-pack"))))

    assert packets[:2] == [b"# service=git-upload-pack\n", None]
    head = head_of(bare)
    assert packets[2] is not None and packets[2].startswith(f"{head} HEAD\0".encode())
    assert f"{head} refs/heads/main\n".encode() in packets
    assert packets[-1] is None


async def test_upload_pack_advertisement_v2_has_no_announcement_as_git_http_backend(
    stub: smarthttp_pb2_grpc.SmartHTTPServiceStub, bare: Path
) -> None:
    packets = list(pktline.decode(b"".join(await info_refs(stub, "upload-pack", git_protocol="version=2"))))

    assert packets[0] == b"version 2\n"
    assert any(packet and packet.startswith(b"ls-refs") for packet in packets)


async def test_receive_pack_advertisement_keeps_the_announcement_even_when_v2_is_asked(
    stub: smarthttp_pb2_grpc.SmartHTTPServiceStub, bare: Path
) -> None:
    # receive-pack speaks v0 whatever the client asks, so the prefix stays.
    for protocol in ("", "version=2"):
        packets = list(pktline.decode(b"".join(await info_refs(stub, "receive-pack", git_protocol=protocol))))
        assert packets[:2] == [b"# service=git-receive-pack\n", None]
        assert packets[2] is not None and b"report-status" in packets[2]


async def test_advertisement_streams_in_messages_of_at_most_128_kib(
    stub: smarthttp_pb2_grpc.SmartHTTPServiceStub, bare: Path
) -> None:
    # Written as a packed-refs file: thousands of loose ref files are slow to create.
    head = head_of(bare)
    git(["pack-refs", "--all"], cwd=bare)
    packed = bare / "packed-refs"
    lines = packed.read_text().splitlines()
    lines += [f"{head} refs/heads/branch-{i:05d}" for i in range(3000)]
    packed.write_text("\n".join([lines[0], *sorted(lines[1:], key=lambda line: line.split(" ")[1])]) + "\n")

    chunks = await info_refs(stub, "upload-pack")

    # the announcement, then ~190 KiB of advertisement in two messages
    assert len(chunks) > 2
    assert max(len(chunk) for chunk in chunks) <= MESSAGE_SIZE_LIMIT
    advertised = [p for p in pktline.decode(b"".join(chunks)) if p and b"refs/heads/branch-" in p]
    assert len(advertised) == 3000


async def test_git_config_options_reach_git(
    stub: smarthttp_pb2_grpc.SmartHTTPServiceStub, bare: Path
) -> None:
    git(["branch", "secret", "main"], cwd=bare)

    plain = b"".join(await info_refs(stub, "upload-pack"))
    hidden = b"".join(
        await info_refs(stub, "upload-pack", git_config_options=["uploadpack.hideRefs=refs/heads/secret"])
    )

    assert b"refs/heads/secret" in plain
    assert b"refs/heads/secret" not in hidden


async def test_post_upload_pack_streams_the_pack_in_messages_of_at_most_128_kib(
    stub: smarthttp_pb2_grpc.SmartHTTPServiceStub, work: Path, storage: Path
) -> None:
    (work / "blob.bin").write_bytes(os.urandom(1024 * 1024))
    git(["add", "blob.bin"], cwd=work)
    git(["commit", "-q", "-m", "one mebibyte"], cwd=work)
    bare = bare_copy(work, storage / REPO)

    async def requests() -> AsyncIterator[smarthttp_pb2.PostUploadPackRequest]:
        yield smarthttp_pb2.PostUploadPackRequest(repository=repository())
        yield smarthttp_pb2.PostUploadPackRequest(data=upload_pack_v0_request(head_of(bare)))

    chunks = [r.data async for r in stub.PostUploadPack(requests(), metadata=auth(NODE_TOKEN), timeout=30)]

    assert max(len(chunk) for chunk in chunks) <= MESSAGE_SIZE_LIMIT
    body = b"".join(chunks)
    assert body.startswith(pktline.encode("NAK\n"))
    assert sum(len(chunk) for chunk in chunks) > 1024 * 1024  # the whole pack came


# -- the real git client through the HTTP bridge -----------------------------


@pytest.mark.parametrize("version", [0, 2])
async def test_clone_through_the_node(
    bridge: GitHttpBridge, bare: Path, tmp_path: Path, version: int
) -> None:
    clone = tmp_path / "clone"

    (await git_client(["-c", f"protocol.version={version}", "clone", bridge.url(REPO), str(clone)])).check()

    assert not bridge.errors
    assert head_of(clone) == head_of(bare)
    assert (clone / "file2.txt").read_text() == "content 2\n"
    (await git_client(["fsck", "--strict"], cwd=clone)).check()
    protocols = {seen.git_protocol for seen in bridge.requests}
    assert protocols == ({"version=2"} if version == 2 else {""})


@pytest.mark.parametrize("version", [0, 2])
async def test_fetch_after_new_commits(
    bridge: GitHttpBridge, bare: Path, work: Path, tmp_path: Path, version: int
) -> None:
    clone = tmp_path / "clone"
    (await git_client(["clone", bridge.url(REPO), str(clone)])).check()
    (work / "later.txt").write_text("later\n")
    git(["add", "later.txt"], cwd=work)
    git(["commit", "-q", "-m", "later"], cwd=work)
    git(["push", "-q", str(bare), "main"], cwd=work)

    (await git_client(["-c", f"protocol.version={version}", "fetch", "origin"], cwd=clone)).check()

    assert head_of(clone, "origin/main") == head_of(work)
    (await git_client(["fsck"], cwd=clone)).check()


async def test_partial_clone_is_served_as_gitaly_allows_filters(
    bridge: GitHttpBridge, bare: Path, tmp_path: Path
) -> None:
    clone = tmp_path / "clone"

    run = await git_client(["clone", "--no-checkout", "--filter=blob:none", bridge.url(REPO), str(clone)])

    run.check()
    assert "filtering not recognized by server" not in run.stderr
    missing = git(["rev-list", "--objects", "--all", "--missing=print"], cwd=clone)
    assert any(line.startswith("?") for line in missing.splitlines()), "blobs should be left out"
    assert head_of(clone) == head_of(bare)


async def test_clone_of_many_refs_sends_a_gzip_body(
    bridge: GitHttpBridge, bare: Path, tmp_path: Path
) -> None:
    # git gzips a request body over 1 KiB: 40 `want` lines are more.
    for i in range(40):
        oid = git(["commit-tree", "-m", f"root {i}", "HEAD^{tree}"], cwd=bare).strip()
        git(["update-ref", f"refs/heads/b{i:02d}", oid], cwd=bare)
    clone = tmp_path / "clone"

    (await git_client(["-c", "protocol.version=0", "clone", "--mirror", bridge.url(REPO), str(clone)])).check()

    assert any(seen.method == "POST" and seen.content_encoding == "gzip" for seen in bridge.requests)
    assert refs_of(clone) == refs_of(bare)


@pytest.mark.parametrize("version", [0, 2])
async def test_push_a_new_branch_and_a_tag(
    bridge: GitHttpBridge, bare: Path, work: Path, version: int
) -> None:
    git(["checkout", "-q", "-b", "feature"], cwd=work)
    (work / "feature.txt").write_text("feature\n")
    git(["add", "feature.txt"], cwd=work)
    git(["commit", "-q", "-m", "feature"], cwd=work)
    git(["tag", "-a", "-m", "release one", "v1.0"], cwd=work)

    run = await git_client(
        ["-c", f"protocol.version={version}", "push", bridge.url(REPO), "feature", "v1.0"], cwd=work
    )

    run.check()
    assert "* [new branch]      feature -> feature" in run.stderr
    assert "* [new tag]         v1.0 -> v1.0" in run.stderr
    assert head_of(bare, "refs/heads/feature") == head_of(work, "feature")
    assert head_of(bare, "refs/tags/v1.0") == head_of(work, "refs/tags/v1.0")
    (await git_client(["fsck", "--strict"], cwd=bare)).check()


async def test_push_a_large_file_streams_a_chunked_body(
    bridge: GitHttpBridge, bare: Path, work: Path
) -> None:
    # Over http.postBuffer (1 MiB) git sends the pack with chunked encoding.
    (work / "large.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    git(["add", "large.bin"], cwd=work)
    git(["commit", "-q", "-m", "large"], cwd=work)

    (await git_client(["push", bridge.url(REPO), "main"], cwd=work)).check()

    assert any(seen.method == "POST" and seen.chunked for seen in bridge.requests)
    assert head_of(bare, "main") == head_of(work)
    blob = git(["rev-parse", "main:large.bin"], cwd=bare).strip()
    assert git(["cat-file", "-s", blob], cwd=bare).strip() == str(3 * 1024 * 1024)


async def test_push_deleting_a_branch(bridge: GitHttpBridge, bare: Path, work: Path) -> None:
    git(["branch", "doomed", "main"], cwd=bare)

    run = await git_client(["push", bridge.url(REPO), ":doomed"], cwd=work)

    run.check()
    assert "[deleted]" in run.stderr
    assert "refs/heads/doomed" not in refs_of(bare)
    assert "refs/heads/main" in refs_of(bare)


def diverge(work: Path, bare: Path) -> str:
    """Give `bare` a commit that `work` lacks and `work` one that `bare`
    lacks; return `bare`'s main before any push."""
    other = work.parent / "other"
    git(["clone", "-q", str(bare), str(other)])
    (other / "theirs.txt").write_text("theirs\n")
    git(["add", "theirs.txt"], cwd=other)
    git(["commit", "-q", "-m", "theirs"], cwd=other)
    git(["push", "-q", "origin", "main"], cwd=other)
    (work / "ours.txt").write_text("ours\n")
    git(["add", "ours.txt"], cwd=work)
    git(["commit", "-q", "-m", "ours"], cwd=work)
    return head_of(bare, "main")


async def test_non_fast_forward_push_is_rejected_and_git_says_so(
    bridge: GitHttpBridge, bare: Path, work: Path
) -> None:
    before = diverge(work, bare)

    run = await git_client(["push", bridge.url(REPO), "main"], cwd=work)

    assert run.returncode == 1
    assert "! [rejected]        main -> main (fetch first)" in run.stderr
    assert head_of(bare, "main") == before


async def test_node_side_rejection_is_reported_to_git(
    node: NodeServer, bare: Path, work: Path
) -> None:
    # A forced push passes the client's check; receive-pack itself refuses
    # it, configured through git_config_options, and git shows its verdict.
    assert node.bound_addr
    before = diverge(work, bare)
    with GitHttpBridge(
        node.bound_addr, NODE_TOKEN, receive_pack_config=["receive.denyNonFastForwards=true"]
    ) as bridge:
        run = await git_client(["push", "--force", bridge.url(REPO), "main"], cwd=work)

    assert run.returncode == 1
    assert "! [remote rejected] main -> main (non-fast-forward)" in run.stderr
    assert head_of(bare, "main") == before


async def test_clone_of_an_empty_repository(
    bridge: GitHttpBridge, storage: Path, tmp_path: Path
) -> None:
    git(["init", "-q", "--bare", str(storage / "empty.git")])

    run = await git_client(["clone", bridge.url("empty.git"), str(tmp_path / "clone")])

    run.check()
    assert "You appear to have cloned an empty repository." in run.stderr


async def test_clone_of_a_missing_repository_fails_with_not_found(
    bridge: GitHttpBridge, storage: Path, tmp_path: Path
) -> None:
    run = await git_client(["clone", bridge.url("nope/missing.git"), str(tmp_path / "clone")])

    assert run.returncode == 128
    assert "not found" in run.stderr
    assert bridge.errors and bridge.errors[0].startswith("NOT_FOUND")
    assert "nope/missing.git" in bridge.errors[0]
    assert str(storage) not in bridge.errors[0]


# -- bad input and authentication, for each RPC ------------------------------

RPCS = ["InfoRefsUploadPack", "InfoRefsReceivePack", "PostUploadPack", "PostReceivePack"]


async def call_rpc(
    channel: aio.Channel,
    method: str,
    repo: shared_pb2.Repository | None,
    metadata: Sequence[tuple[str, str]] = (),
    **fields: Any,
) -> list[bytes]:
    stub = smarthttp_pb2_grpc.SmartHTTPServiceStub(channel)
    message = smarthttp_pb2.InfoRefsRequest if method.startswith("InfoRefs") else getattr(smarthttp_pb2, f"{method}Request")
    request = message(**fields)
    if repo is not None:
        request.repository.CopyFrom(repo)
    if method.startswith("InfoRefs"):
        responses = getattr(stub, method)(request, metadata=metadata, timeout=10)
    else:

        async def requests() -> AsyncIterator[Any]:
            yield request

        responses = getattr(stub, method)(requests(), metadata=metadata, timeout=10)
    return [response.data async for response in responses]


async def expect_error(coroutine: Any, code: grpc.StatusCode) -> str:
    with pytest.raises(aio.AioRpcError) as caught:
        await coroutine
    assert caught.value.code() == code, caught.value.details()
    return caught.value.details() or ""


@pytest.mark.parametrize("method", RPCS)
async def test_missing_repository_is_not_found_naming_the_path(
    channel: aio.Channel, storage: Path, method: str
) -> None:
    details = await expect_error(
        call_rpc(channel, method, repository("nope/missing.git"), auth(NODE_TOKEN)),
        grpc.StatusCode.NOT_FOUND,
    )
    assert "nope/missing.git" in details
    assert str(storage) not in details


@pytest.mark.parametrize("method", RPCS)
@pytest.mark.parametrize("path", ["../escape.git", "/etc", "", "+praefect/tmp/x.git"])
async def test_bad_relative_path_is_invalid_argument(
    channel: aio.Channel, storage: Path, method: str, path: str
) -> None:
    details = await expect_error(
        call_rpc(channel, method, repository(path), auth(NODE_TOKEN)), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert str(storage) not in details


@pytest.mark.parametrize("method", RPCS)
async def test_unknown_storage_is_invalid_argument(channel: aio.Channel, bare: Path, method: str) -> None:
    details = await expect_error(
        call_rpc(channel, method, repository(storage_name="elsewhere"), auth(NODE_TOKEN)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "elsewhere" in details


@pytest.mark.parametrize("method", RPCS)
async def test_request_without_repository_is_invalid_argument(channel: aio.Channel, method: str) -> None:
    details = await expect_error(
        call_rpc(channel, method, None, auth(NODE_TOKEN)), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "repository" in details


@pytest.mark.parametrize("method", ["PostUploadPack", "PostReceivePack"])
async def test_empty_request_stream_is_invalid_argument(channel: aio.Channel, method: str) -> None:
    async def nothing() -> AsyncIterator[Any]:
        return
        yield

    responses = getattr(smarthttp_pb2_grpc.SmartHTTPServiceStub(channel), method)(
        nothing(), metadata=auth(NODE_TOKEN), timeout=10
    )
    details = await expect_error(_drain(responses), grpc.StatusCode.INVALID_ARGUMENT)
    assert "first message" in details


async def _drain(responses: Any) -> None:
    async for _ in responses:
        pass


@pytest.mark.parametrize("method", RPCS)
async def test_missing_token_is_unauthenticated(channel: aio.Channel, bare: Path, method: str) -> None:
    await expect_error(call_rpc(channel, method, repository()), grpc.StatusCode.UNAUTHENTICATED)


@pytest.mark.parametrize("method", RPCS)
async def test_wrong_token_is_permission_denied(channel: aio.Channel, bare: Path, method: str) -> None:
    await expect_error(
        call_rpc(channel, method, repository(), auth("not-the-token")), grpc.StatusCode.PERMISSION_DENIED
    )


@pytest.mark.parametrize("method", RPCS)
@pytest.mark.parametrize(
    "option",
    [
        "--upload-pack=touch /tmp/pwned",
        "-c",
        "uploadpack.allowFilter",
        "=true",
        "core.sshCommand=touch /tmp/pwned",
        "uploadpack.packObjectsHook=touch /tmp/pwned",
        "transfer.hideRefs=refs/a\nrefs/b",
        "not a key=1",
    ],
)
async def test_unsafe_git_config_options_are_invalid_argument(
    channel: aio.Channel, bare: Path, method: str, option: str
) -> None:
    details = await expect_error(
        call_rpc(channel, method, repository(), auth(NODE_TOKEN), git_config_options=[option]),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "git_config_options entry" in details


@pytest.mark.parametrize("method", RPCS)
async def test_malformed_git_protocol_is_invalid_argument(channel: aio.Channel, bare: Path, method: str) -> None:
    details = await expect_error(
        call_rpc(channel, method, repository(), auth(NODE_TOKEN), git_protocol="version=2 ;rm -rf"),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "git_protocol" in details


async def test_push_to_a_missing_repository_is_not_found_and_creates_nothing(
    bridge: GitHttpBridge, storage: Path, work: Path
) -> None:
    run = await git_client(["push", bridge.url("new/project.git"), "main"], cwd=work)

    assert run.returncode == 128
    assert "not found" in run.stderr
    assert not (storage / "new").exists()


# -- cancellation and deadlines kill git -------------------------------------


@pytest.fixture
def big_bare(work: Path, storage: Path) -> Path:
    """A repository whose pack (32 MiB of random data) cannot fit in the
    pipes and HTTP/2 windows, so upload-pack blocks until the client reads.
    Its objects are loose, so git deflates while it sends: slower still."""
    (work / "random.bin").write_bytes(os.urandom(32 * 1024 * 1024))
    git(["-c", "core.compression=0", "add", "random.bin"], cwd=work)
    git(["commit", "-q", "-m", "random"], cwd=work)
    return bare_copy(work, storage / REPO, linked=True)


def fetch_everything(bare: Path) -> AsyncIterator[smarthttp_pb2.PostUploadPackRequest]:
    async def requests() -> AsyncIterator[smarthttp_pb2.PostUploadPackRequest]:
        yield smarthttp_pb2.PostUploadPackRequest(
            repository=repository(), data=upload_pack_v0_request(head_of(bare))
        )

    return requests()


async def test_cancelling_post_upload_pack_kills_git(
    stub: smarthttp_pb2_grpc.SmartHTTPServiceStub, big_bare: Path
) -> None:
    call = stub.PostUploadPack(fetch_everything(big_bare), metadata=auth(NODE_TOKEN), timeout=60)
    first = await call.read()
    assert first is not aio.EOF and first.data
    pids = await wait_for_processes(str(big_bare))
    assert all(process_state(pid) not in (None, "Z") for pid in pids)
    family = {member for pid in pids for member in process_group(pid)} | set(pids)

    call.cancel()

    await wait_until_reaped(sorted(family))
    assert call.cancelled()


async def test_deadline_of_post_upload_pack_kills_git(
    stub: smarthttp_pb2_grpc.SmartHTTPServiceStub, big_bare: Path
) -> None:
    call = stub.PostUploadPack(fetch_everything(big_bare), metadata=auth(NODE_TOKEN), timeout=1)
    first = await call.read()
    assert first is not aio.EOF and first.data
    pids = await wait_for_processes(str(big_bare))
    family = {member for pid in pids for member in process_group(pid)} | set(pids)

    # Stop reading: git blocks on the full pipe until the deadline passes.
    assert await call.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    await wait_until_reaped(sorted(family))
