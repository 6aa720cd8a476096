"""Real git against a node's repository through `praefect.node.git_bridge`.

Async, so that tests can talk to an in-process node (whose server runs on
the test's event loop) as well as to node processes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from praefect.node.git_bridge import GIT_CONFIG_ALLOW_EXT, bridge_env, bridge_url
from tests.support.gitenv import git_env

GIT_TIMEOUT = 60.0


@dataclass(frozen=True)
class NodeRemote:
    """A repository on a node, as git reaches it through the bridge."""

    address: str
    storage: str
    relative_path: str
    token: str

    @property
    def url(self) -> str:
        return str(bridge_url())

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        return git_env({**bridge_env(self.address, self.storage, self.relative_path, self.token), **(extra or {})})


@dataclass(frozen=True)
class GitRun:
    returncode: int
    stdout: str
    stderr: str


async def bridged_git(
    args: Sequence[str],
    remote: NodeRemote,
    *,
    cwd: Path | None = None,
    extra_env: Mapping[str, str] | None = None,
    check: bool = True,
) -> GitRun:
    """Run ``git -c protocol.ext.allow=always ARGS`` with the bridge's environment."""
    process = await asyncio.create_subprocess_exec(
        "git",
        *GIT_CONFIG_ALLOW_EXT,
        *args,
        cwd=cwd,
        env=remote.env(extra_env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), GIT_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"git {' '.join(args)} did not finish within {GIT_TIMEOUT} s") from None
    run = GitRun(process.returncode or 0, stdout.decode(errors="replace"), stderr.decode(errors="replace"))
    if check and run.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed ({run.returncode}):\n{run.stderr}")
    return run


async def clone(remote: NodeRemote, destination: Path, *extra: str) -> GitRun:
    return await bridged_git(["clone", "--quiet", *extra, remote.url, str(destination)], remote)


async def push(remote: NodeRemote, work: Path, *refspecs: str, check: bool = True) -> GitRun:
    return await bridged_git(["push", "--quiet", remote.url, *refspecs], remote, cwd=work, check=check)
