"""CommitService against real git repositories in the node's storage."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from grpc import aio

from praefect.protos.gitaly import commit_pb2, commit_pb2_grpc, shared_pb2
from tests.node.conftest import NODE_TOKEN, STORAGE
from tests.support.grpc_client import auth
from tests.support.repos import (
    ALICE,
    BASE_TIME,
    BIG_BLOB,
    BOB,
    SeededRepository,
    append_linear_commits,
    copy_repository,
    create_empty_repository,
    git_in,
    template_repository,
)


def node_auth() -> tuple[tuple[str, str], ...]:
    """Fresh token metadata: a v2 token is only valid for 30 s after it is made."""
    return auth(NODE_TOKEN)


FILES_AT_MAIN = [
    b"README.md",
    b"big.bin",
    b"docs/guide/intro.md",
    b"link",
    b"src/app.py",
    b"src/feature.py",
]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> SeededRepository:
    return template_repository(tmp_path_factory.mktemp("commit-history"))


@pytest.fixture
def repo(template: SeededRepository, tmp_path: Path) -> SeededRepository:
    return copy_repository(template, tmp_path / "storage")


@pytest.fixture
def stub(channel: aio.Channel) -> commit_pb2_grpc.CommitServiceStub:
    return commit_pb2_grpc.CommitServiceStub(channel)


def repository(
    repo: SeededRepository | None = None, relative_path: str = ""
) -> shared_pb2.Repository:
    return shared_pb2.Repository(
        storage_name=STORAGE, relative_path=relative_path or (repo.relative_path if repo else "")
    )


async def collect(call: Any) -> list[Any]:
    return [message async for message in call]


async def expect_error(call: Any, code: grpc.StatusCode) -> str:
    with pytest.raises(aio.AioRpcError) as caught:
        result = await collect(call) if hasattr(call, "__aiter__") else await call
        raise AssertionError(f"expected {code}, got a result: {result}")
    assert caught.value.code() == code, caught.value.details()
    return caught.value.details() or ""


def ids(responses: list[Any]) -> list[str]:
    return [commit.id for response in responses for commit in response.commits]


def names(repo: SeededRepository, *commits: str) -> list[str]:
    return [repo.oid(name) for name in commits]


# FindCommit


async def test_find_commit_fills_every_field(
    stub: commit_pb2_grpc.CommitServiceStub, repo: SeededRepository
) -> None:
    response = await stub.FindCommit(
        commit_pb2.FindCommitRequest(repository=repository(repo), revision=b"main~1"),
        metadata=node_auth(),
    )
    commit = response.commit
    assert commit.id == repo.oid("c4")
    assert commit.subject == b"Update README"
    assert commit.body == b"Update README\n" and commit.body_size == len(commit.body)
    assert commit.author.name == ALICE.name.encode() and commit.author.email == ALICE.email.encode()
    assert commit.author.date.seconds == repo.dates["c4"] and commit.author.timezone == b"+0200"
    assert commit.committer.date.seconds == repo.dates["c4"]
    assert list(commit.parent_ids) == [repo.oid("c2")]
    assert commit.tree_id == git_in(repo.path, "rev-parse", "main~1^{tree}")
    assert commit.signature_type == shared_pb2.NONE
    assert not commit.trailers


async def test_find_commit_peels_tags_and_parses_trailers(
    stub: commit_pb2_grpc.CommitServiceStub, repo: SeededRepository
) -> None:
    tagged = await stub.FindCommit(
        commit_pb2.FindCommitRequest(repository=repository(repo), revision=b"v1.1"),
        metadata=node_auth(),
    )
    assert tagged.commit.id == repo.oid("c4")
    response = await stub.FindCommit(
        commit_pb2.FindCommitRequest(
            repository=repository(repo), revision=b"feature", trailers=True
        ),
        metadata=node_auth(),
    )
    assert [(t.key, t.value) for t in response.commit.trailers] == [
        (b"Signed-off-by", b"Bob Builder <bob@example.com>"),
        (b"Reviewed-by", b"Alice Author <alice@example.com>"),
    ]


async def test_find_commit_truncates_long_bodies(
    stub: commit_pb2_grpc.CommitServiceStub, repo: SeededRepository
) -> None:
    message = "Long one\n\n" + "x" * 20000 + "\n"
    oid = git_in(repo.path, "commit-tree", "main^{tree}", "-p", "main", stdin=message.encode())
    response = await stub.FindCommit(
        commit_pb2.FindCommitRequest(repository=repository(repo), revision=oid.encode()),
        metadata=node_auth(),
    )
    assert response.commit.subject == b"Long one"
    assert len(response.commit.body) == 10 * 1024
    assert response.commit.body_size == len(message)


async def test_find_commit_missing_revision_is_an_empty_response(
    stub: commit_pb2_grpc.CommitServiceStub, repo: SeededRepository
) -> None:
    response = await stub.FindCommit(
        commit_pb2.FindCommitRequest(repository=repository(repo), revision=b"nope"),
        metadata=node_auth(),
    )
    assert not response.HasField("commit")


@pytest.mark.parametrize("revision", [b"", b"-main", b"--all", b"main:README.md", b"main branch"])
async def test_find_commit_bad_revision_is_invalid_argument(
    stub: commit_pb2_grpc.CommitServiceStub, repo: SeededRepository, revision: bytes
) -> None:
    await expect_error(
        stub.FindCommit(
            commit_pb2.FindCommitRequest(repository=repository(repo), revision=revision),
            metadata=node_auth(),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


# ListCommits


async def list_commits(
    stub: commit_pb2_grpc.CommitServiceStub, repo: SeededRepository, **fields: Any
) -> list[commit_pb2.ListCommitsResponse]:
    return await collect(
        stub.ListCommits(
            commit_pb2.ListCommitsRequest(repository=repository(repo), **fields),
            metadata=node_auth(),
        )
    )


async def test_list_commits_walks_history(
    stub: commit_pb2_grpc.CommitServiceStub, repo: SeededRepository
) -> None:
    assert ids(await list_commits(stub, repo, revisions=["main"])) == names(
        repo, "c5", "c4", "c3", "c2", "c1"
    )
    assert ids(await list_commits(stub, repo, revisions=["main", "^feature"])) == names(
        repo, "c5", "c4"
    )
    assert ids(await list_commits(stub, repo, revisions=["--all", "--not", "main"])) == names(
        repo, "c6"
    )
    assert ids(await list_commits(stub, repo, revisions=["main"], reverse=True)) == names(
        repo, "c1", "c2", "c3", "c4", "c5"
    )


async def test_list_commits_filters(
    stub: commit_pb2_grpc.CommitServiceStub, repo: SeededRepository
) -> None:
    assert ids(await list_commits(stub, repo, revisions=["main"], max_parents=1)) == names(
        repo, "c4", "c3", "c2", "c1"
    )
    assert ids(await list_commits(stub, repo, revisions=["main"], first_parent=True)) == names(
        repo, "c5", "c4", "c2", "c1"
    )
    assert ids(
        await list_commits(stub, repo, revisions=["main"], author=BOB.name.encode())
    ) == names(repo, "c3", "c2")
    assert ids(
        await list_commits(
            stub, repo, revisions=["main"], commit_message_patterns=[b"readme"], ignore_case=True
        )
    ) == names(repo, "c4")
    assert ids(
        await list_commits(stub, repo, revisions=["main"], paths=[b"src/feature.py"])
    ) == names(repo, "c3")
    assert ids(await list_commits(stub, repo, revisions=["main"], skip=3)) == names(
        repo, "c2", "c1"
    )
    after = Timestamp(seconds=BASE_TIME + 250)
    assert ids(await list_commits(stub, repo, revisions=["main"], after=after)) == names(
        repo, "c5", "c4"
    )
    assert ids(await list_commits(stub, repo, revisions=["main"], before=after)) == names(
        repo, "c3", "c2", "c1"
    )


async def test_list_commits_pages_with_next_cursor(
    stub: commit_pb2_grpc.CommitServiceStub, repo: SeededRepository
) -> None:
    first = await list_commits(
        stub, repo, revisions=["main"], pagination_params=shared_pb2.PaginationParameter(limit=2)
    )
    assert ids(first) == names(repo, "c5", "c4")
    cursor = first[-1].pagination_cursor.next_cursor
    assert cursor == repo.oid("c4")
    second = await list_commits(
        stub,
        repo,
        revisions=["main"],
        pagination_params=shared_pb2.PaginationParameter(page_token=cursor, limit=3),
    )
    assert ids(second) == names(repo, "c3", "c2", "c1")
    assert not second[-1].pagination_cursor.next_cursor


async def test_list_commits_streams_in_batches(
    stub: commit_pb2_grpc.CommitServiceStub, repo: SeededRepository
) -> None:
    append_linear_commits(repo.path, "main", 45)
    responses = await list_commits(stub, repo, revisions=["main"])
    sizes = [len(r.commits) for r in responses]
    assert sum(sizes) == 50 and max(sizes) == 20 and len(sizes) == 3


@pytest.mark.parametrize("revisions", [[], ["-n1"], ["--output=/tmp/x"], ["main", "bad revision"]])
async def test_list_commits_bad_revisions_are_invalid_argument(
    stub: commit_pb2_grpc.CommitServiceStub, repo: SeededRepository, revisions: list[str]
) -> None:
    await expect_error(
        stub.ListCommits(
            commit_pb2.ListCommitsRequest(repository=repository(repo), revisions=revisions),
            metadata=node_auth(),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


async def test_list_commits_unknown_revision_is_not_found(
    stub: commit_pb2_grpc.CommitServiceStub, repo: SeededRepository
) -> None:
    details = await expect_error(
        stub.ListCommits(
            commit_pb2.ListCommitsRequest(repository=repository(repo), revisions=["nope"]),
            metadata=node_auth(),
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    assert "nope" in details


# CountCommits


async def count(
    stub: commit_pb2_grpc.CommitServiceStub, repo: SeededRepository, **fields: Any
) -> int:
    response = await stub.CountCommits(
        commit_pb2.CountCommitsRequest(repository=repository(repo), **fields), metadata=node_auth()
    )
    return int(response.count)


async def test_count_commits(
    stub: commit_pb2_grpc.CommitServiceStub, repo: SeededRepository
) -> None:
    assert await count(stub, repo, revision=b"main") == 5
    assert await count(stub, repo, all=True) == 6
    assert await count(stub, repo, revision=b"main", first_parent=True) == 4
    assert await count(stub, repo, revision=b"main", path=b"src/feature.py") == 1
    assert await count(stub, repo, revision=b"main", max_count=2) == 2
    assert await count(stub, repo, revision=b"main", after=Timestamp(seconds=BASE_TIME + 250)) == 2
    assert await count(stub, repo, revision=b"feature..main") == 2
    assert await count(stub, repo, revision=b"nope") == 0


@pytest.mark.parametrize("fields", [{}, {"revision": b"--all"}])
async def test_count_commits_bad_requests_are_invalid_argument(
    stub: commit_pb2_grpc.CommitServiceStub, repo: SeededRepository, fields: dict[str, Any]
) -> None:
    await expect_error(
        stub.CountCommits(
            commit_pb2.CountCommitsRequest(repository=repository(repo), **fields),
            metadata=node_auth(),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


# CommitIsAncestor


async def test_commit_is_ancestor(
    stub: commit_pb2_grpc.CommitServiceStub, repo: SeededRepository
) -> None:
    def request(ancestor: str, child: str) -> commit_pb2.CommitIsAncestorRequest:
        return commit_pb2.CommitIsAncestorRequest(
            repository=repository(repo), ancestor_id=ancestor, child_id=child
        )

    assert (
        await stub.CommitIsAncestor(request(repo.oid("c1"), repo.oid("c5")), metadata=node_auth())
    ).value is True
    assert (
        await stub.CommitIsAncestor(request(repo.oid("c6"), repo.oid("c5")), metadata=node_auth())
    ).value is False
    assert (
        await stub.CommitIsAncestor(request("1" * 40, repo.oid("c5")), metadata=node_auth())
    ).value is False


@pytest.mark.parametrize(
    "ancestor, child", [("", "main"), ("main", ""), ("-x", "main"), ("main", "--all")]
)
async def test_commit_is_ancestor_bad_ids_are_invalid_argument(
    stub: commit_pb2_grpc.CommitServiceStub, repo: SeededRepository, ancestor: str, child: str
) -> None:
    await expect_error(
        stub.CommitIsAncestor(
            commit_pb2.CommitIsAncestorRequest(
                repository=repository(repo), ancestor_id=ancestor, child_id=child
            ),
            metadata=node_auth(),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


# TreeEntry


async def tree_entry(
    stub: commit_pb2_grpc.CommitServiceStub,
    repo: SeededRepository,
    path: bytes,
    revision: bytes = b"main",
    **fields: Any,
) -> list[commit_pb2.TreeEntryResponse]:
    return await collect(
        stub.TreeEntry(
            commit_pb2.TreeEntryRequest(
                repository=repository(repo), revision=revision, path=path, **fields
            ),
            metadata=node_auth(),
        )
    )


async def test_tree_entry_small_blob(
    stub: commit_pb2_grpc.CommitServiceStub, repo: SeededRepository
) -> None:
    [response] = await tree_entry(stub, repo, b"README.md")
    assert response.type == commit_pb2.TreeEntryResponse.BLOB
    assert response.data == b"# Project\n\nNow with a feature.\n" and response.size == len(
        response.data
    )
    assert response.mode == 0o100644 and response.oid == git_in(
        repo.path, "rev-parse", "main:README.md"
    )


async def test_tree_entry_streams_a_large_blob_in_chunks(
    stub: commit_pb2_grpc.CommitServiceStub, repo: SeededRepository
) -> None:
    responses = await tree_entry(stub, repo, b"big.bin")
    assert len(responses) > 1
    assert b"".join(r.data for r in responses) == BIG_BLOB
    assert responses[0].size == len(BIG_BLOB) and responses[0].oid
    assert all(not r.oid for r in responses[1:])


async def test_tree_entry_limit_and_max_size(
    stub: commit_pb2_grpc.CommitServiceStub, repo: SeededRepository
) -> None:
    responses = await tree_entry(stub, repo, b"big.bin", limit=1000)
    assert b"".join(r.data for r in responses) == BIG_BLOB[:1000] and responses[0].size == len(
        BIG_BLOB
    )
    details = await expect_error(
        stub.TreeEntry(
            commit_pb2.TreeEntryRequest(
                repository=repository(repo), revision=b"main", path=b"big.bin", max_size=1000
            ),
            metadata=node_auth(),
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert "102400" in details


async def test_tree_entry_tree_symlink_and_submodule(
    stub: commit_pb2_grpc.CommitServiceStub, repo: SeededRepository
) -> None:
    [tree] = await tree_entry(stub, repo, b"docs/")
    assert tree.type == commit_pb2.TreeEntryResponse.TREE and not tree.data and tree.size > 0
    [link] = await tree_entry(stub, repo, b"link")
    assert link.mode == 0o120000 and link.data == b"README.md"
    submodule_tree = git_in(
        repo.path, "mktree", stdin=f"160000 commit {repo.oid('c1')}\tvendor\n".encode()
    )
    commit = git_in(repo.path, "commit-tree", submodule_tree, stdin=b"With a submodule\n")
    [gitlink] = await tree_entry(stub, repo, b"vendor", revision=commit.encode())
    assert (
        gitlink.type == commit_pb2.TreeEntryResponse.COMMIT
        and gitlink.oid == repo.oid("c1")
        and gitlink.mode == 0o160000
    )


@pytest.mark.parametrize("path", [b"nope.txt", b"docs/../README.md", b"src/app.py/x"])
async def test_tree_entry_missing_path_is_not_found(
    stub: commit_pb2_grpc.CommitServiceStub, repo: SeededRepository, path: bytes
) -> None:
    await expect_error(
        stub.TreeEntry(
            commit_pb2.TreeEntryRequest(repository=repository(repo), revision=b"main", path=path),
            metadata=node_auth(),
        ),
        grpc.StatusCode.NOT_FOUND,
    )


@pytest.mark.parametrize(
    "fields",
    [
        {"revision": b"main"},
        {"revision": b"-x", "path": b"a"},
        {"revision": b"main", "path": b"a", "limit": -1},
    ],
)
async def test_tree_entry_bad_requests_are_invalid_argument(
    stub: commit_pb2_grpc.CommitServiceStub, repo: SeededRepository, fields: dict[str, Any]
) -> None:
    await expect_error(
        stub.TreeEntry(
            commit_pb2.TreeEntryRequest(repository=repository(repo), **fields), metadata=node_auth()
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


# GetTreeEntries


async def tree_entries(
    stub: commit_pb2_grpc.CommitServiceStub, repo: SeededRepository, path: bytes, **fields: Any
) -> list[commit_pb2.GetTreeEntriesResponse]:
    fields.setdefault("revision", b"main")
    return await collect(
        stub.GetTreeEntries(
            commit_pb2.GetTreeEntriesRequest(repository=repository(repo), path=path, **fields),
            metadata=node_auth(),
        )
    )


def entries_of(responses: list[commit_pb2.GetTreeEntriesResponse]) -> list[commit_pb2.TreeEntry]:
    return [entry for response in responses for entry in response.entries]


async def test_get_tree_entries_of_the_root_with_flat_paths(
    stub: commit_pb2_grpc.CommitServiceStub, repo: SeededRepository
) -> None:
    entries = {e.path: e for e in entries_of(await tree_entries(stub, repo, b"."))}
    assert list(entries) == [b"README.md", b"big.bin", b"docs", b"link", b"src"]
    assert (
        entries[b"docs"].type == commit_pb2.TreeEntry.TREE
        and entries[b"docs"].flat_path == b"docs/guide"
    )
    assert entries[b"src"].flat_path == b"src"
    assert (
        entries[b"README.md"].type == commit_pb2.TreeEntry.BLOB
        and entries[b"README.md"].flat_path == b"README.md"
    )
    assert entries[b"README.md"].commit_oid == "main" and entries[b"README.md"].mode == 0o100644
    skipped = entries_of(await tree_entries(stub, repo, b".", skip_flat_paths=True))
    assert all(not e.flat_path for e in skipped)


async def test_get_tree_entries_of_a_directory_recursive_and_trees_first(
    stub: commit_pb2_grpc.CommitServiceStub, repo: SeededRepository
) -> None:
    assert [e.path for e in entries_of(await tree_entries(stub, repo, b"src"))] == [
        b"src/app.py",
        b"src/feature.py",
    ]
    recursive = [e.path for e in entries_of(await tree_entries(stub, repo, b".", recursive=True))]
    assert recursive == [
        b"README.md",
        b"big.bin",
        b"docs",
        b"docs/guide",
        b"docs/guide/intro.md",
        b"link",
        b"src",
        b"src/app.py",
        b"src/feature.py",
    ]
    ordered = [
        e.path
        for e in entries_of(
            await tree_entries(stub, repo, b".", sort=commit_pb2.GetTreeEntriesRequest.TREES_FIRST)
        )
    ]
    assert ordered == [b"docs", b"src", b"README.md", b"big.bin", b"link"]


async def test_get_tree_entries_paginates_with_cursor(
    stub: commit_pb2_grpc.CommitServiceStub, repo: SeededRepository
) -> None:
    seen: list[bytes] = []
    token = ""
    for _ in range(5):
        responses = await tree_entries(
            stub,
            repo,
            b".",
            pagination_params=shared_pb2.PaginationParameter(page_token=token, limit=2),
        )
        seen += [e.path for e in entries_of(responses)]
        token = responses[0].pagination_cursor.next_cursor
        if not token:
            break
        assert json.loads(base64.b64decode(token)) == {"file_name": seen[-1].decode()}
    assert seen == [b"README.md", b"big.bin", b"docs", b"link", b"src"]


async def test_get_tree_entries_missing_revision(
    stub: commit_pb2_grpc.CommitServiceStub, repo: SeededRepository
) -> None:
    await expect_error(
        stub.GetTreeEntries(
            commit_pb2.GetTreeEntriesRequest(
                repository=repository(repo), revision=b"nope", path=b"."
            ),
            metadata=node_auth(),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    await expect_error(
        stub.GetTreeEntries(
            commit_pb2.GetTreeEntriesRequest(
                repository=repository(repo), revision=b"nope", path=b".", recursive=True
            ),
            metadata=node_auth(),
        ),
        grpc.StatusCode.NOT_FOUND,
    )


@pytest.mark.parametrize(
    "fields",
    [
        {"revision": b"main"},
        {"revision": b"-x", "path": b"."},
        {
            "revision": b"main",
            "path": b".",
            "pagination_params": shared_pb2.PaginationParameter(page_token="nope", limit=1),
        },
    ],
)
async def test_get_tree_entries_bad_requests_are_invalid_argument(
    stub: commit_pb2_grpc.CommitServiceStub, repo: SeededRepository, fields: dict[str, Any]
) -> None:
    await expect_error(
        stub.GetTreeEntries(
            commit_pb2.GetTreeEntriesRequest(repository=repository(repo), **fields),
            metadata=node_auth(),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


# ListFiles


async def list_files(
    stub: commit_pb2_grpc.CommitServiceStub, repo_path: str, revision: bytes = b""
) -> list[bytes]:
    responses = await collect(
        stub.ListFiles(
            commit_pb2.ListFilesRequest(
                repository=repository(relative_path=repo_path), revision=revision
            ),
            metadata=node_auth(),
        )
    )
    return [path for response in responses for path in response.paths]


async def test_list_files(stub: commit_pb2_grpc.CommitServiceStub, repo: SeededRepository) -> None:
    assert await list_files(stub, repo.relative_path) == FILES_AT_MAIN
    assert await list_files(stub, repo.relative_path, b"stale") == [
        b"README.md",
        b"docs/guide/intro.md",
    ]
    assert await list_files(stub, repo.relative_path, b"nope") == []


async def test_list_files_errors(
    stub: commit_pb2_grpc.CommitServiceStub, repo: SeededRepository, tmp_path: Path
) -> None:
    await expect_error(
        stub.ListFiles(
            commit_pb2.ListFilesRequest(repository=repository(repo), revision=b"-r"),
            metadata=node_auth(),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    create_empty_repository(tmp_path / "storage", "empty.git")
    await expect_error(
        stub.ListFiles(
            commit_pb2.ListFilesRequest(repository=repository(relative_path="empty.git")),
            metadata=node_auth(),
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    )


# LastCommitForPath


async def last_commit(
    stub: commit_pb2_grpc.CommitServiceStub,
    repo: SeededRepository,
    path: bytes,
    revision: bytes = b"main",
) -> commit_pb2.LastCommitForPathResponse:
    response: commit_pb2.LastCommitForPathResponse = await stub.LastCommitForPath(
        commit_pb2.LastCommitForPathRequest(
            repository=repository(repo), revision=revision, path=path
        ),
        metadata=node_auth(),
    )
    return response


async def test_last_commit_for_path(
    stub: commit_pb2_grpc.CommitServiceStub, repo: SeededRepository
) -> None:
    assert (await last_commit(stub, repo, b"README.md")).commit.id == repo.oid("c4")
    assert (await last_commit(stub, repo, b"src/feature.py")).commit.id == repo.oid("c3")
    assert (await last_commit(stub, repo, b"docs")).commit.id == repo.oid("c1")
    assert (await last_commit(stub, repo, b"")).commit.id == repo.oid("c5")
    assert not (await last_commit(stub, repo, b"nope.txt")).HasField("commit")
    assert not (await last_commit(stub, repo, b"README.md", b"nope")).HasField("commit")


async def test_last_commit_for_path_bad_revision_is_invalid_argument(
    stub: commit_pb2_grpc.CommitServiceStub, repo: SeededRepository
) -> None:
    await expect_error(
        stub.LastCommitForPath(
            commit_pb2.LastCommitForPathRequest(
                repository=repository(repo), revision=b"--output=x", path=b"a"
            ),
            metadata=node_auth(),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


# FindCommits


async def find_commits(
    stub: commit_pb2_grpc.CommitServiceStub, repo: SeededRepository, **fields: Any
) -> list[commit_pb2.FindCommitsResponse]:
    fields.setdefault("limit", 100)
    return await collect(
        stub.FindCommits(
            commit_pb2.FindCommitsRequest(repository=repository(repo), **fields),
            metadata=node_auth(),
        )
    )


async def test_find_commits_history_options(
    stub: commit_pb2_grpc.CommitServiceStub, repo: SeededRepository
) -> None:
    assert ids(await find_commits(stub, repo)) == names(repo, "c5", "c4", "c3", "c2", "c1")
    assert ids(await find_commits(stub, repo, revision=b"main", offset=1, limit=2)) == names(
        repo, "c4", "c3"
    )
    assert ids(await find_commits(stub, repo, revision=b"main", skip_merges=True)) == names(
        repo, "c4", "c3", "c2", "c1"
    )
    assert ids(await find_commits(stub, repo, revision=b"main", author=b"Bob")) == names(
        repo, "c3", "c2"
    )
    assert ids(await find_commits(stub, repo, revision=b"main", paths=[b"README.md"])) == names(
        repo, "c4", "c1"
    )
    assert ids(await find_commits(stub, repo, revision=b"main", first_parent=True)) == names(
        repo, "c5", "c4", "c2", "c1"
    )
    assert ids(await find_commits(stub, repo, all=True)) == names(
        repo, "c1", "c2", "c3", "c4", "c5", "c6"
    )
    assert ids(await find_commits(stub, repo, revision=b"main", message_regex="^add ")) == names(
        repo, "c3", "c2"
    )
    assert ids(await find_commits(stub, repo, revision=b"main", disable_walk=True)) == names(
        repo, "c5"
    )
    assert ids(await find_commits(stub, repo, revision=b"main", limit=0)) == []


async def test_find_commits_follow_with_offset(
    stub: commit_pb2_grpc.CommitServiceStub, repo: SeededRepository
) -> None:
    git_in(repo.path, "update-ref", "refs/heads/renamed", _renaming_commit(repo))
    found = ids(
        await find_commits(stub, repo, revision=b"renamed", paths=[b"src/renamed.py"], follow=True)
    )
    assert found[1:] == names(repo, "c3")
    assert ids(
        await find_commits(
            stub, repo, revision=b"renamed", paths=[b"src/renamed.py"], follow=True, offset=1
        )
    ) == names(repo, "c3")


def _renaming_commit(repo: SeededRepository) -> str:
    tree = git_in(repo.path, "ls-tree", "main:src")
    renamed = git_in(
        repo.path, "mktree", stdin=tree.replace("feature.py", "renamed.py").encode() + b"\n"
    )
    root = git_in(repo.path, "ls-tree", "main").replace(
        git_in(repo.path, "rev-parse", "main:src"), renamed
    )
    root_tree = git_in(repo.path, "mktree", stdin=root.encode() + b"\n")
    return git_in(repo.path, "commit-tree", root_tree, "-p", "main", stdin=b"Rename feature\n")


async def test_find_commits_with_trailers_stats_and_refs(
    stub: commit_pb2_grpc.CommitServiceStub, repo: SeededRepository
) -> None:
    responses = await find_commits(
        stub,
        repo,
        revision=b"main",
        trailers=True,
        include_shortstat=True,
        include_referenced_by=[b"refs/heads/", b"refs/tags/"],
    )
    commits = {c.id: c for r in responses for c in r.commits}
    feature = commits[repo.oid("c3")]
    assert [t.key for t in feature.trailers] == [b"Signed-off-by", b"Reviewed-by"]
    stats = commits[repo.oid("c4")].short_stats
    assert (stats.changed_files, stats.additions, stats.deletions) == (1, 2, 0)
    assert not commits[repo.oid("c5")].HasField("short_stats")
    assert sorted(commits[repo.oid("c5")].referenced_by) == [b"refs/heads/main", b"refs/tags/v2.0"]
    assert list(commits[repo.oid("c3")].referenced_by) == [b"refs/heads/feature"]


@pytest.mark.parametrize("fields", [{"revision": b"-n1"}, {"revision": b"main", "paths": [b""]}])
async def test_find_commits_bad_requests_are_invalid_argument(
    stub: commit_pb2_grpc.CommitServiceStub, repo: SeededRepository, fields: dict[str, Any]
) -> None:
    await expect_error(
        stub.FindCommits(
            commit_pb2.FindCommitsRequest(repository=repository(repo), limit=10, **fields),
            metadata=node_auth(),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


# CommitsByMessage


async def by_message(
    stub: commit_pb2_grpc.CommitServiceStub, repo: SeededRepository, **fields: Any
) -> list[str]:
    return ids(
        await collect(
            stub.CommitsByMessage(
                commit_pb2.CommitsByMessageRequest(repository=repository(repo), **fields),
                metadata=node_auth(),
            )
        )
    )


async def test_commits_by_message(
    stub: commit_pb2_grpc.CommitServiceStub, repo: SeededRepository
) -> None:
    assert await by_message(stub, repo, query="ADD") == names(repo, "c3", "c2")
    assert await by_message(stub, repo, query="add", path=b"src/feature.py") == names(repo, "c3")
    assert await by_message(stub, repo, query="add", offset=1, limit=1) == names(repo, "c2")
    assert await by_message(stub, repo, query="unmerged", revision=b"unmerged") == names(repo, "c6")
    assert await by_message(stub, repo, query="add", revision=b"nope") == []


@pytest.mark.parametrize("fields", [{"query": ""}, {"query": "x", "revision": b"-x"}])
async def test_commits_by_message_bad_requests_are_invalid_argument(
    stub: commit_pb2_grpc.CommitServiceStub, repo: SeededRepository, fields: dict[str, Any]
) -> None:
    await expect_error(
        stub.CommitsByMessage(
            commit_pb2.CommitsByMessageRequest(repository=repository(repo), **fields),
            metadata=node_auth(),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


# Every call: a missing repository is NOT_FOUND and names the path only.

MISSING = shared_pb2.Repository(storage_name=STORAGE, relative_path="missing/repo.git")
CALLS = [
    ("FindCommit", commit_pb2.FindCommitRequest(repository=MISSING, revision=b"main")),
    ("ListCommits", commit_pb2.ListCommitsRequest(repository=MISSING, revisions=["main"])),
    ("CountCommits", commit_pb2.CountCommitsRequest(repository=MISSING, revision=b"main")),
    (
        "CommitIsAncestor",
        commit_pb2.CommitIsAncestorRequest(repository=MISSING, ancestor_id="a", child_id="b"),
    ),
    ("TreeEntry", commit_pb2.TreeEntryRequest(repository=MISSING, revision=b"main", path=b"a")),
    (
        "GetTreeEntries",
        commit_pb2.GetTreeEntriesRequest(repository=MISSING, revision=b"main", path=b"."),
    ),
    ("ListFiles", commit_pb2.ListFilesRequest(repository=MISSING)),
    (
        "LastCommitForPath",
        commit_pb2.LastCommitForPathRequest(repository=MISSING, revision=b"main"),
    ),
    ("FindCommits", commit_pb2.FindCommitsRequest(repository=MISSING, limit=1)),
    ("CommitsByMessage", commit_pb2.CommitsByMessageRequest(repository=MISSING, query="x")),
]


@pytest.mark.parametrize("method, request_message", CALLS, ids=[name for name, _ in CALLS])
async def test_missing_repository_is_not_found(
    stub: commit_pb2_grpc.CommitServiceStub,
    repo: SeededRepository,
    tmp_path: Path,
    method: str,
    request_message: Any,
) -> None:
    details = await expect_error(
        getattr(stub, method)(request_message, metadata=node_auth()), grpc.StatusCode.NOT_FOUND
    )
    assert "missing/repo.git" in details and str(tmp_path) not in details
