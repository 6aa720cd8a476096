"""UserMergeBranch: compute, then apply on request, with compare-and-swap."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio

from praefect.protos.gitaly import operations_pb2
from tests.support.ops import (
    FIXED_TIME,
    METADATA,
    USER,
    cat,
    clone_bare,
    commit_files,
    create,
    header,
    parents,
    repository,
    rev_parse,
    stream,
    stub,
    tree_files,
    update,
)


async def diverged(
    tmp_path: Path, channel: aio.Channel, *, conflicting: bool = False
) -> tuple[Path, str, str]:
    """main and feature each gain a commit after the common base; returns
    (repository, main's tip, feature's tip)."""
    repo = clone_bare(tmp_path, "r.git", commits=2)
    feature = await commit_files(
        channel,
        stream(
            header("r.git", "feature", start_branch_name=b"main"),
            update("file0.txt", b"feature\n") if conflicting else create("feature.txt", b"f\n"),
        ),
    )
    main = await commit_files(
        channel, stream(header("r.git", "main"), update("file0.txt", b"main\n"))
    )
    return repo, main.branch_update.commit_id, feature.branch_update.commit_id


def first_request(commit_id: str, **fields: Any) -> operations_pb2.UserMergeBranchRequest:
    values: dict[str, Any] = {
        "repository": repository("r.git"),
        "user": USER,
        "commit_id": commit_id,
        "branch": b"main",
        "message": b"Merge branch 'feature'",
        **fields,
    }
    return operations_pb2.UserMergeBranchRequest(**values)


async def test_merge_is_computed_first_and_applied_on_request(
    tmp_path: Path, channel: aio.Channel
) -> None:
    repo, main, feature = await diverged(tmp_path, channel)
    call = stub(channel).UserMergeBranch(metadata=METADATA)
    await call.write(first_request(feature, timestamp=FIXED_TIME))
    computed = await call.read()
    merge = computed.commit_id
    assert parents(repo, merge) == [main, feature]
    assert rev_parse(repo, "main") == main, "the branch must not move before apply"
    assert set(tree_files(repo, merge)) == {"file0.txt", "file1.txt", "feature.txt"}
    assert b"committer Jane Doe <jane@example.com> 1700000000 +0100" in cat(repo, merge)

    await call.write(operations_pb2.UserMergeBranchRequest(apply=True))
    await call.done_writing()
    applied = await call.read()
    assert applied.branch_update.commit_id == merge
    assert not applied.branch_update.branch_created and not applied.branch_update.repo_created
    assert await call.code() == grpc.StatusCode.OK
    assert rev_parse(repo, "main") == merge


async def test_second_message_without_apply_changes_nothing(
    tmp_path: Path, channel: aio.Channel
) -> None:
    repo, main, feature = await diverged(tmp_path, channel)
    call = stub(channel).UserMergeBranch(metadata=METADATA)
    await call.write(first_request(feature))
    assert (await call.read()).commit_id
    await call.write(operations_pb2.UserMergeBranchRequest(apply=False))
    await call.done_writing()
    assert await call.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "merge aborted by client" in (await call.details() or "")
    assert rev_parse(repo, "main") == main


async def test_stream_closed_without_apply_changes_nothing(
    tmp_path: Path, channel: aio.Channel
) -> None:
    repo, main, feature = await diverged(tmp_path, channel)
    call = stub(channel).UserMergeBranch(metadata=METADATA)
    await call.write(first_request(feature))
    assert (await call.read()).commit_id
    await call.done_writing()
    assert await call.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert rev_parse(repo, "main") == main


async def test_cancelled_merge_changes_nothing(tmp_path: Path, channel: aio.Channel) -> None:
    repo, main, feature = await diverged(tmp_path, channel)
    call = stub(channel).UserMergeBranch(metadata=METADATA)
    await call.write(first_request(feature))
    assert (await call.read()).commit_id
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call.read()
    assert rev_parse(repo, "main") == main


async def test_branch_moved_between_compute_and_apply_fails_precondition(
    tmp_path: Path, channel: aio.Channel
) -> None:
    repo, _main, feature = await diverged(tmp_path, channel)
    call = stub(channel).UserMergeBranch(metadata=METADATA)
    await call.write(first_request(feature))
    merge = (await call.read()).commit_id
    moved = await commit_files(
        channel, stream(header("r.git", "main"), create("late.txt", b"late\n"))
    )
    await call.write(operations_pb2.UserMergeBranchRequest(apply=True))
    await call.done_writing()
    assert await call.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert rev_parse(repo, "main") == moved.branch_update.commit_id != merge


async def test_conflicts_fail_precondition_naming_the_paths(
    tmp_path: Path, channel: aio.Channel
) -> None:
    repo, main, feature = await diverged(tmp_path, channel, conflicting=True)
    call = stub(channel).UserMergeBranch(metadata=METADATA)
    await call.write(first_request(feature))
    await call.done_writing()
    assert await call.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "file0.txt" in (await call.details() or "")
    assert rev_parse(repo, "main") == main


async def test_merge_with_expected_old_oid_merges_into_that_commit(
    tmp_path: Path, channel: aio.Channel
) -> None:
    repo, main, feature = await diverged(tmp_path, channel)
    call = stub(channel).UserMergeBranch(metadata=METADATA)
    await call.write(first_request(feature, expected_old_oid=main))
    merge = (await call.read()).commit_id
    await call.write(operations_pb2.UserMergeBranchRequest(apply=True))
    await call.done_writing()
    assert (await call.read()).branch_update.commit_id == merge
    assert parents(repo, merge)[0] == main


@pytest.mark.parametrize(
    ("fields", "code", "fragment"),
    [
        ({"branch": b""}, grpc.StatusCode.INVALID_ARGUMENT, "empty branch name"),
        ({"message": b""}, grpc.StatusCode.INVALID_ARGUMENT, "empty message"),
        ({"commit_id": ""}, grpc.StatusCode.INVALID_ARGUMENT, "empty commit ID"),
        ({"user": None}, grpc.StatusCode.INVALID_ARGUMENT, "empty user"),
        ({"branch": b"missing"}, grpc.StatusCode.NOT_FOUND, "missing"),
        ({"commit_id": "3" * 40}, grpc.StatusCode.NOT_FOUND, "not a commit"),
    ],
)
async def test_merge_errors(
    tmp_path: Path,
    channel: aio.Channel,
    fields: dict[str, Any],
    code: grpc.StatusCode,
    fragment: str,
) -> None:
    repo, main, feature = await diverged(tmp_path, channel)
    values = {"commit_id": feature, **fields}
    call = stub(channel).UserMergeBranch(metadata=METADATA)
    await call.write(first_request(**values))
    await call.done_writing()
    assert await call.code() == code
    assert fragment in (await call.details() or "")
    assert rev_parse(repo, "main") == main
