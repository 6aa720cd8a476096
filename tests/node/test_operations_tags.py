"""UserCreateTag and UserDeleteTag."""

from __future__ import annotations

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
    git_bytes,
    ref_exists,
    repository,
    rev_parse,
    stub,
)


def create_tag_request(
    name: bytes, target: bytes, message: bytes = b"", **fields: Any
) -> operations_pb2.UserCreateTagRequest:
    values: dict[str, Any] = {
        "repository": repository("r.git"),
        "tag_name": name,
        "user": USER,
        "target_revision": target,
        "message": message,
        **fields,
    }
    return operations_pb2.UserCreateTagRequest(**values)


async def test_lightweight_tag_when_message_is_blank(tmp_path: Path, channel: aio.Channel) -> None:
    repo = clone_bare(tmp_path, "r.git", commits=2)
    tip = rev_parse(repo, "main")
    response = await stub(channel).UserCreateTag(
        create_tag_request(b"v1.0", b"main", b" \n"), metadata=METADATA
    )
    assert response.tag.name == b"v1.0"
    assert response.tag.id == tip
    assert response.tag.target_commit.id == tip
    assert not response.tag.message
    assert git_bytes(repo, "cat-file", "-t", "refs/tags/v1.0").strip() == b"commit"


async def test_annotated_tag_with_tagger_and_timestamp(
    tmp_path: Path, channel: aio.Channel
) -> None:
    repo = clone_bare(tmp_path, "r.git", commits=2)
    tip = rev_parse(repo, "main")
    response = await stub(channel).UserCreateTag(
        create_tag_request(b"v2.0", (tip or "").encode(), b"Release 2.0\n", timestamp=FIXED_TIME),
        metadata=METADATA,
    )
    tag_oid = rev_parse(repo, "refs/tags/v2.0")
    assert response.tag.id == tag_oid != tip
    assert response.tag.target_commit.id == tip
    assert response.tag.message.rstrip(b"\n") == b"Release 2.0"
    assert response.tag.tagger.name == b"Jane Doe"
    assert response.tag.tagger.date.seconds == FIXED_TIME.seconds
    raw = cat(repo, "refs/tags/v2.0")
    assert f"object {tip}\ntype commit\ntag v2.0\n".encode() in raw
    assert b"tagger Jane Doe <jane@example.com> 1700000000 +0100\n" in raw


async def test_annotated_tag_with_timestamp_is_the_same_object_in_two_repositories(
    tmp_path: Path, channel: aio.Channel
) -> None:
    """Same commits and same request give the same tag id (replicas agree)."""
    one = clone_bare(tmp_path, "r.git", commits=1)
    two = tmp_path / "storage" / "copy.git"
    git_bytes(one, "clone", "--bare", "-q", str(one), str(two))
    ids = []
    for relative_path in ("r.git", "copy.git"):
        request = create_tag_request(b"v1", b"main", b"msg", timestamp=FIXED_TIME)
        request.repository.relative_path = relative_path
        ids.append((await stub(channel).UserCreateTag(request, metadata=METADATA)).tag.id)
    assert ids[0] == ids[1] == rev_parse(two, "refs/tags/v1")


async def test_existing_tag_is_already_exists(tmp_path: Path, channel: aio.Channel) -> None:
    repo = clone_bare(tmp_path, "r.git", commits=2)
    await stub(channel).UserCreateTag(create_tag_request(b"v1", b"main"), metadata=METADATA)
    before = rev_parse(repo, "refs/tags/v1")
    with pytest.raises(aio.AioRpcError) as error:
        await stub(channel).UserCreateTag(
            create_tag_request(b"v1", b"main", b"again"), metadata=METADATA
        )
    assert error.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "exists already" in (error.value.details() or "")
    assert rev_parse(repo, "refs/tags/v1") == before


@pytest.mark.parametrize(
    ("name", "target", "message", "code", "fragment"),
    [
        (b"", b"main", b"", grpc.StatusCode.INVALID_ARGUMENT, "empty tag name"),
        (b"-v1", b"main", b"", grpc.StatusCode.INVALID_ARGUMENT, "'-'"),
        (b"v1..2", b"main", b"", grpc.StatusCode.INVALID_ARGUMENT, "tag name"),
        (b"v1", b"", b"", grpc.StatusCode.INVALID_ARGUMENT, "empty target revision"),
        (b"v1", b"--all", b"", grpc.StatusCode.INVALID_ARGUMENT, "target revision"),
        (b"v1", b"main", b"a\0b", grpc.StatusCode.INVALID_ARGUMENT, "NUL"),
        (b"v1", b"nope", b"", grpc.StatusCode.FAILED_PRECONDITION, "revspec 'nope' not found"),
    ],
)
async def test_create_tag_errors(
    tmp_path: Path,
    channel: aio.Channel,
    name: bytes,
    target: bytes,
    message: bytes,
    code: grpc.StatusCode,
    fragment: str,
) -> None:
    repo = clone_bare(tmp_path, "r.git", commits=1)
    with pytest.raises(aio.AioRpcError) as error:
        await stub(channel).UserCreateTag(
            create_tag_request(name, target, message), metadata=METADATA
        )
    assert error.value.code() == code
    assert fragment in (error.value.details() or "")
    assert git_bytes(repo, "for-each-ref", "refs/tags/") == b""


async def test_lightweight_tag_of_an_annotated_tag_points_at_its_commit(
    tmp_path: Path, channel: aio.Channel
) -> None:
    repo = clone_bare(tmp_path, "r.git", commits=1)
    await stub(channel).UserCreateTag(
        create_tag_request(b"annotated", b"main", b"note"), metadata=METADATA
    )
    response = await stub(channel).UserCreateTag(
        create_tag_request(b"light", b"refs/tags/annotated"), metadata=METADATA
    )
    assert response.tag.id == rev_parse(repo, "main") == rev_parse(repo, "refs/tags/light")


async def test_delete_tag(tmp_path: Path, channel: aio.Channel) -> None:
    repo = clone_bare(tmp_path, "r.git", commits=1)
    created = await stub(channel).UserCreateTag(
        create_tag_request(b"v1", b"main", b"m"), metadata=METADATA
    )
    response = await stub(channel).UserDeleteTag(
        operations_pb2.UserDeleteTagRequest(
            repository=repository("r.git"),
            tag_name=b"v1",
            user=USER,
            expected_old_oid=created.tag.id,
        ),
        metadata=METADATA,
    )
    assert not response.pre_receive_error
    assert not ref_exists(repo, "refs/tags/v1")


async def test_delete_missing_tag_fails_precondition(tmp_path: Path, channel: aio.Channel) -> None:
    clone_bare(tmp_path, "r.git", commits=1)
    with pytest.raises(aio.AioRpcError) as error:
        await stub(channel).UserDeleteTag(
            operations_pb2.UserDeleteTagRequest(
                repository=repository("r.git"), tag_name=b"nope", user=USER
            ),
            metadata=METADATA,
        )
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "tag not found" in (error.value.details() or "")


async def test_delete_tag_with_stale_expected_old_oid_keeps_it(
    tmp_path: Path, channel: aio.Channel
) -> None:
    repo = clone_bare(tmp_path, "r.git", commits=2)
    await stub(channel).UserCreateTag(create_tag_request(b"v1", b"main"), metadata=METADATA)
    with pytest.raises(aio.AioRpcError) as error:
        await stub(channel).UserDeleteTag(
            operations_pb2.UserDeleteTagRequest(
                repository=repository("r.git"),
                tag_name=b"v1",
                user=USER,
                expected_old_oid=rev_parse(repo, "main~1") or "",
            ),
            metadata=METADATA,
        )
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert ref_exists(repo, "refs/tags/v1")
