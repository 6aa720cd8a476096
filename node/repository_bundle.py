"""Bundles: stream a repository out (CreateBundle) and create one from a bundle.

A bundle is ``git bundle create - --all``: every ref plus HEAD (as an object
id, since bundles cannot record symbolic refs). Creating a repository from a
bundle spools the upload to a file in the storage's tmp area, verifies it,
fetches all refs into a repository prepared in the tmp area, points HEAD at
the branch the bundle's HEAD named, and only then renames the repository
into place; any failure leaves nothing behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Any

from praefect.node.errors import FailedPrecondition, InvalidArgument
from praefect.node.git import GitCommandError, GitResult, run_git, spawn_git
from praefect.node.repository_files import (
    ensure_absent,
    init_bare,
    move_into_place,
    scratch_directory,
)
from praefect.node.storage import RepositoryLocation

BUNDLE_CHUNK_SIZE = 64 * 1024
_PREFERRED_DEFAULT_BRANCHES = ("refs/heads/main", "refs/heads/master")


async def has_refs(git_dir: Path) -> bool:
    result = await run_git(["for-each-ref", "--count=1", "--format=%(refname)"], git_dir=git_dir)
    return bool(result.stdout.strip())


async def _full_chunks(stream: asyncio.StreamReader) -> AsyncIterator[bytes]:
    """Chunks of exactly BUNDLE_CHUNK_SIZE bytes (the last one may be shorter)."""
    while True:
        try:
            chunk = await stream.readexactly(BUNDLE_CHUNK_SIZE)
        except asyncio.IncompleteReadError as partial:
            if partial.partial:
                yield partial.partial
            return
        yield chunk


async def stream_bundle(location: RepositoryLocation) -> AsyncGenerator[bytes, None]:
    """The bundle of every ref of `location`, produced by git as it is read."""
    if not await has_refs(location.path):
        raise FailedPrecondition(
            f"repository {location.relative_path!r} has no references: there is nothing to bundle"
        )
    args = ("bundle", "create", "--quiet", "-", "--all")
    async with spawn_git(args, git_dir=location.path) as process:
        assert process.stdout is not None and process.stderr is not None
        stderr = asyncio.create_task(process.stderr.read())
        try:
            async for chunk in _full_chunks(process.stdout):
                yield chunk
            returncode = await process.wait()
        finally:
            if not stderr.done():
                stderr.cancel()
        if returncode != 0:
            raise GitCommandError(GitResult(args, returncode, b"", await stderr))


def bundle_object_format(bundle: Path) -> str:
    """The object format a bundle's header declares (blocking: use a thread)."""
    with bundle.open("rb") as handle:
        signature = handle.readline(64)
        if signature == b"# v2 git bundle\n":
            return "sha1"
        if signature != b"# v3 git bundle\n":
            raise InvalidArgument("the data is not a git bundle: expected a v2 or v3 bundle header")
        object_format = "sha1"
        while (line := handle.readline(4096)).startswith(b"@"):
            key, _, value = line[1:].strip().partition(b"=")
            if key == b"object-format":
                object_format = value.decode(errors="replace")
        if object_format not in ("sha1", "sha256"):
            raise InvalidArgument(f"the bundle uses an unknown object format {object_format!r}")
        return object_format


async def _spool(target: Path, first: bytes, requests: AsyncIterator[Any]) -> int:
    size = 0
    handle = await asyncio.to_thread(target.open, "wb")
    try:
        if first:
            await asyncio.to_thread(handle.write, first)
            size += len(first)
        async for request in requests:
            if request.data:
                await asyncio.to_thread(handle.write, request.data)
                size += len(request.data)
    finally:
        await asyncio.to_thread(handle.close)
    return size


def _choose_head(heads: dict[str, str]) -> str | None:
    """The branch HEAD should name, from a bundle's ``ref -> oid`` list."""
    branches = sorted(ref for ref in heads if ref.startswith("refs/heads/"))
    head_oid = heads.get("HEAD")
    candidates = [ref for ref in branches if heads[ref] == head_oid] if head_oid else []
    for pool in (candidates, branches):
        for preferred in _PREFERRED_DEFAULT_BRANCHES:
            if preferred in pool:
                return preferred
        if pool:
            return pool[0]
    return None


def _failure(what: str, result: GitResult, scratch: Path) -> InvalidArgument:
    # git names the spooled file and the scratch repository; callers must
    # not see paths inside the storage.
    stderr = result.stderr.decode(errors="replace").strip().replace(str(scratch), "<upload>")
    return InvalidArgument(f"{what}: {stderr or f'git exited with {result.returncode}'}")


async def create_from_bundle(location: RepositoryLocation, first_data: bytes, requests: AsyncIterator[Any]) -> None:
    """Create the repository `location` from bundle bytes in a request stream."""
    ensure_absent(location)
    async with scratch_directory(location, "bundle-") as scratch:
        bundle = scratch / "upload.bundle"
        if await _spool(bundle, first_data, requests) == 0:
            raise InvalidArgument("no bundle data: send the bundle's bytes in the data field")
        object_format = await asyncio.to_thread(bundle_object_format, bundle)
        prepared = scratch / "repository.git"
        await init_bare(prepared, object_format=object_format)

        verify = await run_git(["bundle", "verify", "--quiet", str(bundle)], git_dir=prepared, check=False)
        if not verify.ok:
            raise _failure("invalid bundle", verify, scratch)
        listing = await run_git(["bundle", "list-heads", str(bundle)], git_dir=prepared)
        heads: dict[str, str] = {}
        for line in listing.stdout.decode().splitlines():
            oid, _, ref = line.partition(" ")
            heads[ref] = oid
        if not heads:
            raise InvalidArgument("the bundle contains no references: there is nothing to create")
        fetch = await run_git(
            ["fetch", "--quiet", "--atomic", "--no-write-fetch-head", str(bundle), "+refs/*:refs/*"],
            git_dir=prepared,
            check=False,
        )
        if not fetch.ok:
            raise _failure("cannot fetch from the bundle", fetch, scratch)

        head = _choose_head(heads)
        if head is not None:
            await run_git(["symbolic-ref", "HEAD", head], git_dir=prepared)
        move_into_place(prepared, location)
