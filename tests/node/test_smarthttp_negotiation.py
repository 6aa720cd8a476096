"""A fetch that needs several negotiation rounds (many `have`s the server
does not know before the shared history) completes through PostUploadPack
with the real git client over smart HTTP, in protocol v0 (one POST per
round) and v2, while output that may wait would wait for a minute."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from praefect.node import git as node_git
from praefect.node.server import NodeServer
from tests.node.conftest import NODE_TOKEN
from tests.support.gitenv import git, git_env
from tests.support.http_bridge import GitHttpBridge
from tests.support.pack_messages import (
    LONG_HOLD_SECONDS,
    diverged_pair,
    negotiation_rounds,
    run_git_within,
)
from tests.support.smarthttp_client import bare_copy, head_of

REPO = "group/project.git"
LOCAL_COMMITS = 150


@pytest.fixture(autouse=True)
def long_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node_git, "HOLD_SECONDS", LONG_HOLD_SECONDS)


@pytest.fixture
def bridge(node: NodeServer) -> Iterator[GitHttpBridge]:
    assert node.bound_addr
    with GitHttpBridge(node.bound_addr, NODE_TOKEN) as running:
        yield running


@pytest.mark.parametrize("version", [0, 2])
async def test_a_fetch_with_many_rounds_of_haves_completes(
    bridge: GitHttpBridge, tmp_path: Path, version: int
) -> None:
    work, clone = diverged_pair(tmp_path, local_commits=LOCAL_COMMITS, server_commits=3)
    bare_copy(work, tmp_path / "storage" / REPO)
    trace = tmp_path / "trace.txt"

    await run_git_within(
        ["-c", f"protocol.version={version}", "fetch", bridge.url(REPO), "+refs/heads/main:refs/remotes/node/main"],
        cwd=clone,
        env=git_env({"GIT_TRACE_PACKET": str(trace)}),
    )

    assert not bridge.errors
    assert head_of(clone, "refs/remotes/node/main") == head_of(work)
    git(["fsck", "--no-progress"], cwd=clone)
    haves, rounds = negotiation_rounds(trace.read_text(errors="replace"))
    assert haves >= LOCAL_COMMITS and rounds >= 3, f"{haves} haves in {rounds} rounds: not a multi-round negotiation"
    posts = [seen for seen in bridge.requests if seen.method == "POST" and seen.path.endswith("/git-upload-pack")]
    if version == 0:
        assert len(posts) >= 3  # stateless v0: one POST, one git process, per round
