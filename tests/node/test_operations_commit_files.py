"""UserCommitFiles over real bare repositories."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from grpc import aio

from praefect.protos.gitaly import operations_pb2, shared_pb2
from tests.support.gitenv import git
from tests.support.ops import (
    FIXED_TIME,
    cat,
    chmod,
    clone_bare,
    commit_files,
    create,
    create_dir,
    delete,
    head_target,
    header,
    history,
    init_bare,
    move,
    parents,
    rev_parse,
    stream,
    tree_files,
    update,
)


async def test_first_commit_initializes_an_empty_repository_with_a_readme(
    tmp_path: Path, channel: aio.Channel
) -> None:
    # HEAD names "master", which nobody creates: the first branch takes its place.
    repo = init_bare(tmp_path, "group/empty.git", head_branch="master")
    response = await commit_files(
        channel,
        stream(
            header("group/empty.git", "main", b"Initial commit"), create("README.md", b"# Hello\n")
        ),
    )
    update_ = response.branch_update
    assert not response.index_error
    assert update_.repo_created and update_.branch_created
    assert rev_parse(repo, "refs/heads/main") == update_.commit_id
    assert parents(repo, update_.commit_id) == []
    assert tree_files(repo, "main") == {"README.md": tree_files(repo, "main")["README.md"]}
    assert tree_files(repo, "main")["README.md"].content == b"# Hello\n"
    assert head_target(repo) == "refs/heads/main"


async def test_first_commit_with_start_branch_on_empty_repository_is_a_root_commit(
    tmp_path: Path, channel: aio.Channel
) -> None:
    """GitLab names the new branch as start branch when creating the first file."""
    repo = init_bare(tmp_path, "empty.git")
    response = await commit_files(
        channel,
        stream(
            header("empty.git", "main", start_branch_name=b"main"), create("README.md", b"hi\n")
        ),
    )
    assert response.branch_update.repo_created
    assert parents(repo, response.branch_update.commit_id) == []


async def test_further_commits_build_on_the_branch(tmp_path: Path, channel: aio.Channel) -> None:
    repo = init_bare(tmp_path, "r.git")
    first = await commit_files(channel, stream(header("r.git"), create("a.txt", b"one\n")))
    second = await commit_files(channel, stream(header("r.git"), update("a.txt", b"two\n")))
    assert not second.branch_update.repo_created
    assert not second.branch_update.branch_created
    assert parents(repo, second.branch_update.commit_id) == [first.branch_update.commit_id]
    assert tree_files(repo, "main")["a.txt"].content == b"two\n"
    # HEAD keeps pointing at the existing default branch.
    assert head_target(repo) == "refs/heads/main"


async def test_every_action_type_changes_the_tree(tmp_path: Path, channel: aio.Channel) -> None:
    repo = clone_bare(tmp_path, "r.git", commits=3)  # file0.txt .. file2.txt
    response = await commit_files(
        channel,
        stream(
            header("r.git", message=b"All actions"),
            create("new/script.sh", b"#!/bin/sh\n", b"echo hi\n", execute_filemode=True),
            create_dir("empty-dir"),
            update("file0.txt", b"changed\n"),
            move("file1.txt", "moved/file1.txt", infer=True),
            move("file2.txt", "renamed.txt", b"replaced\n"),
            chmod("file0.txt", True),
            create(
                "encoded.bin",
                base64.b64encode(b"\x00binary\xff")[:5],
                base64.b64encode(b"\x00binary\xff")[5:],
                base64_content=True,
            ),
        ),
    )
    assert not response.index_error
    files = tree_files(repo, response.branch_update.commit_id)
    assert set(files) == {
        "new/script.sh",
        "empty-dir/.gitkeep",
        "file0.txt",
        "moved/file1.txt",
        "renamed.txt",
        "encoded.bin",
    }
    assert files["new/script.sh"].content == b"#!/bin/sh\necho hi\n"
    assert files["new/script.sh"].mode == "100755"
    assert files["empty-dir/.gitkeep"].content == b""
    assert files["file0.txt"] == type(files["file0.txt"])("100755", b"changed\n")
    assert files["moved/file1.txt"].content == b"content 1\n"
    assert files["renamed.txt"].content == b"replaced\n"
    assert files["encoded.bin"].content == b"\x00binary\xff"
    assert b"All actions" in cat(repo, response.branch_update.commit_id)

    deleted = await commit_files(channel, stream(header("r.git"), delete("renamed.txt")))
    assert "renamed.txt" not in tree_files(repo, deleted.branch_update.commit_id)


@pytest.mark.parametrize(
    ("actions", "index_error"),
    [
        ([create("file0.txt", b"x")], "A file with this name already exists"),
        ([update("missing.txt", b"x")], "A file with this name doesn't exist"),
        ([delete("missing.txt")], "A file with this name doesn't exist"),
        ([chmod("missing.txt", True)], "A file with this name doesn't exist"),
        ([move("missing.txt", "b.txt", infer=True)], "A file with this name doesn't exist"),
        ([move("file0.txt", "file1.txt", infer=True)], "A file with this name already exists"),
        ([create_dir("dir")], "A directory with this name already exists"),
        ([create("dir", b"x")], "A directory with this name already exists"),
        ([create("file0.txt/inner", b"x")], "A file with this name already exists"),
        # Actions apply in order: the second CREATE sees the first one's file.
        (
            [create("twice.txt", b"1"), create("twice.txt", b"2")],
            "A file with this name already exists",
        ),
    ],
)
async def test_actions_that_do_not_fit_the_tree_answer_index_error_and_change_nothing(
    tmp_path: Path,
    channel: aio.Channel,
    actions: list[list[operations_pb2.UserCommitFilesRequest]],
    index_error: str,
) -> None:
    repo = clone_bare(tmp_path, "r.git", commits=2)
    before = rev_parse(repo, "main")
    prepare = await commit_files(channel, stream(header("r.git"), create("dir/x.txt", b"x")))
    assert prepare.branch_update.commit_id
    response = await commit_files(channel, stream(header("r.git"), *actions))
    assert response.index_error == index_error
    assert not response.branch_update.commit_id
    assert rev_parse(repo, "main") == prepare.branch_update.commit_id != before


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("../outside.txt", "directory traversal"),
        ("a/../../b", "directory traversal"),
        ("/etc/passwd", "relative"),
        (".git/config", ".git"),
        ("sub/.GIT/hooks/x", ".git"),
        ("a//b", "empty component"),
        ("", "file path"),
    ],
)
async def test_bad_paths_are_invalid_argument(
    tmp_path: Path, channel: aio.Channel, path: str, fragment: str
) -> None:
    repo = clone_bare(tmp_path, "r.git", commits=1)
    before = rev_parse(repo, "main")
    with pytest.raises(aio.AioRpcError) as error:
        await commit_files(channel, stream(header("r.git"), create(path, b"x")))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in (error.value.details() or "")
    assert rev_parse(repo, "main") == before


async def test_bad_previous_path_of_a_move_is_invalid_argument(
    tmp_path: Path, channel: aio.Channel
) -> None:
    clone_bare(tmp_path, "r.git", commits=1)
    with pytest.raises(aio.AioRpcError) as error:
        await commit_files(channel, stream(header("r.git"), move("../x", "y", infer=True)))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "previous_path" in (error.value.details() or "")


@pytest.mark.parametrize(
    ("first", "fragment"),
    [
        (header("r.git", user=None), "empty User"),
        (header("r.git", branch=""), "empty BranchName"),
        (header("r.git", message=b""), "empty CommitMessage"),
        (header("r.git", start_sha="not-a-sha"), "start_sha"),
        (header("r.git", expected_old_oid="1234"), "expected_old_oid"),
        (header("r.git", branch="-rf"), "must not start with '-'"),
        (header("r.git", branch="bad..name"), "branch_name"),
        (
            operations_pb2.UserCommitFilesRequest(
                action=operations_pb2.UserCommitFilesAction(content=b"x")
            ),
            "header",
        ),
        (header("r.git", user=shared_pb2.User(name=b"", email=b"a@b")), "empty user name"),
        (
            header("r.git", user=shared_pb2.User(name=b"A", email=b"a@b", timezone="Mars/Olympus")),
            "timezone",
        ),
    ],
)
async def test_bad_headers_are_invalid_argument(
    tmp_path: Path,
    channel: aio.Channel,
    first: operations_pb2.UserCommitFilesRequest,
    fragment: str,
) -> None:
    clone_bare(tmp_path, "r.git", commits=1)
    with pytest.raises(aio.AioRpcError) as error:
        await commit_files(channel, stream(first, create("x.txt", b"x")))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in (error.value.details() or "")


async def test_content_before_any_action_and_bad_base64_are_invalid_argument(
    tmp_path: Path, channel: aio.Channel
) -> None:
    clone_bare(tmp_path, "r.git", commits=1)
    content_first = operations_pb2.UserCommitFilesRequest(
        action=operations_pb2.UserCommitFilesAction(content=b"orphan")
    )
    with pytest.raises(aio.AioRpcError) as error:
        await commit_files(channel, [header("r.git"), content_first])
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "before any action" in (error.value.details() or "")

    with pytest.raises(aio.AioRpcError) as error:
        await commit_files(
            channel, stream(header("r.git"), create("x", b"!!!notbase64", base64_content=True))
        )
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "base64" in (error.value.details() or "")


async def test_missing_repository_is_not_found(tmp_path: Path, channel: aio.Channel) -> None:
    with pytest.raises(aio.AioRpcError) as error:
        await commit_files(channel, stream(header("nowhere.git"), create("x", b"x")))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert "nowhere.git" in (error.value.details() or "")
    assert str(tmp_path) not in (error.value.details() or "")


async def test_start_branch_and_start_sha_branch_off(tmp_path: Path, channel: aio.Channel) -> None:
    repo = clone_bare(tmp_path, "r.git", commits=3)
    main = rev_parse(repo, "main")
    first = rev_parse(repo, "main~2")
    assert main and first
    from_branch = await commit_files(
        channel,
        stream(header("r.git", "feature", start_branch_name=b"main"), create("f.txt", b"f")),
    )
    assert from_branch.branch_update.branch_created
    assert not from_branch.branch_update.repo_created
    assert parents(repo, from_branch.branch_update.commit_id) == [main]

    from_sha = await commit_files(
        channel, stream(header("r.git", "old", start_sha=first), create("o.txt", b"o"))
    )
    assert parents(repo, from_sha.branch_update.commit_id) == [first]
    assert set(tree_files(repo, "old")) == {"file0.txt", "o.txt"}


async def test_missing_start_branch_and_start_sha_fail_precondition(
    tmp_path: Path, channel: aio.Channel
) -> None:
    clone_bare(tmp_path, "r.git", commits=1)
    with pytest.raises(aio.AioRpcError) as error:
        await commit_files(
            channel, stream(header("r.git", "f", start_branch_name=b"nope"), create("x", b""))
        )
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "nope" in (error.value.details() or "")
    with pytest.raises(aio.AioRpcError) as error:
        await commit_files(
            channel, stream(header("r.git", "f", start_sha="1" * 40), create("x", b""))
        )
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_start_sha_off_the_tip_needs_force_on_an_existing_branch(
    tmp_path: Path, channel: aio.Channel
) -> None:
    repo = clone_bare(tmp_path, "r.git", commits=3)
    old = rev_parse(repo, "main~1")
    tip = rev_parse(repo, "main")
    assert old and tip
    with pytest.raises(aio.AioRpcError) as error:
        await commit_files(channel, stream(header("r.git", start_sha=old), create("x", b"x")))
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert rev_parse(repo, "main") == tip

    forced = await commit_files(
        channel, stream(header("r.git", start_sha=old, force=True), create("x", b"x"))
    )
    assert rev_parse(repo, "main") == forced.branch_update.commit_id
    assert parents(repo, forced.branch_update.commit_id) == [old]


async def test_expected_old_oid_is_compared_before_the_branch_moves(
    tmp_path: Path, channel: aio.Channel
) -> None:
    repo = clone_bare(tmp_path, "r.git", commits=2)
    tip = rev_parse(repo, "main")
    stale = rev_parse(repo, "main~1")
    assert tip and stale
    with pytest.raises(aio.AioRpcError) as error:
        await commit_files(
            channel, stream(header("r.git", expected_old_oid=stale), create("x", b"x"))
        )
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "refs/heads/main" in (error.value.details() or "")
    assert rev_parse(repo, "main") == tip

    ok = await commit_files(
        channel, stream(header("r.git", expected_old_oid=tip), create("x", b"x"))
    )
    assert rev_parse(repo, "main") == ok.branch_update.commit_id


async def test_author_and_committer_come_from_header_and_user(
    tmp_path: Path, channel: aio.Channel
) -> None:
    repo = init_bare(tmp_path, "r.git")
    response = await commit_files(
        channel,
        stream(
            header(
                "r.git",
                timestamp=FIXED_TIME,
                commit_author_name=b"Ann Author",
                commit_author_email=b"ann@example.com",
            ),
            create("a", b"a"),
        ),
    )
    raw = cat(repo, response.branch_update.commit_id)
    # Europe/Paris is one hour ahead of UTC in November.
    assert b"\nauthor Ann Author <ann@example.com> 1700000000 +0100\n" in raw
    assert b"\ncommitter Jane Doe <jane@example.com> 1700000000 +0100\n" in raw


async def test_timezone_follows_summer_time(tmp_path: Path, channel: aio.Channel) -> None:
    repo = init_bare(tmp_path, "r.git")
    july = Timestamp(seconds=1_689_000_000)  # 2023-07-10, Paris at +0200
    response = await commit_files(
        channel, stream(header("r.git", timestamp=july), create("a", b"a"))
    )
    assert b" 1689000000 +0200\n" in cat(repo, response.branch_update.commit_id)


async def test_same_request_with_timestamp_gives_same_commit_in_two_repositories(
    tmp_path: Path, channel: aio.Channel
) -> None:
    one = init_bare(tmp_path, "one.git")
    two = init_bare(tmp_path, "two.git")
    ids = []
    for relative_path in ("one.git", "two.git"):
        first = await commit_files(
            channel,
            stream(
                header(relative_path, message=b"Initial", timestamp=FIXED_TIME),
                create("README.md", b"# R\n"),
            ),
        )
        second = await commit_files(
            channel,
            stream(
                header(relative_path, message=b"More", timestamp=FIXED_TIME),
                create("docs/a.md", b"a"),
                update("README.md", b"# R2\n"),
            ),
        )
        ids.append((first.branch_update.commit_id, second.branch_update.commit_id))
    assert ids[0] == ids[1]
    assert rev_parse(one, "main") == rev_parse(two, "main") == ids[0][1]


async def test_concurrent_commits_on_one_branch_never_lose_an_update(
    tmp_path: Path, channel: aio.Channel
) -> None:
    repo = clone_bare(tmp_path, "r.git", commits=1)
    start = rev_parse(repo, "main")

    async def one(i: int) -> str | grpc.StatusCode:
        try:
            response = await commit_files(
                channel,
                stream(
                    header("r.git", message=f"task {i}".encode()),
                    create(f"task-{i}.txt", b"%d" % i),
                ),
            )
        except aio.AioRpcError as error:
            return error.code()
        return response.branch_update.commit_id

    results = await asyncio.gather(*(one(i) for i in range(8)))
    landed = [result for result in results if isinstance(result, str)]
    failed = [result for result in results if not isinstance(result, str)]
    assert landed, "at least one concurrent commit must land"
    assert all(code == grpc.StatusCode.FAILED_PRECONDITION for code in failed), failed
    reachable = set(history(repo, "main"))
    assert set(landed) <= reachable, "an acknowledged commit is missing from the branch"
    # A linear history of exactly the start commit plus every landed commit.
    assert len(reachable) == 1 + len(landed)
    assert start in reachable
    files = tree_files(repo, "main")
    assert {name for name in files if name.startswith("task-")} == {
        f"task-{i}.txt" for i, result in enumerate(results) if isinstance(result, str)
    }


async def test_no_actions_makes_an_empty_commit(tmp_path: Path, channel: aio.Channel) -> None:
    repo = clone_bare(tmp_path, "r.git", commits=1)
    tip = rev_parse(repo, "main")
    response = await commit_files(channel, [header("r.git", message=b"empty")])
    assert parents(repo, response.branch_update.commit_id) == [tip]
    assert rev_parse(repo, "main^{tree}") == rev_parse(repo, "main~1^{tree}")


async def test_scratch_directory_is_left_empty(tmp_path: Path, channel: aio.Channel) -> None:
    init_bare(tmp_path, "r.git")
    await commit_files(channel, stream(header("r.git"), create("a", b"a"), create_dir("d")))
    scratch = tmp_path / "storage" / "+praefect" / "tmp"
    assert scratch.is_dir()
    assert list(scratch.iterdir()) == []


async def test_sha256_repository_gets_its_first_commit_and_a_branch(
    tmp_path: Path, channel: aio.Channel
) -> None:
    repo = tmp_path / "storage" / "sha256.git"
    repo.parent.mkdir(parents=True, exist_ok=True)
    git(["init", "-q", "--bare", "--object-format=sha256", "-b", "main", str(repo)])
    first = await commit_files(channel, stream(header("sha256.git"), create("README.md", b"x\n")))
    second = await commit_files(
        channel,
        stream(
            header("sha256.git", expected_old_oid=first.branch_update.commit_id),
            delete("README.md"),
        ),
    )
    assert len(second.branch_update.commit_id) == 64
    assert parents(repo, second.branch_update.commit_id) == [first.branch_update.commit_id]
