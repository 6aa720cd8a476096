"""RepositoryService: WriteRef and FindMergeBase."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from grpc import aio

from praefect.protos.gitaly import repository_pb2 as pb
from praefect.protos.gitaly import repository_pb2_grpc
from tests.support.gitenv import git, make_work_repo
from tests.support.repository_calls import create, expect_error, node_auth, repo, repository_stub

Seeded = tuple[repository_pb2_grpc.RepositoryServiceStub, Path, dict[str, str]]


@pytest.fixture
async def seeded(channel: aio.Channel, tmp_path: Path) -> Seeded:
    """A repository with main (3 commits) and feature (main~1 + 1 commit)."""
    stub = repository_stub(channel)
    await create(stub, "refs.git")
    work = make_work_repo(tmp_path / "work", commits=3)
    git(["checkout", "-q", "-b", "feature", "HEAD~1"], cwd=work)
    (work / "feature.txt").write_text("feature\n")
    git(["add", "."], cwd=work)
    git(["commit", "-q", "-m", "feature"], cwd=work)
    path = tmp_path / "storage" / "refs.git"
    git(["push", "-q", str(path), "main", "feature"], cwd=work)
    oids = {
        name: git(["rev-parse", name], cwd=work).strip()
        for name in ("main", "main~1", "main~2", "feature")
    }
    return stub, path, oids


def ref_of(path: Path, ref: str) -> str:
    return git(["rev-parse", "--verify", "--quiet", ref], cwd=path, check=False).strip()


async def write_ref(stub: repository_pb2_grpc.RepositoryServiceStub, ref: bytes, revision: bytes, old: bytes = b"") -> None:
    await stub.WriteRef(
        pb.WriteRefRequest(repository=repo("refs.git"), ref=ref, revision=revision, old_revision=old), metadata=node_auth()
    )


async def test_write_ref_creates_and_moves_a_branch(seeded: Seeded) -> None:
    stub, path, oids = seeded
    await write_ref(stub, b"refs/heads/new", oids["main~2"].encode())
    assert ref_of(path, "refs/heads/new") == oids["main~2"]

    await write_ref(stub, b"refs/heads/new", b"refs/heads/feature")
    assert ref_of(path, "refs/heads/new") == oids["feature"]


async def test_write_ref_compare_and_swap(seeded: Seeded) -> None:
    stub, path, oids = seeded
    await write_ref(stub, b"refs/heads/main", oids["main~1"].encode(), old=oids["main"].encode())
    assert ref_of(path, "refs/heads/main") == oids["main~1"]

    error = await expect_error(
        write_ref(stub, b"refs/heads/main", oids["feature"].encode(), old=oids["main"].encode()),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert "refs/heads/main" in (error.details() or "")
    assert ref_of(path, "refs/heads/main") == oids["main~1"]


async def test_write_ref_with_zero_old_revision_only_creates(seeded: Seeded) -> None:
    stub, path, oids = seeded
    zero = b"0" * 40
    await write_ref(stub, b"refs/tags/fresh", oids["main"].encode(), old=zero)
    assert ref_of(path, "refs/tags/fresh") == oids["main"]

    await expect_error(write_ref(stub, b"refs/tags/fresh", oids["feature"].encode(), old=zero), grpc.StatusCode.FAILED_PRECONDITION)
    assert ref_of(path, "refs/tags/fresh") == oids["main"]


async def test_write_ref_head_sets_the_symbolic_ref(seeded: Seeded) -> None:
    stub, path, _ = seeded
    await write_ref(stub, b"HEAD", b"refs/heads/feature")
    assert git(["symbolic-ref", "HEAD"], cwd=path).strip() == "refs/heads/feature"


@pytest.mark.parametrize(
    ("ref", "revision", "old", "field"),
    [
        (b"", b"main", b"", "ref"),
        (b"refs/heads/x", b"", b"", "revision"),
        (b"-refs/heads/x", b"main", b"", "ref"),
        (b"refs/heads/x", b"--output=pwned", b"", "revision"),
        (b"refs/heads/x", b"main", b"-f", "old_revision"),
        (b"heads/x", b"main", b"", "refs/"),
        (b"refs/heads/bad..name", b"main", b"", "ref"),
        (b"refs/heads/x", b"no-such-branch", b"", "revision"),
        (b"refs/heads/x", b"1" * 40, b"", "revision"),
        (b"HEAD", b"main", b"", "full reference"),
        (b"HEAD", b"-x", b"", "revision"),
        (b"HEAD", b"refs/heads/main", b"main", "old_revision"),
    ],
)
async def test_write_ref_refuses_bad_names(seeded: Seeded, ref: bytes, revision: bytes, old: bytes, field: str) -> None:
    stub, path, _ = seeded
    error = await expect_error(write_ref(stub, ref, revision, old), grpc.StatusCode.INVALID_ARGUMENT)
    assert field in (error.details() or "")
    assert ref_of(path, "refs/heads/x") == ""
    assert git(["symbolic-ref", "HEAD"], cwd=path).strip() == "refs/heads/main"


async def test_find_merge_base(seeded: Seeded) -> None:
    stub, _, oids = seeded
    response = await stub.FindMergeBase(
        pb.FindMergeBaseRequest(repository=repo("refs.git"), revisions=[b"main", b"feature"]), metadata=node_auth()
    )
    assert response.base == oids["main~1"]


async def test_find_merge_base_without_common_ancestor_is_empty(seeded: Seeded, tmp_path: Path) -> None:
    stub, path, _ = seeded
    orphan = make_work_repo(tmp_path / "orphan", commits=0, branch="orphan")
    (orphan / "unrelated.txt").write_text("unrelated history\n")
    git(["add", "."], cwd=orphan)
    git(["commit", "-q", "-m", "unrelated root"], cwd=orphan)
    git(["push", "-q", str(path), "orphan"], cwd=orphan)
    response = await stub.FindMergeBase(
        pb.FindMergeBaseRequest(repository=repo("refs.git"), revisions=[b"main", b"orphan"]), metadata=node_auth()
    )
    unknown = await stub.FindMergeBase(
        pb.FindMergeBaseRequest(repository=repo("refs.git"), revisions=[b"main", b"nope"]), metadata=node_auth()
    )
    assert response.base == ""
    assert unknown.base == ""


@pytest.mark.parametrize(("revisions", "text"), [([b"main"], "at least 2"), ([b"main", b"--all"], "'-'")])
async def test_find_merge_base_refuses_bad_revisions(seeded: Seeded, revisions: list[bytes], text: str) -> None:
    stub, _, _ = seeded
    error = await expect_error(
        stub.FindMergeBase(pb.FindMergeBaseRequest(repository=repo("refs.git"), revisions=revisions), metadata=node_auth()),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert text in (error.details() or "")
