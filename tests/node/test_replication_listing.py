"""What the target learns from the source's ``ls-refs`` and does with it:
refs gone on the source go on the target, HEAD follows (detached or not),
and a malformed listing is refused."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from praefect.node.errors import NodeError
from praefect.node.replication_remote import RemoteHead, parse_ls_refs
from tests.support.gitenv import git, make_work_repo
from tests.support.replication_pair import node_pair

OID = "1" * 40


def refs(path: Path) -> str:
    return git(["for-each-ref", "--format=%(objectname) %(refname)"], cwd=path)


async def test_refs_deleted_on_the_source_are_deleted_on_the_target(tmp_path: Path) -> None:
    async with node_pair(tmp_path / "nodes") as nodes:
        source = nodes.seed_source("project.git", make_work_repo(tmp_path / "work", commits=2))
        git(["branch", "topic", "main"], cwd=source)
        await nodes.replicate("project.git")
        assert "refs/heads/topic" in refs(nodes.root_b / "project.git")

        git(["update-ref", "-d", "refs/heads/topic"], cwd=source)
        await nodes.replicate("project.git")
        assert refs(nodes.root_b / "project.git") == refs(source)

        git(["update-ref", "-d", "refs/heads/main"], cwd=source)  # no refs left at all
        await nodes.replicate("project.git")
        assert refs(nodes.root_b / "project.git") == ""


async def test_a_detached_head_and_a_moved_head_follow_the_source(tmp_path: Path) -> None:
    async with node_pair(tmp_path / "nodes") as nodes:
        source = nodes.seed_source("project.git", make_work_repo(tmp_path / "work", commits=2))
        first = git(["rev-parse", "main~1"], cwd=source).strip()
        git(["branch", "stable", "main~1"], cwd=source)
        git(["update-ref", "--no-deref", "HEAD", first], cwd=source)
        await nodes.replicate("project.git")
        target = nodes.root_b / "project.git"
        assert (target / "HEAD").read_text().strip() == first

        git(["symbolic-ref", "HEAD", "refs/heads/stable"], cwd=source)
        await nodes.replicate("project.git")  # refs unchanged: only HEAD moves
        assert git(["symbolic-ref", "HEAD"], cwd=target).strip() == "refs/heads/stable"


def test_ls_refs_lines_give_head_and_refs() -> None:
    listed = parse_ls_refs(
        [
            f"{OID} HEAD symref-target:refs/heads/main".encode(),
            f"{OID} refs/heads/main".encode(),
            f"{'2' * 64} refs/tags/v1".encode(),
        ]
    )
    assert listed.head == RemoteHead("refs/heads/main", OID)
    assert listed.refs == {"refs/heads/main": OID, "refs/tags/v1": "2" * 64}
    assert parse_ls_refs([b"unborn HEAD symref-target:refs/heads/develop"]).head == RemoteHead("refs/heads/develop", None)
    assert parse_ls_refs([]).head == RemoteHead(None, None)


@pytest.mark.parametrize(("line", "text"), [(b"garbage", "malformed ls-refs line"), (b"xyz refs/heads/a", "malformed object id")])
def test_a_malformed_listing_is_refused(line: bytes, text: str) -> None:
    with pytest.raises(NodeError) as raised:
        parse_ls_refs([line])
    assert raised.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert text in raised.value.message
