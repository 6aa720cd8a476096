"""praefect.node.git_bridge: real git clone / fetch / push over SSH*Pack streams."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from grpc import aio

from praefect.node.git_bridge import (
    ADDRESS_ENV,
    RELATIVE_PATH_ENV,
    STORAGE_ENV,
    TOKEN_ENV,
    bridge_env,
    bridge_url,
)
from praefect.node.server import NodeServer
from tests.node.conftest import NODE_TOKEN
from tests.support.bridge import NodeRemote, bridged_git, clone, push
from tests.support.gitenv import git, git_env, make_work_repo
from tests.support.repository_calls import checksum, create, repo, repository_stub


@pytest.fixture
async def remote(node: NodeServer, channel: aio.Channel) -> NodeRemote:
    await create(repository_stub(channel), "group/project.git")
    assert node.bound_addr
    return NodeRemote(node.bound_addr, "default", "group/project.git", NODE_TOKEN)


def test_bridge_url_escapes_spaces_and_percent_signs() -> None:
    assert bridge_url("/opt/my python/bin/py%3") == "ext::/opt/my% python/bin/py%%3 -m praefect.node.git_bridge %S"
    assert bridge_url() == f"ext::{sys.executable.replace(' ', '% ')} -m praefect.node.git_bridge %S"


def test_bridge_env_carries_everything_and_the_url_carries_no_secret() -> None:
    env = bridge_env("tcp://127.0.0.1:1", "gitaly-1", "a/b.git", "s3cret")
    assert env == {
        ADDRESS_ENV: "tcp://127.0.0.1:1",
        STORAGE_ENV: "gitaly-1",
        RELATIVE_PATH_ENV: "a/b.git",
        TOKEN_ENV: "s3cret",
    }
    assert "s3cret" not in bridge_url()


async def test_push_then_clone_through_the_bridge(remote: NodeRemote, channel: aio.Channel, tmp_path: Path) -> None:
    work = make_work_repo(tmp_path / "work", commits=3)
    git(["tag", "-a", "-m", "first", "v1", "HEAD~2"], cwd=work)
    await push(remote, work, "main", "v1")

    await clone(remote, tmp_path / "clone")

    clone_dir = tmp_path / "clone"
    assert git(["rev-parse", "HEAD"], cwd=clone_dir) == git(["rev-parse", "HEAD"], cwd=work)
    assert git(["rev-parse", "v1^{commit}"], cwd=clone_dir) == git(["rev-parse", "HEAD~2"], cwd=work)
    git(["fsck", "--no-progress"], cwd=clone_dir)

    # A push from the clone lands on the node and is seen by a fetch elsewhere.
    (clone_dir / "new.txt").write_text("new\n")
    git(["add", "."], cwd=clone_dir)
    git(["commit", "-q", "-m", "from the clone"], cwd=clone_dir)
    await push(remote, clone_dir, "main")
    await bridged_git(["fetch", "--quiet", remote.url, "main"], remote, cwd=work)
    assert git(["rev-parse", "FETCH_HEAD"], cwd=work) == git(["rev-parse", "HEAD"], cwd=clone_dir)
    mirror = tmp_path / "storage" / "group" / "project.git"
    assert git(["rev-parse", "refs/heads/main"], cwd=mirror) == git(["rev-parse", "HEAD"], cwd=clone_dir)
    assert len(await checksum(repository_stub(channel), repo("group/project.git"))) == 40


async def test_git_protocol_is_forwarded(remote: NodeRemote, tmp_path: Path) -> None:
    await push(remote, make_work_repo(tmp_path / "work", commits=1), "main")

    v2 = await bridged_git(["ls-remote", remote.url], remote, extra_env={"GIT_PROTOCOL": "version=2", "GIT_TRACE_PACKET": "1"})
    v0 = await bridged_git(["ls-remote", remote.url], remote, extra_env={"GIT_TRACE_PACKET": "1"})

    assert "< version 2" in v2.stderr
    assert "version 2" not in v0.stderr
    assert "refs/heads/main" in v2.stdout and v2.stdout == v0.stdout


async def test_node_errors_reach_git_as_fatal_messages(node: NodeServer, tmp_path: Path) -> None:
    assert node.bound_addr
    missing = NodeRemote(node.bound_addr, "default", "nowhere.git", NODE_TOKEN)
    result = await bridged_git(["ls-remote", missing.url], missing, check=False)
    assert result.returncode != 0
    assert "NOT_FOUND" in result.stderr and "nowhere.git" in result.stderr

    wrong_token = NodeRemote(node.bound_addr, "default", "nowhere.git", "not-the-token")
    denied = await bridged_git(["ls-remote", wrong_token.url], wrong_token, check=False)
    assert denied.returncode != 0 and "PERMISSION_DENIED" in denied.stderr


async def test_an_interpreter_path_with_spaces_works(remote: NodeRemote, tmp_path: Path) -> None:
    await push(remote, make_work_repo(tmp_path / "work", commits=1), "main")
    wrapper_dir = tmp_path / "dir with spaces"
    wrapper_dir.mkdir()
    wrapper = wrapper_dir / "python wrapper"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)

    result = await bridged_git(["ls-remote", bridge_url(str(wrapper))], remote)
    assert "refs/heads/main" in result.stdout


@pytest.mark.parametrize(
    ("args", "env", "text"),
    [
        (["git-upload-pack"], {}, ADDRESS_ENV),
        (["git-frobnicate"], bridge_env("127.0.0.1:1", "s", "r", "t"), "unsupported service"),
        (["git-upload-pack"], bridge_env("http://x:1", "s", "r", "t"), ADDRESS_ENV),
    ],
    ids=["no-environment", "unknown-service", "bad-address"],
)
async def test_bridge_refuses_to_run_without_what_it_needs(args: list[str], env: dict[str, str], text: str) -> None:
    clean = {k: v for k, v in git_env().items() if not k.startswith("PRAEFECT_BRIDGE_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "praefect.node.git_bridge", *args,
        env={**clean, **env}, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 128
    assert text in stderr.decode()
    assert os.environ.get(TOKEN_ENV) is None  # nothing leaked into the test process
