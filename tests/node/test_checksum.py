"""CalculateChecksum: Gitaly's XOR of SHA-1s over `<oid> <refname>` lines."""

from __future__ import annotations

import hashlib
from pathlib import Path

import grpc
from grpc import aio

from praefect.node.checksum import EMPTY_CHECKSUM, checksum_of_lines
from praefect.protos.gitaly import repository_pb2 as pb
from praefect.protos.gitaly import shared_pb2
from tests.support.gitenv import git, make_work_repo
from tests.support.repository_calls import (
    checksum,
    create,
    expect_error,
    node_auth,
    repo,
    repository_stub,
)


def expected_checksum(path: Path) -> str:
    """The documented algorithm, computed independently of the node's code."""
    lines = git(["for-each-ref", "--format=%(objectname) %(refname)", "refs/"], cwd=path).splitlines()
    head = git(["rev-parse", "--verify", "--quiet", "HEAD"], cwd=path, check=False).strip()
    if head:
        lines.append(f"{head} HEAD")
    result = 0
    for line in lines:
        result ^= int(hashlib.sha1(line.encode()).hexdigest(), 16)
    return f"{result:040x}"


async def populated(channel: aio.Channel, tmp_path: Path, name: str) -> Path:
    await create(repository_stub(channel), name)
    path = tmp_path / "storage" / name
    work = make_work_repo(tmp_path / f"work-{name}", commits=3)
    git(["tag", "v1", "HEAD~1"], cwd=work)
    git(["push", "-q", str(path), "main", "main:refs/heads/other", "v1", "HEAD~2:refs/keep-around/x"], cwd=work)
    return path


def test_fold_is_order_independent_and_empty_is_zero() -> None:
    lines = [b"a" * 40 + b" refs/heads/main", b"b" * 40 + b" refs/tags/v1", b"a" * 40 + b" HEAD"]
    assert checksum_of_lines(lines) == checksum_of_lines(list(reversed(lines)))
    assert checksum_of_lines([]) == EMPTY_CHECKSUM == "0" * 40
    # XOR: a line counted twice cancels out.
    assert checksum_of_lines([lines[0], lines[0]]) == EMPTY_CHECKSUM


async def test_empty_repository_has_the_zero_checksum(channel: aio.Channel) -> None:
    stub = repository_stub(channel)
    await create(stub, "empty.git")
    assert await checksum(stub, repo("empty.git")) == "0" * 40


async def test_checksum_follows_the_documented_algorithm(channel: aio.Channel, tmp_path: Path) -> None:
    path = await populated(channel, tmp_path, "r.git")
    value = await checksum(repository_stub(channel), repo("r.git"))
    assert value == expected_checksum(path)
    assert len(value) == 40 and value != "0" * 40


async def test_checksum_does_not_depend_on_packing(channel: aio.Channel, tmp_path: Path) -> None:
    stub = repository_stub(channel)
    path = await populated(channel, tmp_path, "r.git")
    loose = await checksum(stub, repo("r.git"))
    git(["pack-refs", "--all"], cwd=path)
    git(["gc", "-q", "--prune=now"], cwd=path)
    assert await checksum(stub, repo("r.git")) == loose


async def test_equal_refs_give_equal_checksums_and_a_change_shows(channel: aio.Channel, tmp_path: Path) -> None:
    stub = repository_stub(channel)
    path = await populated(channel, tmp_path, "a.git")
    git(["clone", "-q", "--mirror", str(path), str(tmp_path / "storage" / "b.git")])
    assert await checksum(stub, repo("a.git")) == await checksum(stub, repo("b.git"))

    git(["update-ref", "-d", "refs/heads/other"], cwd=tmp_path / "storage" / "b.git")
    assert await checksum(stub, repo("a.git")) != await checksum(stub, repo("b.git"))


async def test_sha256_repository_checksum(channel: aio.Channel, tmp_path: Path) -> None:
    stub = repository_stub(channel)
    await create(stub, "s.git", object_format=shared_pb2.OBJECT_FORMAT_SHA256)
    path = tmp_path / "storage" / "s.git"
    work = tmp_path / "w"
    git(["init", "-q", "--object-format=sha256", "-b", "main", str(work)])
    (work / "f").write_text("x\n")
    git(["add", "."], cwd=work)
    git(["commit", "-q", "-m", "one"], cwd=work)
    git(["push", "-q", str(path), "main"], cwd=work)
    value = await checksum(stub, repo("s.git"))
    assert value == expected_checksum(path) and len(value) == 40


async def test_checksum_of_a_missing_repository_is_not_found(channel: aio.Channel) -> None:
    error = await expect_error(
        repository_stub(channel).CalculateChecksum(pb.CalculateChecksumRequest(repository=repo("no.git")), metadata=node_auth()),
        grpc.StatusCode.NOT_FOUND,
    )
    assert "no.git" in (error.details() or "")
