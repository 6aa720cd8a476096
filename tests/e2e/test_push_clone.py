"""A real history through the whole cluster: git push through the gateway,
clone it back, and every node holds the same repository."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from praefect.core.demo.clients import Checksum, ClusterClients
from praefect.core.demo.cluster import NODE_NAMES, DemoCluster
from tests.support.e2e import (
    expected_checksum,
    history_with_large_file,
    poll_until,
    refs_with_objects,
)
from tests.support.gateway import run_git
from tests.support.gitenv import git

COMMITS = 3000
BRANCHES = 6
TAGS = 40
LARGE_FILE = 20 * 1024 * 1024
RELATIVE_PATH = "e2e/history.git"


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_a_pushed_history_clones_back_whole_and_every_node_has_it(
    cluster: DemoCluster, clients: ClusterClients, tmp_path: Path
) -> None:
    source = await asyncio.to_thread(
        history_with_large_file, tmp_path / "source.git", COMMITS, BRANCHES, TAGS, LARGE_FILE
    )
    pushed = refs_with_objects(source)
    assert len(pushed) == 1 + BRANCHES + TAGS
    url = cluster.clone_url(RELATIVE_PATH)

    # The repository does not exist yet: the push creates it.
    (
        await run_git(
            ["--git-dir", str(source), "push", url, "refs/heads/*:refs/heads/*", "refs/tags/*:refs/tags/*"],
            time_limit=60,
        )
    ).check()

    clone = tmp_path / "clone.git"
    (await run_git(["clone", "--mirror", url, str(clone)], time_limit=60)).check()
    assert refs_with_objects(clone) == pushed
    fsck = await run_git(["--git-dir", str(clone), "fsck", "--full", "--no-progress"], time_limit=60)
    assert fsck.returncode == 0, fsck.stderr
    large = git(["--git-dir", str(clone), "cat-file", "-s", "main:assets/large.bin"])
    assert int(large) == LARGE_FILE
    assert int(git(["--git-dir", str(clone), "rev-list", "--count", "main"])) == COMMITS + 1

    # Every node ends with the repository the client pushed: its checksum,
    # computed here from the clone's refs, on all three.
    want = expected_checksum(clone)
    seen: list[Checksum] = []

    async def every_node_has_it() -> bool:
        nonlocal seen
        seen = await clients.checksums(RELATIVE_PATH)
        return all(checksum.value == want for checksum in seen)

    try:
        await poll_until(every_node_has_it, within=45, what="the three nodes' checksums to be equal")
    except AssertionError as error:
        raise AssertionError(f"{error}: want {want}, nodes have {seen}") from None
    assert [checksum.node for checksum in seen] == list(NODE_NAMES)
    metadata = await clients.repository(RELATIVE_PATH)
    assert metadata is not None and metadata.up_to_date == tuple(NODE_NAMES)
