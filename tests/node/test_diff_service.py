from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio

from praefect.node.diffparse import diff_header
from praefect.protos.gitaly import diff_pb2, diff_pb2_grpc, shared_pb2
from tests.node.conftest import NODE_TOKEN, STORAGE
from tests.support.diff_watch import (
    open_fds,
    wait_for_fds,
    wait_for_git_blocked_writing,
    wait_for_no_git_children,
)
from tests.support.gitenv import git, git_env
from tests.support.grpc_client import auth
from tests.support.seed_diff import (
    LONG_FILE_LINES,
    PATH_WITH_B_SLASH,
    PATH_WITH_NEWLINE,
    PATH_WITH_QUOTE,
    DiffRepo,
    SeededRepo,
    copy_repo,
    seed_diff_repo,
    seed_large_diff_repo,
)

PATCH_MESSAGE_SIZE = 5 * 1024
ZERO = "0" * 40
REGULAR, EXECUTABLE, SYMLINK = 0o100644, 0o100755, 0o120000


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> DiffRepo:
    return seed_diff_repo(tmp_path_factory.mktemp("diff-template"))


@pytest.fixture
def repo(template: DiffRepo, tmp_path: Path) -> DiffRepo:
    return copy_repo(template, tmp_path / "storage")


@pytest.fixture
def stub(channel: aio.Channel) -> diff_pb2_grpc.DiffServiceStub:
    return diff_pb2_grpc.DiffServiceStub(channel)


def repository(
    repo: SeededRepo | None = None, relative_path: str | None = None
) -> shared_pb2.Repository:
    path = relative_path or (repo.relative_path if repo else "")
    return shared_pb2.Repository(storage_name=STORAGE, relative_path=path)


def git_bytes(repo: SeededRepo, *args: str) -> bytes:
    """git's output as bytes, run from the test (never from the server's loop)."""
    result = subprocess.run(
        ["git", "--git-dir", str(repo.path), *args],
        env=git_env(),
        capture_output=True,
        check=True,
        timeout=60,
    )
    return result.stdout


def expected_patch(repo: DiffRepo, path: bytes, *flags: str) -> bytes:
    """The patch Gitaly sends for one file: git's, from the first hunk (or
    the `Binary files` line) on."""
    output = git_bytes(
        repo, "diff", "--full-index", *flags, repo.base, repo.head, "--", path.decode()
    )
    for marker in (b"\n@@", b"\nBinary files"):
        if marker in output:
            return output[output.index(marker) + 1 :]
    return b""


@dataclass
class Diff:
    """One file of a CommitDiff, stitched together from its messages."""

    first: diff_pb2.CommitDiffResponse
    patch: bytes = b""
    messages: list[diff_pb2.CommitDiffResponse] = field(default_factory=list)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.first, name)


def stitch(messages: list[diff_pb2.CommitDiffResponse]) -> list[Diff]:
    """Group messages into files; checks that only a file's first message
    carries its metadata and that every file ends with end_of_patch."""
    diffs: list[Diff] = []
    current: Diff | None = None
    for message in messages:
        if current is None:
            current = Diff(message)
        else:
            continuation = diff_pb2.CommitDiffResponse(
                raw_patch_data=message.raw_patch_data, end_of_patch=message.end_of_patch
            )
            assert message == continuation, "a continuation message carries more than patch data"
        assert len(message.raw_patch_data) <= PATCH_MESSAGE_SIZE
        current.messages.append(message)
        current.patch += message.raw_patch_data
        if message.end_of_patch:
            diffs.append(current)
            current = None
    assert current is None, "the last file has no end_of_patch"
    return diffs


async def commit_diff(
    stub: diff_pb2_grpc.DiffServiceStub, repo: SeededRepo, **fields: Any
) -> list[Diff]:
    request = diff_pb2.CommitDiffRequest(
        repository=repository(repo), left_commit_id=repo.base, right_commit_id=repo.head, **fields
    )
    messages = [
        message async for message in stub.CommitDiff(request, metadata=auth(NODE_TOKEN), timeout=30)
    ]
    return stitch(messages)


def by_path(diffs: list[Diff]) -> dict[bytes, Diff]:
    return {diff.to_path: diff for diff in diffs if diff.to_path}


def changed_files(repo: SeededRepo) -> Iterator[bytes]:
    """The files git reports between base and head, in its order."""
    fields = git_bytes(
        repo, "diff", "--name-only", "-z", "--find-renames=30%", repo.base, repo.head
    ).split(b"\0")
    return (field for field in fields if field)


async def test_commit_diff_reports_every_kind_of_change(
    stub: diff_pb2_grpc.DiffServiceStub, repo: DiffRepo
) -> None:
    diffs = await commit_diff(stub, repo)
    files = by_path(diffs)

    readme = files[b"README.md"]
    assert (readme.from_path, readme.old_mode, readme.new_mode) == (b"README.md", REGULAR, REGULAR)
    assert readme.from_id == repo.object_id(repo.base, "README.md")
    assert readme.to_id == repo.readme_oid
    assert readme.patch == b"@@ -1,2 +1,2 @@\n hello\n-world\n+WORLD\n"
    assert not readme.binary and not readme.collapsed and not readme.too_large

    renamed = files[b"docs/manual.txt"]
    assert renamed.from_path == b"docs/guide.txt"
    assert renamed.from_id == renamed.to_id
    assert renamed.patch == b""

    logo = files[b"logo.bin"]
    assert logo.binary
    assert logo.patch == b"Binary files a/logo.bin and b/logo.bin differ\n"

    script = files[b"run.sh"]
    assert (script.old_mode, script.new_mode, script.patch) == (REGULAR, EXECUTABLE, b"")

    added = files[b"added.txt"]
    assert (added.old_mode, added.new_mode, added.from_id) == (0, REGULAR, ZERO)
    assert added.patch == b"@@ -0,0 +1 @@\n+new file\n"

    gone = files[b"gone.txt"]
    assert (gone.old_mode, gone.new_mode, gone.to_id) == (REGULAR, 0, ZERO)
    assert gone.patch == b"@@ -1 +0,0 @@\n-to be deleted\n"

    # A type change is a deletion followed by an addition, as Gitaly sends it.
    kind = [diff for diff in diffs if diff.to_path == b"kind"]
    assert [(d.old_mode, d.new_mode) for d in kind] == [(REGULAR, 0), (0, SYMLINK)]
    assert kind[0].to_id == ZERO and kind[1].from_id == ZERO
    assert kind[1].patch == b"@@ -0,0 +1 @@\n+README.md\n\\ No newline at end of file\n"

    # Files in git's order; the type change counts twice.
    expected_order = []
    for path in changed_files(repo):
        if path != b"docs/guide.txt":
            expected_order += [path, path] if path == b"kind" else [path]
    assert [diff.to_path for diff in diffs] == expected_order


async def test_commit_diff_matches_paths_that_git_quotes(
    stub: diff_pb2_grpc.DiffServiceStub, repo: DiffRepo
) -> None:
    files = by_path(await commit_diff(stub, repo))
    for path in (PATH_WITH_B_SLASH, PATH_WITH_QUOTE, PATH_WITH_NEWLINE):
        assert files[path].from_path == path
        assert files[path].patch == expected_patch(repo, path)
        assert files[path].patch.startswith(b"@@ ")


@pytest.mark.parametrize(
    "limits",
    [
        {},
        {
            "collapse_diffs": True,
            "safe_max_files": 100,
            "safe_max_lines": 25000,
            "safe_max_bytes": 2_000_000,
        },
    ],
    ids=["streamed", "buffered-under-limits"],
)
async def test_commit_diff_splits_a_long_patch_into_messages(
    stub: diff_pb2_grpc.DiffServiceStub, repo: DiffRepo, limits: dict[str, Any]
) -> None:
    long = by_path(await commit_diff(stub, repo, **limits))[b"long.txt"]

    assert long.patch == expected_patch(repo, b"long.txt")
    assert long.patch.count(b"\n") > 2 * LONG_FILE_LINES
    assert len(long.messages) == -(-len(long.patch) // PATCH_MESSAGE_SIZE)
    assert [m.end_of_patch for m in long.messages] == [False] * (len(long.messages) - 1) + [True]
    assert long.messages[0].from_path == b"long.txt" and not long.collapsed


async def test_commit_diff_limits_to_the_given_paths(
    stub: diff_pb2_grpc.DiffServiceStub, repo: DiffRepo
) -> None:
    diffs = await commit_diff(stub, repo, paths=[b"README.md", b"docs", PATH_WITH_QUOTE, b"*.txt"])

    # Paths are literal: "*.txt" matches nothing, a directory its files.
    assert [diff.to_path for diff in diffs] == [b"README.md", b"docs/manual.txt", PATH_WITH_QUOTE]


async def test_enforce_limits_ends_with_an_overflow_marker_after_max_files(
    stub: diff_pb2_grpc.DiffServiceStub, repo: DiffRepo
) -> None:
    diffs = await commit_diff(
        stub,
        repo,
        enforce_limits=True,
        max_files=3,
        max_lines=100000,
        max_bytes=10_000_000,
        max_patch_bytes=500000,
    )

    assert len(diffs) == 4
    assert all(not diff.overflow_marker for diff in diffs[:3])
    assert diffs[3].first == diff_pb2.CommitDiffResponse(overflow_marker=True, end_of_patch=True)


async def test_enforce_limits_overflows_in_the_file_that_reaches_max_lines(
    stub: diff_pb2_grpc.DiffServiceStub, repo: DiffRepo
) -> None:
    all_files = await commit_diff(stub, repo)
    long_index = [diff.to_path for diff in all_files].index(b"long.txt")

    diffs = await commit_diff(
        stub,
        repo,
        enforce_limits=True,
        max_files=100,
        max_lines=1000,
        max_bytes=10_000_000,
        max_patch_bytes=500000,
    )

    assert [diff.to_path for diff in diffs[:long_index]] == [
        diff.to_path for diff in all_files[:long_index]
    ]
    assert diffs[long_index].overflow_marker and diffs[long_index].to_path == b""
    assert len(diffs) == long_index + 1


async def test_collect_all_paths_lists_the_files_after_the_limit_without_patches(
    stub: diff_pb2_grpc.DiffServiceStub, repo: DiffRepo
) -> None:
    all_files = await commit_diff(stub, repo)
    diffs = await commit_diff(
        stub, repo, enforce_limits=True, max_files=2, max_lines=100000, max_bytes=10_000_000,
        max_patch_bytes=500000, collect_all_paths=True,
    )  # fmt: skip

    assert [diff.to_path for diff in diffs] == [diff.to_path for diff in all_files]
    assert [diff.overflow_marker for diff in diffs] == [False, False] + [True] * (len(diffs) - 2)
    assert all(diff.patch == b"" for diff in diffs[2:])
    assert diffs[0].patch == all_files[0].patch


async def test_collapse_diffs_empties_patches_beyond_the_safe_limits(
    stub: diff_pb2_grpc.DiffServiceStub, repo: DiffRepo
) -> None:
    diffs = await commit_diff(
        stub, repo, collapse_diffs=True, safe_max_files=1, safe_max_lines=100, safe_max_bytes=10000
    )

    assert diffs[0].patch and not diffs[0].collapsed
    files = by_path(diffs)
    for path in (b"long.txt", b"added.txt", PATH_WITH_QUOTE):
        assert files[path].collapsed and files[path].patch == b""
    # Nothing to collapse in a rename without changes or a mode change.
    assert not files[b"docs/manual.txt"].collapsed and not files[b"run.sh"].collapsed


async def test_max_patch_bytes_marks_big_patches_too_large(
    stub: diff_pb2_grpc.DiffServiceStub, repo: DiffRepo
) -> None:
    diffs = await commit_diff(
        stub,
        repo,
        enforce_limits=True,
        max_files=100,
        max_lines=100000,
        max_bytes=10_000_000,
        max_patch_bytes=1000,
    )

    files = by_path(diffs)
    assert files[b"long.txt"].too_large and files[b"long.txt"].patch == b""
    assert not files[b"README.md"].too_large and files[b"README.md"].patch
    assert not any(diff.overflow_marker for diff in diffs)


async def test_max_patch_bytes_for_file_extension_overrides_the_limit(
    stub: diff_pb2_grpc.DiffServiceStub, repo: DiffRepo
) -> None:
    per_extension = [
        diff_pb2.CommitDiffRequest.MaxPatchBytesForFileExtensionEntry(key=".md", value=10)
    ]
    diffs = await commit_diff(
        stub, repo, enforce_limits=True, max_files=100, max_lines=100000, max_bytes=10_000_000,
        max_patch_bytes=500000, max_patch_bytes_for_file_extension=per_extension,
    )  # fmt: skip

    files = by_path(diffs)
    assert files[b"README.md"].too_large and files[b"README.md"].patch == b""
    assert not files[b"long.txt"].too_large and files[b"long.txt"].patch == expected_patch(
        repo, b"long.txt"
    )


@pytest.mark.parametrize(
    ("mode", "flag"),
    [
        (diff_pb2.CommitDiffRequest.WHITESPACE_CHANGES_IGNORE, "--ignore-space-change"),
        (diff_pb2.CommitDiffRequest.WHITESPACE_CHANGES_IGNORE_ALL, "--ignore-all-space"),
    ],
)
async def test_whitespace_changes_leave_whitespace_only_files_with_empty_patches(
    stub: diff_pb2_grpc.DiffServiceStub, repo: DiffRepo, mode: int, flag: str
) -> None:
    diffs = await commit_diff(stub, repo, whitespace_changes=mode)

    files = by_path(diffs)
    assert files[b"spaces.txt"].patch == b""
    assert files[b"spaces.txt"].to_id == repo.object_id(repo.head, "spaces.txt")
    assert files[b"README.md"].patch == expected_patch(repo, b"README.md", flag)
    assert len([diff for diff in diffs if diff.to_path == b"spaces.txt"]) == 1


async def test_word_diff_mode_returns_porcelain_word_diffs(
    stub: diff_pb2_grpc.DiffServiceStub, repo: DiffRepo
) -> None:
    diffs = await commit_diff(stub, repo, diff_mode=diff_pb2.CommitDiffRequest.WORDDIFF)

    assert by_path(diffs)[b"README.md"].patch == b"@@ -1,2 +1,2 @@\n hello\n~\n-world\n+WORLD\n~\n"


async def test_commit_diff_of_a_sha256_repository(
    stub: diff_pb2_grpc.DiffServiceStub, tmp_path: Path
) -> None:
    repo = seed_diff_repo(tmp_path / "storage", "sha256.git", object_format="sha256")

    kind = [diff for diff in await commit_diff(stub, repo) if diff.to_path == b"kind"]

    assert kind[0].to_id == "0" * 64 and kind[1].from_id == "0" * 64
    assert len(kind[0].from_id) == 64 and kind[1].to_id == repo.object_id(repo.head, "kind")


@pytest.mark.parametrize(
    ("left", "right", "needle"),
    [
        ("", "HEAD", "left_commit_id"),
        ("HEAD", "", "right_commit_id"),
        ("--output=/tmp/x", "HEAD", "must not start with '-'"),
        ("HEAD", "-p", "must not start with '-'"),
        ("HEAD:README.md", "HEAD", "not allowed"),
    ],
)
async def test_commit_diff_refuses_bad_commit_ids(
    stub: diff_pb2_grpc.DiffServiceStub, repo: DiffRepo, left: str, right: str, needle: str
) -> None:
    request = diff_pb2.CommitDiffRequest(
        repository=repository(repo), left_commit_id=left, right_commit_id=right
    )
    with pytest.raises(aio.AioRpcError) as raised:
        [m async for m in stub.CommitDiff(request, metadata=auth(NODE_TOKEN), timeout=10)]
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in (raised.value.details() or "")


async def test_commit_diff_refuses_empty_paths(
    stub: diff_pb2_grpc.DiffServiceStub, repo: DiffRepo
) -> None:
    with pytest.raises(aio.AioRpcError) as raised:
        await commit_diff(stub, repo, paths=[b""])
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_commit_diff_of_an_unknown_commit_fails_precondition(
    stub: diff_pb2_grpc.DiffServiceStub, repo: DiffRepo
) -> None:
    request = diff_pb2.CommitDiffRequest(
        repository=repository(repo), left_commit_id="1" * 40, right_commit_id=repo.head
    )
    with pytest.raises(aio.AioRpcError) as raised:
        [m async for m in stub.CommitDiff(request, metadata=auth(NODE_TOKEN), timeout=10)]
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert str(repo.path) not in (raised.value.details() or "")


@pytest.mark.parametrize("method", ["CommitDiff", "RawDiff", "DiffStats"])
async def test_diff_of_a_missing_repository_is_not_found(
    stub: diff_pb2_grpc.DiffServiceStub, method: str, tmp_path: Path
) -> None:
    request_type = {
        "CommitDiff": diff_pb2.CommitDiffRequest,
        "RawDiff": diff_pb2.RawDiffRequest,
        "DiffStats": diff_pb2.DiffStatsRequest,
    }[method]
    request = request_type(
        repository=repository(relative_path="missing.git"),
        left_commit_id="HEAD~1",
        right_commit_id="HEAD",
    )
    with pytest.raises(aio.AioRpcError) as raised:
        [m async for m in getattr(stub, method)(request, metadata=auth(NODE_TOKEN), timeout=10)]
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert "missing.git" in (raised.value.details() or "")
    assert str(tmp_path) not in (raised.value.details() or "")


async def test_raw_diff_streams_gits_full_index_diff(
    stub: diff_pb2_grpc.DiffServiceStub, repo: DiffRepo
) -> None:
    request = diff_pb2.RawDiffRequest(
        repository=repository(repo), left_commit_id=repo.base, right_commit_id=repo.head
    )
    messages = [m async for m in stub.RawDiff(request, metadata=auth(NODE_TOKEN), timeout=30)]

    data = b"".join(message.data for message in messages)
    assert data == git_bytes(repo, "diff", "--full-index", repo.base, repo.head)
    assert len(messages) > 1
    assert (
        b"rename from docs/guide.txt" in data
        and b"Binary files a/logo.bin and b/logo.bin differ" in data
    )


@pytest.mark.parametrize(
    ("left", "right", "code"),
    [
        ("-R", "HEAD", grpc.StatusCode.INVALID_ARGUMENT),
        ("HEAD", "", grpc.StatusCode.INVALID_ARGUMENT),
        ("1" * 40, "HEAD", grpc.StatusCode.FAILED_PRECONDITION),
    ],
)
async def test_raw_diff_refuses_bad_commit_ids(
    stub: diff_pb2_grpc.DiffServiceStub,
    repo: DiffRepo,
    left: str,
    right: str,
    code: grpc.StatusCode,
) -> None:
    request = diff_pb2.RawDiffRequest(
        repository=repository(repo), left_commit_id=left, right_commit_id=right
    )
    with pytest.raises(aio.AioRpcError) as raised:
        [m async for m in stub.RawDiff(request, metadata=auth(NODE_TOKEN), timeout=10)]
    assert raised.value.code() == code


async def test_diff_stats_counts_lines_per_file(
    stub: diff_pb2_grpc.DiffServiceStub, repo: DiffRepo
) -> None:
    request = diff_pb2.DiffStatsRequest(
        repository=repository(repo), left_commit_id=repo.base, right_commit_id=repo.head
    )
    messages = [m async for m in stub.DiffStats(request, metadata=auth(NODE_TOKEN), timeout=30)]

    stats = {stat.path: stat for message in messages for stat in message.stats}
    assert (stats[b"README.md"].additions, stats[b"README.md"].deletions) == (1, 1)
    assert (stats[b"long.txt"].additions, stats[b"long.txt"].deletions) == (
        LONG_FILE_LINES,
        LONG_FILE_LINES,
    )
    assert (stats[b"added.txt"].additions, stats[b"added.txt"].deletions) == (1, 0)
    assert (stats[b"gone.txt"].additions, stats[b"gone.txt"].deletions) == (0, 1)
    assert stats[b"docs/manual.txt"].old_path == b"docs/guide.txt"
    assert (stats[b"docs/manual.txt"].additions, stats[b"docs/manual.txt"].deletions) == (0, 0)
    # Binary files count nothing, as in Gitaly.
    assert (stats[b"logo.bin"].additions, stats[b"logo.bin"].deletions) == (0, 0)
    assert stats[PATH_WITH_NEWLINE].old_path == b""
    assert set(stats) == set(changed_files(repo)) - {b"docs/guide.txt"}


@pytest.mark.parametrize(
    ("left", "right", "code"),
    [
        ("HEAD", "--cached", grpc.StatusCode.INVALID_ARGUMENT),
        ("", "HEAD", grpc.StatusCode.INVALID_ARGUMENT),
        ("HEAD", "2" * 40, grpc.StatusCode.FAILED_PRECONDITION),
    ],
)
async def test_diff_stats_refuses_bad_commit_ids(
    stub: diff_pb2_grpc.DiffServiceStub,
    repo: DiffRepo,
    left: str,
    right: str,
    code: grpc.StatusCode,
) -> None:
    request = diff_pb2.DiffStatsRequest(
        repository=repository(repo), left_commit_id=left, right_commit_id=right
    )
    with pytest.raises(aio.AioRpcError) as raised:
        [m async for m in stub.DiffStats(request, metadata=auth(NODE_TOKEN), timeout=10)]
    assert raised.value.code() == code


async def test_overflow_leaves_the_rest_of_a_large_diff_unread(
    stub: diff_pb2_grpc.DiffServiceStub, tmp_path: Path
) -> None:
    repo = seed_large_diff_repo(tmp_path / "storage")
    await commit_diff(stub, repo, paths=[b"a.txt"])  # the channel is connected
    fds = open_fds()

    diffs = await commit_diff(
        stub,
        repo,
        enforce_limits=True,
        max_files=1,
        max_lines=100000,
        max_bytes=10_000_000,
        max_patch_bytes=500000,
    )

    assert [diff.to_path for diff in diffs] == [b"a.txt", b""]
    assert diffs[1].overflow_marker
    await wait_for_no_git_children()
    await wait_for_fds(fds)


async def test_cancelling_a_commit_diff_kills_git_and_ends_the_call(
    stub: diff_pb2_grpc.DiffServiceStub, tmp_path: Path
) -> None:
    repo = seed_large_diff_repo(tmp_path / "storage")
    request = diff_pb2.CommitDiffRequest(
        repository=repository(repo), left_commit_id=repo.base, right_commit_id=repo.head
    )
    await commit_diff(stub, repo, paths=[b"a.txt"])  # the channel is connected
    fds = open_fds()
    call = stub.CommitDiff(request, metadata=auth(NODE_TOKEN), timeout=30)
    first = await call.read()
    assert isinstance(first, diff_pb2.CommitDiffResponse) and first.to_path == b"a.txt"
    await wait_for_git_blocked_writing()

    call.cancel()

    await wait_for_no_git_children()
    await wait_for_fds(fds)


def test_diff_header_quotes_paths_exactly_as_git_does(tmp_path: Path) -> None:
    names = [
        b"tab\there",
        b"back\\slash",
        b"del\x7fete",
        b"latin\xe9",
        b'q"uote',
        b"bell\x07",
        b"a b/c d",
    ]
    work = tmp_path / "work"
    git(["init", "-q", str(work)])
    for name in names:
        target = work / os.fsdecode(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"x\n")
    git(["add", "-A"], cwd=work)
    git(["commit", "-q", "-m", "names"], cwd=work)

    output = subprocess.run(
        ["git", "-c", "core.quotePath=true", "show", "--format=", "HEAD"],
        cwd=work, env=git_env(), capture_output=True, check=True, timeout=60,
    ).stdout  # fmt: skip

    headers = [line + b"\n" for line in output.split(b"\n") if line.startswith(b"diff --git ")]
    assert sorted(headers) == sorted(diff_header(name, name) for name in names)
