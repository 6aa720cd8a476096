"""ReplicateRepository: make this node's copy equal to the source node's.

The call arrives at the target node with the target `repository` and the
`source` repository (on another storage). The source node's address and
token come from the call's ``gitaly-servers`` header (see
`praefect.node.gitaly_servers`). Steps:

1. Ask the source its object format (ObjectFormat RPC with the header's
   token). NOT_FOUND there means the repository was deleted on the source:
   the target repository is removed too (replicating the deletion), and the
   call succeeds.
2. If the target repository is missing, it is prepared in the storage's tmp
   area with the source's object format and only renamed into place once
   filled, so a half-replicated repository is never visible.
3. ``git fetch --prune --atomic`` with the refspec ``+refs/*:refs/*`` from the
   source through `praefect.node.git_bridge` (SSHUploadPack, protocol v2):
   git's own negotiation sends only the objects the target lacks; every ref
   ends up equal to the source's, deleted refs are pruned, force-pushed refs
   follow, tags come along.
4. HEAD is set to the source's HEAD (read with ls-refs, which also sees an
   unborn HEAD).

Replicating an up-to-date repository transfers no objects and changes
nothing. The target never writes to the source.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from pathlib import Path

import grpc
from grpc import aio

from praefect.node.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NodeError,
    NotFound,
)
from praefect.node.git import run_git, validate_ref_name
from praefect.node.git_bridge import GIT_CONFIG_ALLOW_EXT, bridge_env, bridge_url
from praefect.node.gitaly_servers import GitalyServer
from praefect.node.replication_remote import RemoteHead, source_head, source_object_format
from praefect.node.repository_files import (
    ensure_absent,
    init_bare,
    move_into_place,
    read_object_format,
    remove_repository,
    scratch_directory,
)
from praefect.node.storage import RepositoryLocation, is_git_directory
from praefect.protos.gitaly import shared_pb2

log = logging.getLogger("praefect.node.replication")

_OBJECT_ID = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")


def validate_source(target: shared_pb2.Repository, source: shared_pb2.Repository | None) -> shared_pb2.Repository:
    """Check the request's `source` field against the target."""
    if source is None or not source.ByteSize():
        raise InvalidArgument("source is required: set source.storage_name and source.relative_path")
    if not source.storage_name:
        raise InvalidArgument("empty source.storage_name: name the storage to replicate from")
    if not source.relative_path:
        raise InvalidArgument("empty source.relative_path: give the repository's path on the source")
    if source.storage_name == target.storage_name:
        raise InvalidArgument(
            f"source and target are both on storage {source.storage_name!r}: "
            "replicate from another storage"
        )
    return source


async def fetch_from_source(git_dir: Path, source: shared_pb2.Repository, server: GitalyServer) -> None:
    """Fetch every ref of `source` into `git_dir`, pruning what the source lacks."""
    env = bridge_env(server.address, source.storage_name, source.relative_path, server.token)
    # The bridge passes GIT_PROTOCOL on: the source answers in protocol v2,
    # so only the refs asked for are listed.
    env["GIT_PROTOCOL"] = "version=2"
    # git's environment is rebuilt from scratch; the bridge is Python and
    # must still find this installation when it is not a virtualenv.
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    result = await run_git(
        [
            *GIT_CONFIG_ALLOW_EXT,
            "fetch",
            "--quiet",
            "--prune",
            "--atomic",
            "--no-tags",
            "--no-write-fetch-head",
            "--no-auto-gc",
            bridge_url(),
            "+refs/*:refs/*",
        ],
        git_dir=git_dir,
        env=env,
        check=False,
    )
    if not result.ok:
        stderr = result.stderr.decode(errors="replace").strip()
        raise NodeError(f"fetching from the source storage {source.storage_name!r} failed: {stderr}")


async def apply_head(git_dir: Path, head: RemoteHead) -> None:
    """Point HEAD where the source's HEAD points (no write when it already does)."""
    if head.symref is not None:
        target = await validate_ref_name(head.symref, what="source HEAD")
        if not target.startswith("refs/"):
            raise FailedPrecondition(f"the source's HEAD points at {target!r}, which is not a reference")
        current = await run_git(["symbolic-ref", "--quiet", "HEAD"], git_dir=git_dir, check=False)
        if current.stdout.decode().strip() != target:
            await run_git(["symbolic-ref", "HEAD", target], git_dir=git_dir)
    elif head.oid is not None and _OBJECT_ID.match(head.oid):
        # A detached HEAD: its commit arrives only if some ref reaches it.
        present = await run_git(["cat-file", "-e", f"{head.oid}^{{commit}}"], git_dir=git_dir, check=False)
        if present.ok:
            await run_git(["update-ref", "--no-deref", "HEAD", head.oid], git_dir=git_dir)


async def _fill(git_dir: Path, channel: aio.Channel, source: shared_pb2.Repository, server: GitalyServer) -> None:
    await fetch_from_source(git_dir, source, server)
    await apply_head(git_dir, await source_head(channel, source, server))


async def replicate_repository(
    target: RepositoryLocation, source: shared_pb2.Repository, server: GitalyServer
) -> None:
    """Make `target` equal to `source` on `server` (see the module docstring)."""
    async with aio.insecure_channel(server.grpc_target) as channel:
        source_format = await source_object_format(channel, source, server)
        if source_format is None:
            if is_git_directory(target.path):
                log.info("source of %s is gone: removing the target (replicated deletion)", target)
                with contextlib.suppress(NotFound):  # removed concurrently: same outcome
                    await remove_repository(target)
            return
        format_name = "sha256" if source_format == shared_pb2.OBJECT_FORMAT_SHA256 else "sha1"

        if is_git_directory(target.path):
            target_format = await read_object_format(target.path)
            if target_format != format_name:
                raise FailedPrecondition(
                    f"repository {target.relative_path!r} uses {target_format} objects but the source "
                    f"uses {format_name}: remove the target repository and replicate again"
                )
            await _fill(target.path, channel, source, server)
            return

        ensure_absent(target)  # a non-repository in the way is the caller's to clear
        async with scratch_directory(target, "replicate-") as scratch:
            prepared = scratch / "repository.git"
            await init_bare(prepared, object_format=format_name)
            await _fill(prepared, channel, source, server)
            try:
                move_into_place(prepared, target)
            except AlreadyExists:
                raise NodeError(
                    f"repository {target.relative_path!r} was created while it was being replicated: "
                    "replicate again",
                    grpc.StatusCode.ABORTED,
                ) from None
