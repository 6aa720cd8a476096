"""ReplicateRepository: make this node's copy equal to the source node's.

The call arrives at the target node with the target `repository` and the
`source` repository (on another storage). The source node's address and
token come from the call's ``gitaly-servers`` header (see
`praefect.node.gitaly_servers`). Everything the target needs from the source
travels over one SSHUploadPack call (`praefect.node.replication_remote`) on
a channel kept per source node (`praefect.node.source_channels`):

1. The call's advertisement gives the source's object format. NOT_FOUND
   means the repository was deleted on the source: the target repository
   is removed too (replicating the deletion), and the call succeeds.
2. If the target repository is missing, it is prepared in the storage's tmp
   area with the source's object format and only renamed into place once
   filled, so a half-replicated repository is never visible.
3. One ``ls-refs`` lists HEAD (even unborn) and every ref of the source
   while ``git for-each-ref`` lists the target's. When they agree nothing is
   fetched: replicating an up-to-date repository costs one upload-pack on
   the source and one for-each-ref here.
4. Otherwise ``git fetch --prune --atomic +refs/*:refs/*`` runs over the
   same call (`praefect.node.replication_fetch`: git's ``fd::`` transport,
   relayed by this process): git's own negotiation sends only the objects
   the target lacks; every ref ends up equal to the source's, deleted refs
   are pruned, force-pushed refs follow, tags come along.
5. HEAD is pointed where the source's HEAD points, if it does not already.

The target never writes to the source.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import grpc

from praefect.node.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NodeError,
    NotFound,
)
from praefect.node.git import run_git, validate_ref_name
from praefect.node.gitaly_servers import GitalyServer
from praefect.node.replication_fetch import fetch_from_session
from praefect.node.replication_remote import (
    RemoteHead,
    SourceRefs,
    SourceSession,
    open_source_session,
)
from praefect.node.repository_files import (
    ensure_absent,
    init_bare,
    move_into_place,
    read_object_format,
    remove_repository,
    scratch_directory,
)
from praefect.node.source_channels import source_channel, source_channels
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


@dataclass(frozen=True, slots=True)
class LocalState:
    """The target's refs (name -> object id) and what its HEAD file says."""

    head: str
    refs: dict[str, str]

    @property
    def object_format(self) -> str | None:
        """Told by the length of any object id; None without refs."""
        oid = next(iter(self.refs.values()), None)
        if oid is None:
            return None
        return "sha256" if len(oid) == 64 else "sha1"


def _read_head(git_dir: Path) -> str:
    return (git_dir / "HEAD").read_text(encoding="utf-8", errors="replace").strip()


async def local_state(git_dir: Path) -> LocalState:
    listing = await run_git(["for-each-ref", "--format=%(objectname) %(refname)"], git_dir=git_dir)
    refs = {}
    for line in listing.stdout.decode(errors="replace").splitlines():
        oid, _, name = line.partition(" ")
        refs[name] = oid
    return LocalState(await asyncio.to_thread(_read_head, git_dir), refs)


async def apply_head(git_dir: Path, head: RemoteHead, current: str) -> None:
    """Point HEAD where the source's HEAD points; `current` is what the
    target's HEAD file says (no write when it already agrees)."""
    if head.symref is not None:
        if current == f"ref: {head.symref}":
            return
        target = await validate_ref_name(head.symref, what="source HEAD")
        if not target.startswith("refs/"):
            raise FailedPrecondition(f"the source's HEAD points at {target!r}, which is not a reference")
        await run_git(["symbolic-ref", "HEAD", target], git_dir=git_dir)
    elif head.oid is not None and _OBJECT_ID.match(head.oid) and current != head.oid:
        # A detached HEAD: its commit arrives only if some ref reaches it.
        present = await run_git(["cat-file", "-e", f"{head.oid}^{{commit}}"], git_dir=git_dir, check=False)
        if present.ok:
            await run_git(["update-ref", "--no-deref", "HEAD", head.oid], git_dir=git_dir)


async def _listing_and_local_state(session: SourceSession, git_dir: Path) -> tuple[SourceRefs, LocalState]:
    """Both listings at once: git reads the target's refs while the source answers."""
    local = asyncio.create_task(local_state(git_dir))
    try:
        return await session.list_refs(), await local
    finally:
        local.cancel()
        await asyncio.gather(local, return_exceptions=True)


async def _sync(git_dir: Path, session: SourceSession, listing: SourceRefs, local: LocalState, storage: str) -> None:
    """Fetch only when a ref differs, then align HEAD."""
    if listing.refs != local.refs:
        await fetch_from_session(git_dir, session, storage)
    else:
        await session.finish()
    await apply_head(git_dir, listing.head, local.head)


async def _update(target: RepositoryLocation, session: SourceSession, source: shared_pb2.Repository) -> None:
    listing, local = await _listing_and_local_state(session, target.path)
    target_format = local.object_format or await read_object_format(target.path)
    if target_format != session.object_format:
        raise FailedPrecondition(
            f"repository {target.relative_path!r} uses {target_format} objects but the source "
            f"uses {session.object_format}: remove the target repository and replicate again"
        )
    await _sync(target.path, session, listing, local, source.storage_name)


async def _create(target: RepositoryLocation, session: SourceSession, source: shared_pb2.Repository) -> None:
    ensure_absent(target)  # a non-repository in the way is the caller's to clear
    async with scratch_directory(target, "replicate-") as scratch:
        prepared = scratch / "repository.git"
        await init_bare(prepared, object_format=session.object_format)
        listing = await session.list_refs()
        fresh = LocalState(await asyncio.to_thread(_read_head, prepared), refs={})
        await _sync(prepared, session, listing, fresh, source.storage_name)
        try:
            move_into_place(prepared, target)
        except AlreadyExists:
            raise NodeError(
                f"repository {target.relative_path!r} was created while it was being replicated: "
                "replicate again",
                grpc.StatusCode.ABORTED,
            ) from None


async def replicate_repository(
    target: RepositoryLocation, source: shared_pb2.Repository, server: GitalyServer
) -> None:
    """Make `target` equal to `source` on `server` (see the module docstring)."""
    try:
        async with (
            source_channel(server.grpc_target) as channel,
            open_source_session(channel, source, server) as session,
        ):
            if session is None:
                if is_git_directory(target.path):
                    log.info("source of %s is gone: removing the target (replicated deletion)", target)
                    with contextlib.suppress(NotFound):  # removed concurrently: same outcome
                        await remove_repository(target)
                return
            if is_git_directory(target.path):
                await _update(target, session, source)
            else:
                await _create(target, session, source)
    except NodeError as error:
        if error.code == grpc.StatusCode.UNAVAILABLE:
            source_channels().discard(server.grpc_target)  # the next replication connects afresh
        raise
