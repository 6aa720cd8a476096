"""The node waits for its git processes without a thread per process."""

from __future__ import annotations

import asyncio
import threading

import pytest

from praefect.core.child_watcher import PidfdWatcher, _pidfd_supported, use_pidfd_child_watcher
from praefect.node.git import spawn_git
from praefect.node.server import NodeServer

pytestmark = pytest.mark.skipif(not _pidfd_supported(), reason="pidfd_open is not available here")


def _waitpid_threads() -> list[str]:
    # ThreadedChildWatcher names its threads waitpid-<n>
    return [thread.name for thread in threading.enumerate() if thread.name.startswith("waitpid-")]


async def test_git_processes_of_a_node_start_no_waiting_thread(node: NodeServer) -> None:
    assert node.bound_addr
    before = _waitpid_threads()
    async with spawn_git(["cat-file", "--batch"], stdin=True) as git:
        # git now waits on its stdin: a threaded watcher would have a thread blocked for it
        assert git.returncode is None
        assert _waitpid_threads() == before
        assert git.stdin is not None
        git.stdin.close()
        async with asyncio.timeout(10):
            assert await git.wait() == 0


def test_the_watcher_is_installed_once() -> None:
    assert use_pidfd_child_watcher() is True
    watcher = asyncio.get_child_watcher()
    assert isinstance(watcher, PidfdWatcher)
    assert use_pidfd_child_watcher() is True
    assert asyncio.get_child_watcher() is watcher
