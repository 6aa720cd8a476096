"""UserCreateBranch, UserUpdateBranch, UserDeleteBranch and UserFFBranch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio

from praefect.protos.gitaly import operations_pb2
from tests.support.ops import (
    METADATA,
    USER,
    clone_bare,
    commit_files,
    create,
    header,
    ref_exists,
    repository,
    rev_parse,
    stream,
    stub,
)


async def test_create_branch_at_a_start_point(tmp_path: Path, channel: aio.Channel) -> None:
    repo = clone_bare(tmp_path, "r.git", commits=3)
    start = rev_parse(repo, "main~1")
    response = await stub(channel).UserCreateBranch(
        operations_pb2.UserCreateBranchRequest(
            repository=repository("r.git"), branch_name=b"feature", user=USER, start_point=b"main"
        ),
        metadata=METADATA,
    )
    assert response.branch.name == b"feature"
    assert response.branch.target_commit.id == rev_parse(repo, "main")
    assert response.branch.target_commit.subject == b"commit 2"
    assert rev_parse(repo, "refs/heads/feature") == rev_parse(repo, "main")

    by_id = await stub(channel).UserCreateBranch(
        operations_pb2.UserCreateBranchRequest(
            repository=repository("r.git"),
            branch_name=b"old",
            user=USER,
            start_point=(start or "").encode(),
        ),
        metadata=METADATA,
    )
    assert by_id.branch.target_commit.id == start == rev_parse(repo, "refs/heads/old")


async def test_create_existing_branch_fails_precondition(
    tmp_path: Path, channel: aio.Channel
) -> None:
    repo = clone_bare(tmp_path, "r.git", commits=2)
    tip = rev_parse(repo, "main")
    with pytest.raises(aio.AioRpcError) as error:
        await stub(channel).UserCreateBranch(
            operations_pb2.UserCreateBranchRequest(
                repository=repository("r.git"), branch_name=b"main", user=USER, start_point=b"main"
            ),
            metadata=METADATA,
        )
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "already exists" in (error.value.details() or "")
    assert rev_parse(repo, "main") == tip


@pytest.mark.parametrize(
    ("fields", "code", "fragment"),
    [
        (
            {"branch_name": b"", "start_point": b"main"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "empty branch name",
        ),
        ({"branch_name": b"-x", "start_point": b"main"}, grpc.StatusCode.INVALID_ARGUMENT, "'-'"),
        (
            {"branch_name": b"a b", "start_point": b"main"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "branch name",
        ),
        (
            {"branch_name": b"x", "start_point": b""},
            grpc.StatusCode.INVALID_ARGUMENT,
            "empty start point",
        ),
        (
            {"branch_name": b"x", "start_point": b"--all"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "start point",
        ),
        (
            {"branch_name": b"x", "start_point": b"nope"},
            grpc.StatusCode.FAILED_PRECONDITION,
            "revspec 'nope'",
        ),
        (
            {"branch_name": b"x", "start_point": b"main", "user": None},
            grpc.StatusCode.INVALID_ARGUMENT,
            "empty user",
        ),
    ],
)
async def test_create_branch_errors(
    tmp_path: Path,
    channel: aio.Channel,
    fields: dict[str, Any],
    code: grpc.StatusCode,
    fragment: str,
) -> None:
    repo = clone_bare(tmp_path, "r.git", commits=1)
    values: dict[str, Any] = {"repository": repository("r.git"), "user": USER, **fields}
    with pytest.raises(aio.AioRpcError) as error:
        await stub(channel).UserCreateBranch(
            operations_pb2.UserCreateBranchRequest(**values),
            metadata=METADATA,
        )
    assert error.value.code() == code
    assert fragment in (error.value.details() or "")
    assert not ref_exists(repo, "refs/heads/x")


async def test_update_branch_moves_it_only_from_oldrev(
    tmp_path: Path, channel: aio.Channel
) -> None:
    repo = clone_bare(tmp_path, "r.git", commits=3)
    tip, older = rev_parse(repo, "main"), rev_parse(repo, "main~2")
    assert tip and older
    await stub(channel).UserUpdateBranch(
        operations_pb2.UserUpdateBranchRequest(
            repository=repository("r.git"),
            branch_name=b"main",
            user=USER,
            newrev=older.encode(),
            oldrev=tip.encode(),
        ),
        metadata=METADATA,
    )
    assert rev_parse(repo, "main") == older

    with pytest.raises(aio.AioRpcError) as error:
        await stub(channel).UserUpdateBranch(
            operations_pb2.UserUpdateBranchRequest(
                repository=repository("r.git"),
                branch_name=b"main",
                user=USER,
                newrev=tip.encode(),
                oldrev=tip.encode(),  # stale: main is at `older` now
            ),
            metadata=METADATA,
        )
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "Could not update main" in (error.value.details() or "")
    assert rev_parse(repo, "main") == older


async def test_update_branch_rejects_malformed_revisions(
    tmp_path: Path, channel: aio.Channel
) -> None:
    repo = clone_bare(tmp_path, "r.git", commits=1)
    tip = rev_parse(repo, "main") or ""
    for newrev, oldrev, fragment in (
        (b"main", tip.encode(), "newrev"),
        (tip.encode(), b"", "empty oldrev"),
    ):
        with pytest.raises(aio.AioRpcError) as error:
            await stub(channel).UserUpdateBranch(
                operations_pb2.UserUpdateBranchRequest(
                    repository=repository("r.git"),
                    branch_name=b"main",
                    user=USER,
                    newrev=newrev,
                    oldrev=oldrev,
                ),
                metadata=METADATA,
            )
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert fragment in (error.value.details() or "")


async def test_update_branch_to_a_missing_object_fails_precondition(
    tmp_path: Path, channel: aio.Channel
) -> None:
    repo = clone_bare(tmp_path, "r.git", commits=1)
    tip = rev_parse(repo, "main") or ""
    with pytest.raises(aio.AioRpcError) as error:
        await stub(channel).UserUpdateBranch(
            operations_pb2.UserUpdateBranchRequest(
                repository=repository("r.git"),
                branch_name=b"main",
                user=USER,
                newrev=b"1" * 40,
                oldrev=tip.encode(),
            ),
            metadata=METADATA,
        )
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert rev_parse(repo, "main") == tip


async def test_delete_branch(tmp_path: Path, channel: aio.Channel) -> None:
    repo = clone_bare(tmp_path, "r.git", commits=2)
    await commit_files(
        channel, stream(header("r.git", "feature", start_branch_name=b"main"), create("f", b""))
    )
    feature = rev_parse(repo, "refs/heads/feature")
    await stub(channel).UserDeleteBranch(
        operations_pb2.UserDeleteBranchRequest(
            repository=repository("r.git"), branch_name=b"feature", user=USER
        ),
        metadata=METADATA,
    )
    assert feature and not ref_exists(repo, "refs/heads/feature")


async def test_delete_branch_with_expected_old_oid(tmp_path: Path, channel: aio.Channel) -> None:
    repo = clone_bare(tmp_path, "r.git", commits=2)
    tip, older = rev_parse(repo, "main"), rev_parse(repo, "main~1")
    assert tip and older
    with pytest.raises(aio.AioRpcError) as error:
        await stub(channel).UserDeleteBranch(
            operations_pb2.UserDeleteBranchRequest(
                repository=repository("r.git"),
                branch_name=b"main",
                user=USER,
                expected_old_oid=older,
            ),
            metadata=METADATA,
        )
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert rev_parse(repo, "main") == tip

    await stub(channel).UserDeleteBranch(
        operations_pb2.UserDeleteBranchRequest(
            repository=repository("r.git"), branch_name=b"main", user=USER, expected_old_oid=tip
        ),
        metadata=METADATA,
    )
    assert not ref_exists(repo, "refs/heads/main")


async def test_delete_missing_branch_fails_precondition(
    tmp_path: Path, channel: aio.Channel
) -> None:
    clone_bare(tmp_path, "r.git", commits=1)
    with pytest.raises(aio.AioRpcError) as error:
        await stub(channel).UserDeleteBranch(
            operations_pb2.UserDeleteBranchRequest(
                repository=repository("r.git"), branch_name=b"gone", user=USER
            ),
            metadata=METADATA,
        )
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "branch not found" in (error.value.details() or "")


async def test_ff_branch_fast_forwards_to_a_descendant(
    tmp_path: Path, channel: aio.Channel
) -> None:
    repo = clone_bare(tmp_path, "r.git", commits=2)
    main = rev_parse(repo, "main")
    ahead = await commit_files(
        channel, stream(header("r.git", "ahead", start_branch_name=b"main"), create("n", b""))
    )
    commit_id = ahead.branch_update.commit_id
    response = await stub(channel).UserFFBranch(
        operations_pb2.UserFFBranchRequest(
            repository=repository("r.git"),
            user=USER,
            commit_id=commit_id,
            branch=b"main",
            expected_old_oid=main or "",
        ),
        metadata=METADATA,
    )
    assert response.branch_update.commit_id == commit_id
    assert not response.branch_update.branch_created
    assert rev_parse(repo, "main") == commit_id


async def test_ff_branch_refuses_a_commit_that_is_not_a_descendant(
    tmp_path: Path, channel: aio.Channel
) -> None:
    repo = clone_bare(tmp_path, "r.git", commits=2)
    side = await commit_files(
        channel,
        stream(
            header("r.git", "side", start_sha=rev_parse(repo, "main~1") or ""), create("s", b"")
        ),
    )
    tip = rev_parse(repo, "main")
    with pytest.raises(aio.AioRpcError) as error:
        await stub(channel).UserFFBranch(
            operations_pb2.UserFFBranchRequest(
                repository=repository("r.git"),
                user=USER,
                commit_id=side.branch_update.commit_id,
                branch=b"main",
            ),
            metadata=METADATA,
        )
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "not fast forward" in (error.value.details() or "")
    assert rev_parse(repo, "main") == tip


@pytest.mark.parametrize(
    ("branch", "commit_id", "code", "fragment"),
    [
        (b"main", "", grpc.StatusCode.INVALID_ARGUMENT, "empty commit id"),
        (b"main", "xyz", grpc.StatusCode.INVALID_ARGUMENT, "commit ID"),
        (b"main", "2" * 40, grpc.StatusCode.NOT_FOUND, "not a commit"),
        (b"missing", "2" * 40, grpc.StatusCode.INVALID_ARGUMENT, "reference not found"),
    ],
)
async def test_ff_branch_errors(
    tmp_path: Path,
    channel: aio.Channel,
    branch: bytes,
    commit_id: str,
    code: grpc.StatusCode,
    fragment: str,
) -> None:
    clone_bare(tmp_path, "r.git", commits=1)
    with pytest.raises(aio.AioRpcError) as error:
        await stub(channel).UserFFBranch(
            operations_pb2.UserFFBranchRequest(
                repository=repository("r.git"), user=USER, commit_id=commit_id, branch=branch
            ),
            metadata=METADATA,
        )
    assert error.value.code() == code
    assert fragment in (error.value.details() or "")


async def test_calls_without_the_token_are_refused(tmp_path: Path, channel: aio.Channel) -> None:
    repo = clone_bare(tmp_path, "r.git", commits=1)
    with pytest.raises(aio.AioRpcError) as error:
        await stub(channel).UserCreateBranch(
            operations_pb2.UserCreateBranchRequest(
                repository=repository("r.git"), branch_name=b"x", user=USER, start_point=b"main"
            )
        )
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert not ref_exists(repo, "refs/heads/x")
