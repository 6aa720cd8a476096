"""RefService against real git repositories in the node's storage."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio

from praefect.protos.gitaly import ref_pb2, ref_pb2_grpc, shared_pb2
from tests.node.conftest import NODE_TOKEN, STORAGE
from tests.support.grpc_client import auth
from tests.support.repos import (
    CAROL,
    SeededRepository,
    copy_repository,
    create_empty_repository,
    git_in,
    template_repository,
)

ZERO = "0" * 40


def node_auth() -> tuple[tuple[str, str], ...]:
    """Fresh token metadata: a v2 token is only valid for 30 s after it is made."""
    return auth(NODE_TOKEN)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> SeededRepository:
    return template_repository(tmp_path_factory.mktemp("ref-history"))


@pytest.fixture
def repo(template: SeededRepository, tmp_path: Path) -> SeededRepository:
    return copy_repository(template, tmp_path / "storage")


@pytest.fixture
def stub(channel: aio.Channel) -> ref_pb2_grpc.RefServiceStub:
    return ref_pb2_grpc.RefServiceStub(channel)


def repository(
    repo: SeededRepository | None = None, relative_path: str = ""
) -> shared_pb2.Repository:
    path = relative_path or (repo.relative_path if repo else "")
    return shared_pb2.Repository(storage_name=STORAGE, relative_path=path)


async def collect(call: Any) -> list[Any]:
    return [message async for message in call]


async def expect_error(awaitable: Any, code: grpc.StatusCode) -> str:
    with pytest.raises(aio.AioRpcError) as caught:
        result = (
            await awaitable if not hasattr(awaitable, "__aiter__") else await collect(awaitable)
        )
        raise AssertionError(f"expected {code}, got a result: {result}")
    assert caught.value.code() == code, caught.value.details()
    return caught.value.details() or ""


def refs_of(repo: SeededRepository) -> dict[str, str]:
    listing = git_in(repo.path, "for-each-ref", "--format=%(refname) %(objectname)")
    return dict(line.split(" ") for line in listing.splitlines())


# FindDefaultBranchName


async def test_find_default_branch_name_is_heads_target(
    stub: ref_pb2_grpc.RefServiceStub, repo: SeededRepository
) -> None:
    response = await stub.FindDefaultBranchName(
        ref_pb2.FindDefaultBranchNameRequest(repository=repository(repo)), metadata=node_auth()
    )
    assert response.name == b"refs/heads/main"


async def test_find_default_branch_name_falls_back_when_head_is_dangling(
    stub: ref_pb2_grpc.RefServiceStub, repo: SeededRepository
) -> None:
    git_in(repo.path, "symbolic-ref", "HEAD", "refs/heads/gone")
    request = ref_pb2.FindDefaultBranchNameRequest(repository=repository(repo))
    assert (
        await stub.FindDefaultBranchName(request, metadata=node_auth())
    ).name == b"refs/heads/main"
    request.head_only = True
    assert (
        await stub.FindDefaultBranchName(request, metadata=node_auth())
    ).name == b"refs/heads/gone"


async def test_find_default_branch_name_of_missing_repository_is_not_found(
    stub: ref_pb2_grpc.RefServiceStub, repo: SeededRepository, tmp_path: Path
) -> None:
    details = await expect_error(
        stub.FindDefaultBranchName(
            ref_pb2.FindDefaultBranchNameRequest(repository=repository(relative_path="nope.git")),
            metadata=node_auth(),
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    assert "nope.git" in details
    assert str(tmp_path) not in details


async def test_unknown_storage_is_invalid_argument(
    stub: ref_pb2_grpc.RefServiceStub, repo: SeededRepository
) -> None:
    request = ref_pb2.FindDefaultBranchNameRequest(
        repository=shared_pb2.Repository(storage_name="elsewhere", relative_path=repo.relative_path)
    )
    await expect_error(
        stub.FindDefaultBranchName(request, metadata=node_auth()), grpc.StatusCode.INVALID_ARGUMENT
    )


# FindLocalBranches


async def test_find_local_branches_by_name_with_target_commits(
    stub: ref_pb2_grpc.RefServiceStub, repo: SeededRepository
) -> None:
    responses = await collect(
        stub.FindLocalBranches(
            ref_pb2.FindLocalBranchesRequest(repository=repository(repo)), metadata=node_auth()
        )
    )
    branches = [branch for response in responses for branch in response.local_branches]
    assert [b.name for b in branches] == [
        b"refs/heads/feature",
        b"refs/heads/main",
        b"refs/heads/stale",
        b"refs/heads/unmerged",
    ]
    main = branches[1].target_commit
    assert main.id == repo.oid("c5")
    assert main.subject == b"Merge branch 'feature'"
    assert list(main.parent_ids) == [repo.oid("c4"), repo.oid("c3")]


async def test_find_local_branches_sorted_by_update_time(
    stub: ref_pb2_grpc.RefServiceStub, repo: SeededRepository
) -> None:
    request = ref_pb2.FindLocalBranchesRequest(
        repository=repository(repo), sort_by=ref_pb2.FindLocalBranchesRequest.UPDATED_DESC
    )
    responses = await collect(stub.FindLocalBranches(request, metadata=node_auth()))
    names = [b.name for r in responses for b in r.local_branches]
    assert names == [
        b"refs/heads/unmerged",
        b"refs/heads/main",
        b"refs/heads/feature",
        b"refs/heads/stale",
    ]
    request.sort_by = ref_pb2.FindLocalBranchesRequest.UPDATED_ASC
    responses = await collect(stub.FindLocalBranches(request, metadata=node_auth()))
    assert [b.name for r in responses for b in r.local_branches] == names[::-1]


async def test_find_local_branches_paginates_after_the_token(
    stub: ref_pb2_grpc.RefServiceStub, repo: SeededRepository
) -> None:
    request = ref_pb2.FindLocalBranchesRequest(
        repository=repository(repo),
        pagination_params=shared_pb2.PaginationParameter(page_token="refs/heads/feature", limit=2),
    )
    responses = await collect(stub.FindLocalBranches(request, metadata=node_auth()))
    assert [b.name for r in responses for b in r.local_branches] == [
        b"refs/heads/main",
        b"refs/heads/stale",
    ]


async def test_find_local_branches_unknown_page_token_is_invalid_argument(
    stub: ref_pb2_grpc.RefServiceStub, repo: SeededRepository
) -> None:
    request = ref_pb2.FindLocalBranchesRequest(
        repository=repository(repo),
        pagination_params=shared_pb2.PaginationParameter(page_token="refs/heads/nope", limit=2),
    )
    details = await expect_error(
        stub.FindLocalBranches(request, metadata=node_auth()), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "page token" in details


async def test_find_local_branches_streams_in_batches(
    stub: ref_pb2_grpc.RefServiceStub, repo: SeededRepository
) -> None:
    updates = "".join(f"create refs/heads/many-{i:03d} {repo.oid('c1')}\n" for i in range(45))
    git_in(repo.path, "update-ref", "--stdin", stdin=updates.encode())
    responses = await collect(
        stub.FindLocalBranches(
            ref_pb2.FindLocalBranchesRequest(repository=repository(repo)), metadata=node_auth()
        )
    )
    sizes = [len(r.local_branches) for r in responses]
    assert sum(sizes) == 49
    assert len(sizes) == 3 and max(sizes) == 20


# FindAllBranches


async def test_find_all_branches_lists_every_branch(
    stub: ref_pb2_grpc.RefServiceStub, repo: SeededRepository
) -> None:
    git_in(repo.path, "update-ref", "refs/remotes/origin/main", repo.oid("c4"))
    responses = await collect(
        stub.FindAllBranches(
            ref_pb2.FindAllBranchesRequest(repository=repository(repo)), metadata=node_auth()
        )
    )
    branches = {b.name: b.target.id for r in responses for b in r.branches}
    assert branches == {
        b"refs/heads/feature": repo.oid("c3"),
        b"refs/heads/main": repo.oid("c5"),
        b"refs/heads/stale": repo.oid("c1"),
        b"refs/heads/unmerged": repo.oid("c6"),
        b"refs/remotes/origin/main": repo.oid("c4"),
    }


async def test_find_all_branches_merged_only(
    stub: ref_pb2_grpc.RefServiceStub, repo: SeededRepository
) -> None:
    request = ref_pb2.FindAllBranchesRequest(repository=repository(repo), merged_only=True)
    responses = await collect(stub.FindAllBranches(request, metadata=node_auth()))
    assert [b.name for r in responses for b in r.branches] == [
        b"refs/heads/feature",
        b"refs/heads/main",
        b"refs/heads/stale",
    ]
    request.merged_branches[:] = [b"refs/heads/feature", b"refs/heads/unmerged"]
    responses = await collect(stub.FindAllBranches(request, metadata=node_auth()))
    assert [b.name for r in responses for b in r.branches] == [b"refs/heads/feature"]


async def test_find_all_branches_refuses_option_like_patterns(
    stub: ref_pb2_grpc.RefServiceStub, repo: SeededRepository
) -> None:
    request = ref_pb2.FindAllBranchesRequest(
        repository=repository(repo), merged_only=True, merged_branches=[b"--format=%(objectname)"]
    )
    await expect_error(
        stub.FindAllBranches(request, metadata=node_auth()), grpc.StatusCode.INVALID_ARGUMENT
    )


async def test_find_all_branches_of_missing_repository_is_not_found(
    stub: ref_pb2_grpc.RefServiceStub, repo: SeededRepository
) -> None:
    request = ref_pb2.FindAllBranchesRequest(repository=repository(relative_path="missing.git"))
    await expect_error(
        stub.FindAllBranches(request, metadata=node_auth()), grpc.StatusCode.NOT_FOUND
    )


# FindBranch


@pytest.mark.parametrize("name", [b"main", b"refs/heads/main"])
async def test_find_branch_by_short_or_full_name(
    stub: ref_pb2_grpc.RefServiceStub, repo: SeededRepository, name: bytes
) -> None:
    response = await stub.FindBranch(
        ref_pb2.FindBranchRequest(repository=repository(repo), name=name), metadata=node_auth()
    )
    assert response.branch.name == b"main"
    assert response.branch.target_commit.id == repo.oid("c5")


async def test_find_branch_missing_is_an_empty_response(
    stub: ref_pb2_grpc.RefServiceStub, repo: SeededRepository
) -> None:
    response = await stub.FindBranch(
        ref_pb2.FindBranchRequest(repository=repository(repo), name=b"nope"), metadata=node_auth()
    )
    assert not response.HasField("branch")


@pytest.mark.parametrize("name", [b"", b"a..b", b"with space"])
async def test_find_branch_bad_name_is_invalid_argument(
    stub: ref_pb2_grpc.RefServiceStub, repo: SeededRepository, name: bytes
) -> None:
    await expect_error(
        stub.FindBranch(
            ref_pb2.FindBranchRequest(repository=repository(repo), name=name), metadata=node_auth()
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


# FindAllTags


async def test_find_all_tags_lightweight_and_annotated(
    stub: ref_pb2_grpc.RefServiceStub, repo: SeededRepository
) -> None:
    responses = await collect(
        stub.FindAllTags(
            ref_pb2.FindAllTagsRequest(repository=repository(repo)), metadata=node_auth()
        )
    )
    tags = {tag.name: tag for r in responses for tag in r.tags}
    assert list(tags) == [b"v1.0", b"v1.1", b"v2.0"]
    light = tags[b"v1.0"]
    assert (
        light.id == repo.oid("c2")
        and light.target_commit.id == repo.oid("c2")
        and not light.message
    )
    annotated = tags[b"v1.1"]
    assert annotated.id == repo.tags["v1.1"] != repo.oid("c4")
    assert annotated.message == b"Release 1.1" and annotated.message_size == len(b"Release 1.1")
    assert (
        annotated.tagger.name == CAROL.name.encode()
        and annotated.tagger.email == CAROL.email.encode()
    )
    assert annotated.target_commit.id == repo.oid("c4")
    assert tags[b"v2.0"].message == b"Release 2.0\n\nWith the feature."


async def test_find_all_tags_sorted_by_version_descending_and_paginated(
    stub: ref_pb2_grpc.RefServiceStub, repo: SeededRepository
) -> None:
    request = ref_pb2.FindAllTagsRequest(
        repository=repository(repo),
        sort_by=ref_pb2.FindAllTagsRequest.SortBy(
            key=ref_pb2.FindAllTagsRequest.SortBy.VERSION_REFNAME, direction=shared_pb2.DESCENDING
        ),
    )
    responses = await collect(stub.FindAllTags(request, metadata=node_auth()))
    assert [t.name for r in responses for t in r.tags] == [b"v2.0", b"v1.1", b"v1.0"]
    request.pagination_params.CopyFrom(
        shared_pb2.PaginationParameter(page_token="refs/tags/v2.0", limit=1)
    )
    responses = await collect(stub.FindAllTags(request, metadata=node_auth()))
    assert [t.name for r in responses for t in r.tags] == [b"v1.1"]


async def test_find_all_tags_bad_sort_key_is_invalid_argument(
    stub: ref_pb2_grpc.RefServiceStub, repo: SeededRepository
) -> None:
    request = ref_pb2.FindAllTagsRequest(repository=repository(repo))
    request.sort_by.key = ref_pb2.FindAllTagsRequest.SortBy.Key.ValueType(42)
    await expect_error(
        stub.FindAllTags(request, metadata=node_auth()), grpc.StatusCode.INVALID_ARGUMENT
    )


# FindTag


async def test_find_tag_annotated_and_lightweight(
    stub: ref_pb2_grpc.RefServiceStub, repo: SeededRepository
) -> None:
    annotated = await stub.FindTag(
        ref_pb2.FindTagRequest(repository=repository(repo), tag_name=b"v2.0"), metadata=node_auth()
    )
    assert annotated.tag.id == repo.tags["v2.0"]
    assert annotated.tag.target_commit.id == repo.oid("c5")
    assert annotated.tag.tagger.date.seconds == repo.dates["c1"] + 600
    light = await stub.FindTag(
        ref_pb2.FindTagRequest(repository=repository(repo), tag_name=b"v1.0"), metadata=node_auth()
    )
    assert light.tag.name == b"v1.0" and light.tag.id == repo.oid("c2")


async def test_find_tag_missing_is_not_found(
    stub: ref_pb2_grpc.RefServiceStub, repo: SeededRepository
) -> None:
    details = await expect_error(
        stub.FindTag(
            ref_pb2.FindTagRequest(repository=repository(repo), tag_name=b"v9"),
            metadata=node_auth(),
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    assert "refs/tags/v9" in details


async def test_find_tag_empty_name_is_invalid_argument(
    stub: ref_pb2_grpc.RefServiceStub, repo: SeededRepository
) -> None:
    await expect_error(
        stub.FindTag(ref_pb2.FindTagRequest(repository=repository(repo)), metadata=node_auth()),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


# RefExists


async def test_ref_exists(stub: ref_pb2_grpc.RefServiceStub, repo: SeededRepository) -> None:
    exists = await stub.RefExists(
        ref_pb2.RefExistsRequest(repository=repository(repo), ref=b"refs/heads/main"),
        metadata=node_auth(),
    )
    missing = await stub.RefExists(
        ref_pb2.RefExistsRequest(repository=repository(repo), ref=b"refs/heads/no"),
        metadata=node_auth(),
    )
    assert exists.value is True and missing.value is False


@pytest.mark.parametrize("ref", [b"main", b"--all", b"refs/heads/a..b"])
async def test_ref_exists_needs_a_full_valid_ref_name(
    stub: ref_pb2_grpc.RefServiceStub, repo: SeededRepository, ref: bytes
) -> None:
    await expect_error(
        stub.RefExists(
            ref_pb2.RefExistsRequest(repository=repository(repo), ref=ref), metadata=node_auth()
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


# DeleteRefs


async def test_delete_refs_by_name(
    stub: ref_pb2_grpc.RefServiceStub, repo: SeededRepository
) -> None:
    response = await stub.DeleteRefs(
        ref_pb2.DeleteRefsRequest(
            repository=repository(repo), refs=[b"refs/heads/stale", b"refs/tags/v1.0"]
        ),
        metadata=node_auth(),
    )
    assert not response.git_error
    refs = refs_of(repo)
    assert (
        "refs/heads/stale" not in refs
        and "refs/tags/v1.0" not in refs
        and "refs/heads/main" in refs
    )


async def test_delete_refs_except_with_prefix(
    stub: ref_pb2_grpc.RefServiceStub, repo: SeededRepository
) -> None:
    await stub.DeleteRefs(
        ref_pb2.DeleteRefsRequest(
            repository=repository(repo), except_with_prefix=[b"refs/heads/main", b"refs/tags/"]
        ),
        metadata=node_auth(),
    )
    assert sorted(refs_of(repo)) == [
        "refs/heads/main",
        "refs/tags/v1.0",
        "refs/tags/v1.1",
        "refs/tags/v2.0",
    ]


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"refs": [b"refs/heads/stale"], "except_with_prefix": [b"refs/heads/"]},
        {"refs": [b"refs/heads/bad..name"]},
        {"except_with_prefix": [b""]},
    ],
)
async def test_delete_refs_bad_requests_are_invalid_argument(
    stub: ref_pb2_grpc.RefServiceStub, repo: SeededRepository, fields: dict[str, Any]
) -> None:
    before = refs_of(repo)
    await expect_error(
        stub.DeleteRefs(
            ref_pb2.DeleteRefsRequest(repository=repository(repo), **fields), metadata=node_auth()
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert refs_of(repo) == before


async def test_delete_refs_of_a_locked_ref_fails_and_deletes_nothing(
    stub: ref_pb2_grpc.RefServiceStub, repo: SeededRepository
) -> None:
    lock = repo.path / "refs" / "heads" / "stale.lock"
    lock.write_text("")
    before = refs_of(repo)
    details = await expect_error(
        stub.DeleteRefs(
            ref_pb2.DeleteRefsRequest(
                repository=repository(repo), refs=[b"refs/heads/feature", b"refs/heads/stale"]
            ),
            metadata=node_auth(),
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert "refs/heads/stale" in details and str(repo.path) not in details
    assert refs_of(repo) == before


# UpdateReferences


def updates_stream(
    *messages: ref_pb2.UpdateReferencesRequest,
) -> Iterator[ref_pb2.UpdateReferencesRequest]:
    yield from messages


def update(ref: str, new: str, old: str = "") -> ref_pb2.UpdateReferencesRequest.Update:
    return ref_pb2.UpdateReferencesRequest.Update(
        reference=ref.encode(), new_object_id=new.encode(), old_object_id=old.encode()
    )


async def test_update_references_applies_all_updates(
    stub: ref_pb2_grpc.RefServiceStub, repo: SeededRepository
) -> None:
    await stub.UpdateReferences(
        updates_stream(
            ref_pb2.UpdateReferencesRequest(
                repository=repository(repo),
                updates=[
                    update("refs/heads/new", repo.oid("c1"), ZERO),
                    update("refs/heads/main", repo.oid("c4"), repo.oid("c5")),
                ],
            ),
            ref_pb2.UpdateReferencesRequest(
                updates=[
                    update("refs/heads/stale", ZERO),
                    update("refs/heads/feature", repo.oid("c2")),
                ]
            ),
        ),
        metadata=node_auth(),
    )
    refs = refs_of(repo)
    assert refs["refs/heads/new"] == repo.oid("c1")
    assert refs["refs/heads/main"] == repo.oid("c4")
    assert refs["refs/heads/feature"] == repo.oid("c2")
    assert "refs/heads/stale" not in refs


async def test_update_references_with_a_stale_old_value_is_aborted_and_atomic(
    stub: ref_pb2_grpc.RefServiceStub, repo: SeededRepository
) -> None:
    before = refs_of(repo)
    details = await expect_error(
        stub.UpdateReferences(
            updates_stream(
                ref_pb2.UpdateReferencesRequest(
                    repository=repository(repo),
                    updates=[
                        update("refs/heads/other", repo.oid("c1")),
                        update("refs/heads/main", repo.oid("c4"), repo.oid("c1")),
                    ],
                )
            ),
            metadata=node_auth(),
        ),
        grpc.StatusCode.ABORTED,
    )
    assert "refs/heads/main" in details
    assert refs_of(repo) == before


async def test_update_references_creating_an_existing_ref_is_aborted(
    stub: ref_pb2_grpc.RefServiceStub, repo: SeededRepository
) -> None:
    await expect_error(
        stub.UpdateReferences(
            updates_stream(
                ref_pb2.UpdateReferencesRequest(
                    repository=repository(repo),
                    updates=[update("refs/heads/main", repo.oid("c1"), ZERO)],
                )
            ),
            metadata=node_auth(),
        ),
        grpc.StatusCode.ABORTED,
    )


async def test_update_references_to_a_missing_object_is_not_found(
    stub: ref_pb2_grpc.RefServiceStub, repo: SeededRepository
) -> None:
    await expect_error(
        stub.UpdateReferences(
            updates_stream(
                ref_pb2.UpdateReferencesRequest(
                    repository=repository(repo), updates=[update("refs/heads/x", "1" * 40)]
                )
            ),
            metadata=node_auth(),
        ),
        grpc.StatusCode.NOT_FOUND,
    )


@pytest.mark.parametrize(
    "bad",
    [
        update("main", "1" * 40),
        update("refs/heads/a b", "1" * 40),
        update("refs/heads/x", "not-an-oid"),
        update("refs/heads/x", "1" * 40, "short"),
    ],
)
async def test_update_references_invalid_updates(
    stub: ref_pb2_grpc.RefServiceStub,
    repo: SeededRepository,
    bad: ref_pb2.UpdateReferencesRequest.Update,
) -> None:
    await expect_error(
        stub.UpdateReferences(
            updates_stream(
                ref_pb2.UpdateReferencesRequest(repository=repository(repo), updates=[bad])
            ),
            metadata=node_auth(),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


async def test_update_references_repository_in_a_later_message_is_invalid(
    stub: ref_pb2_grpc.RefServiceStub, repo: SeededRepository
) -> None:
    await expect_error(
        stub.UpdateReferences(
            updates_stream(
                ref_pb2.UpdateReferencesRequest(
                    repository=repository(repo), updates=[update("refs/heads/x", repo.oid("c1"))]
                ),
                ref_pb2.UpdateReferencesRequest(
                    repository=repository(repo), updates=[update("refs/heads/y", repo.oid("c1"))]
                ),
            ),
            metadata=node_auth(),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "refs/heads/x" not in refs_of(repo)


async def test_update_references_of_missing_repository_is_not_found(
    stub: ref_pb2_grpc.RefServiceStub, repo: SeededRepository
) -> None:
    await expect_error(
        stub.UpdateReferences(
            updates_stream(
                ref_pb2.UpdateReferencesRequest(
                    repository=repository(relative_path="missing.git"),
                    updates=[update("refs/heads/x", repo.oid("c1"))],
                )
            ),
            metadata=node_auth(),
        ),
        grpc.StatusCode.NOT_FOUND,
    )


# ListRefs


async def list_refs(
    stub: ref_pb2_grpc.RefServiceStub, request: ref_pb2.ListRefsRequest
) -> list[ref_pb2.ListRefsResponse]:
    return await collect(stub.ListRefs(request, metadata=node_auth()))


async def test_list_refs_with_head_and_peeled_tags(
    stub: ref_pb2_grpc.RefServiceStub, repo: SeededRepository
) -> None:
    responses = await list_refs(
        stub,
        ref_pb2.ListRefsRequest(
            repository=repository(repo),
            patterns=[b"refs/heads/", b"refs/tags/"],
            head=True,
            peel_tags=True,
        ),
    )
    references = [
        (r.name, r.target, r.peeled_target) for response in responses for r in response.references
    ]
    assert references[0] == (b"HEAD", repo.oid("c5"), "")
    by_name = {name: (target, peeled) for name, target, peeled in references}
    assert by_name[b"refs/heads/unmerged"] == (repo.oid("c6"), "")
    assert by_name[b"refs/tags/v1.0"] == (repo.oid("c2"), "")
    assert by_name[b"refs/tags/v1.1"] == (repo.tags["v1.1"], repo.oid("c4"))
    assert len(references) == 1 + 4 + 3


async def test_list_refs_pointing_at_and_sorted_descending(
    stub: ref_pb2_grpc.RefServiceStub, repo: SeededRepository
) -> None:
    request = ref_pb2.ListRefsRequest(
        repository=repository(repo),
        patterns=[b"refs/"],
        pointing_at_oids=[repo.oid("c5").encode()],
        sort_by=ref_pb2.ListRefsRequest.SortBy(
            key=ref_pb2.ListRefsRequest.SortBy.REFNAME, direction=shared_pb2.DESCENDING
        ),
    )
    responses = await list_refs(stub, request)
    assert [r.name for response in responses for r in response.references] == [
        b"refs/tags/v2.0",
        b"refs/heads/main",
    ]


async def test_list_refs_pagination_follows_next_cursor(
    stub: ref_pb2_grpc.RefServiceStub, repo: SeededRepository
) -> None:
    everything = [
        r.name
        for resp in await list_refs(
            stub, ref_pb2.ListRefsRequest(repository=repository(repo), patterns=[b"refs/"])
        )
        for r in resp.references
    ]
    seen: list[bytes] = []
    token = ""
    for _ in range(10):
        request = ref_pb2.ListRefsRequest(
            repository=repository(repo),
            patterns=[b"refs/"],
            pagination_params=shared_pb2.PaginationParameter(page_token=token, limit=3),
        )
        responses = await list_refs(stub, request)
        seen += [r.name for response in responses for r in response.references]
        token = responses[-1].pagination_cursor.next_cursor
        if not token:
            break
        assert json.loads(base64.b64decode(token))["ref_name"] == seen[-1].decode()
    assert seen == everything and len(everything) == 7


async def test_list_refs_without_patterns_is_invalid_argument(
    stub: ref_pb2_grpc.RefServiceStub, repo: SeededRepository
) -> None:
    await expect_error(
        stub.ListRefs(ref_pb2.ListRefsRequest(repository=repository(repo)), metadata=node_auth()),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


@pytest.mark.parametrize(
    "fields",
    [{"patterns": [b"-x"]}, {"patterns": [b"refs/"], "pointing_at_oids": [b"--all"]}],
)
async def test_list_refs_refuses_option_like_input(
    stub: ref_pb2_grpc.RefServiceStub, repo: SeededRepository, fields: dict[str, Any]
) -> None:
    await expect_error(
        stub.ListRefs(
            ref_pb2.ListRefsRequest(repository=repository(repo), **fields), metadata=node_auth()
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


async def test_empty_repository_has_no_default_branch_or_branches(
    stub: ref_pb2_grpc.RefServiceStub, tmp_path: Path
) -> None:
    create_empty_repository(tmp_path / "storage", "empty.git")
    request = ref_pb2.FindDefaultBranchNameRequest(repository=repository(relative_path="empty.git"))
    assert (await stub.FindDefaultBranchName(request, metadata=node_auth())).name == b""
    responses = await collect(
        stub.FindLocalBranches(
            ref_pb2.FindLocalBranchesRequest(repository=repository(relative_path="empty.git")),
            metadata=node_auth(),
        )
    )
    assert responses == []


async def test_calls_need_the_node_token(
    stub: ref_pb2_grpc.RefServiceStub, repo: SeededRepository
) -> None:
    await expect_error(
        stub.FindDefaultBranchName(
            ref_pb2.FindDefaultBranchNameRequest(repository=repository(repo))
        ),
        grpc.StatusCode.UNAUTHENTICATED,
    )
