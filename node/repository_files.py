"""Repositories as directories: atomic creation and removal, size, format.

A repository must never be seen half made or half deleted. Both directions
go through the storage's scratch directory ``<root>/+praefect/tmp``, which is
on the same filesystem as the repositories, so that the visible step is a
single ``rename(2)``:

* create: ``git init`` (and any filling, e.g. a fetch) happens in a fresh
  directory under tmp, then the finished repository is renamed into place;
* remove: the repository is renamed into tmp, then deleted at leisure.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import stat
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from praefect.node.errors import AlreadyExists, InvalidArgument, NotFound
from praefect.node.git import run_git
from praefect.node.repository_args import INTERNAL_DIRECTORY
from praefect.node.storage import RepositoryLocation, is_git_directory
from praefect.protos.gitaly import shared_pb2

DEFAULT_BRANCH = "main"

_FORMAT_NAMES = {
    shared_pb2.OBJECT_FORMAT_UNSPECIFIED: "sha1",
    shared_pb2.OBJECT_FORMAT_SHA1: "sha1",
    shared_pb2.OBJECT_FORMAT_SHA256: "sha256",
}
_FORMAT_ENUMS = {"sha1": shared_pb2.OBJECT_FORMAT_SHA1, "sha256": shared_pb2.OBJECT_FORMAT_SHA256}


def storage_tmp_dir(location: RepositoryLocation) -> Path:
    """The scratch directory of the storage that holds `location`."""
    # location.path is the storage root joined with the relative path's parts.
    root: Path = location.path
    for _ in Path(location.relative_path).parts:
        root = root.parent
    return Path(root, INTERNAL_DIRECTORY, "tmp")


@contextlib.asynccontextmanager
async def scratch_directory(location: RepositoryLocation, prefix: str) -> AsyncIterator[Path]:
    """A fresh directory in the storage's tmp area, deleted on exit whatever happens."""
    tmp = storage_tmp_dir(location)
    tmp.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=tmp))
    try:
        yield path
    finally:
        await asyncio.shield(asyncio.to_thread(shutil.rmtree, path, True))


def object_format_name(object_format: int) -> str:
    try:
        return _FORMAT_NAMES[shared_pb2.ObjectFormat.ValueType(object_format)]
    except KeyError:
        raise InvalidArgument(
            f"unknown object_format {object_format}: use OBJECT_FORMAT_SHA1 or OBJECT_FORMAT_SHA256"
        ) from None


def object_format_enum(name: str) -> shared_pb2.ObjectFormat.ValueType:
    return _FORMAT_ENUMS[name]


async def init_bare(path: Path, *, object_format: str = "sha1", default_branch: str = DEFAULT_BRANCH) -> None:
    """`git init --bare` at `path` (which may exist and be empty)."""
    await run_git(
        [
            "init",
            "--bare",
            "--quiet",
            # No sample hooks or description: a node's repositories run no hooks.
            "--template=",
            f"--object-format={object_format}",
            f"--initial-branch={default_branch}",
            str(path),
        ]
    )


def ensure_absent(location: RepositoryLocation) -> None:
    if is_git_directory(location.path):
        raise AlreadyExists(f"repository {location.relative_path!r} already exists in storage {location.storage_name!r}")
    if location.path.exists() and (not location.path.is_dir() or any(location.path.iterdir())):
        raise AlreadyExists(
            f"{location.relative_path!r} in storage {location.storage_name!r} exists and is not a "
            "repository: remove it or choose another path"
        )


def move_into_place(prepared: Path, location: RepositoryLocation) -> None:
    """Rename a finished repository to its final path; AlreadyExists if one got there first."""
    ensure_absent(location)
    location.path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # rename(2) replaces an empty directory but never a non-empty one,
        # so of two concurrent creations exactly one wins.
        os.rename(prepared, location.path)
    except OSError as error:
        if error.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
            raise AlreadyExists(
                f"repository {location.relative_path!r} already exists in storage {location.storage_name!r}"
            ) from None
        raise


async def create_repository(
    location: RepositoryLocation, *, object_format: str = "sha1", default_branch: str = DEFAULT_BRANCH
) -> None:
    """Create an empty bare repository atomically."""
    ensure_absent(location)
    async with scratch_directory(location, "create-") as scratch:
        prepared = scratch / "repository.git"
        await init_bare(prepared, object_format=object_format, default_branch=default_branch)
        move_into_place(prepared, location)


async def remove_repository(location: RepositoryLocation) -> None:
    """Remove a repository so that it disappears in one step."""
    if not is_git_directory(location.path):
        raise NotFound(
            f"repository not found: {location.relative_path!r} does not exist in storage "
            f"{location.storage_name!r}"
        )
    async with scratch_directory(location, "remove-") as scratch:
        try:
            os.rename(location.path, scratch / "repository.git")
        except FileNotFoundError:
            raise NotFound(
                f"repository not found: {location.relative_path!r} was removed concurrently"
            ) from None


async def read_object_format(path: Path) -> str:
    result = await run_git(["rev-parse", "--show-object-format"], git_dir=path)
    name: str = result.stdout.decode().strip()
    return name


def directory_size_kib(path: Path) -> int:
    """Apparent size of all regular files under `path`, in KiB (rounded down).

    Blocking: call it through `asyncio.to_thread`.
    """
    total = 0
    for directory, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(FileNotFoundError):  # repacks delete files under us
                info = os.lstat(os.path.join(directory, name))
                if stat.S_ISREG(info.st_mode):
                    total += info.st_size
    return total // 1024
