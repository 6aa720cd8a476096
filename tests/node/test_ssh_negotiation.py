"""A fetch that needs several negotiation rounds (many `have`s the server
does not know before the shared history) completes through SSHUploadPack
with the real git client, in protocol v0 and v2, while output that may wait
would wait for a minute: negotiation never depends on the node's batching
of output."""

from __future__ import annotations

from pathlib import Path

import pytest

from praefect.node import git as node_git
from praefect.node.git_bridge import GIT_CONFIG_ALLOW_EXT
from praefect.node.server import NodeServer
from tests.node.conftest import NODE_TOKEN
from tests.support.bridge import NodeRemote
from tests.support.gitenv import git
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


@pytest.mark.parametrize("version", [0, 2])
async def test_a_fetch_with_many_rounds_of_haves_completes(node: NodeServer, tmp_path: Path, version: int) -> None:
    work, clone = diverged_pair(tmp_path, local_commits=LOCAL_COMMITS, server_commits=3)
    bare_copy(work, tmp_path / "storage" / REPO)
    assert node.bound_addr
    remote = NodeRemote(node.bound_addr, "default", REPO, NODE_TOKEN)
    trace = tmp_path / "trace.txt"
    env = {"GIT_TRACE_PACKET": str(trace)}
    if version == 2:
        env["GIT_PROTOCOL"] = "version=2"

    await run_git_within(
        [
            *GIT_CONFIG_ALLOW_EXT,
            "-c",
            f"protocol.version={version}",
            "fetch",
            remote.url,
            "+refs/heads/main:refs/remotes/node/main",
        ],
        cwd=clone,
        env=remote.env(env),
    )

    assert head_of(clone, "refs/remotes/node/main") == head_of(work)
    git(["fsck", "--no-progress"], cwd=clone)
    haves, rounds = negotiation_rounds(trace.read_text(errors="replace"))
    assert haves >= LOCAL_COMMITS and rounds >= 3, f"{haves} haves in {rounds} rounds: not a multi-round negotiation"
    if version == 2:
        assert "< version 2" in trace.read_text(errors="replace")
