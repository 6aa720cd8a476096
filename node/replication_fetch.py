"""``git fetch`` from the source node, relayed by the node's own event loop.

git's ``fd::`` transport (``git remote-fd``, part of git) speaks the git
protocol over a file descriptor that git inherits. The node makes a socket
pair, starts ``git fetch fd::<n> +refs/*:refs/*`` with one end as
descriptor ``n``, and pumps the other end to and from the source's
SSHUploadPack call (`SourceSession.relay`). No transport process of ours
starts: the processes are git's own (fetch, remote-fd, index-pack or
unpack-objects), and git negotiates as it always does, so only the objects
the target lacks travel.

When git has finished it closes its end: upload-pack on the source sees the
end of its input and exits, which ends the call. Cancelling the fetch kills
git's process group and reaps it, and the session's call is cancelled by
its owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

from praefect.node.errors import NodeError
from praefect.node.git import spawn_git
from praefect.node.replication_remote import SourceSession

#: after git exits, how long the source may take to end the call
RELAY_DRAIN_TIMEOUT = 10.0


def fetch_arguments(fd: int) -> list[str]:
    return [
        "-c",
        "protocol.fd.allow=always",
        "-c",
        "advice.fetchShowForcedUpdates=false",
        "fetch",
        "--quiet",
        "--prune",
        "--atomic",
        "--no-tags",
        "--no-write-fetch-head",
        "--no-auto-gc",
        # Neither applies to a node's bare repositories; both cost a walk
        # over the fetched commits.
        "--no-recurse-submodules",
        "--no-show-forced-updates",
        f"fd::{fd}",
        "+refs/*:refs/*",
    ]


async def fetch_from_session(git_dir: Path, session: SourceSession, storage: str) -> None:
    """Fetch every ref of the session's repository into `git_dir`, pruning
    what the source lacks; `storage` names the source in errors."""
    node_end, git_end = socket.socketpair()
    node_end.setblocking(False)
    with node_end, git_end:
        fd = git_end.fileno()
        async with spawn_git(fetch_arguments(fd), git_dir=git_dir, pass_fds=(fd,)) as process:
            # Only git holds its end now, so the relay sees EOF when git is done.
            git_end.close()
            relay = asyncio.create_task(session.relay(node_end))
            try:
                _, stderr = await process.communicate()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(relay), RELAY_DRAIN_TIMEOUT)
            finally:
                relay.cancel()
                await asyncio.gather(relay, return_exceptions=True)
    if process.returncode != 0:
        if session.error is not None:
            raise session.error
        detail = stderr.decode(errors="replace").strip()
        if session.stderr:
            detail += f" (the source's upload-pack: {session.stderr})"
        raise NodeError(f"fetching from the source storage {storage!r} failed: {detail}")
