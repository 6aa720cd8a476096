"""Maps (storage name, relative path) to a directory on disk, safely.

Every repository path that reaches git goes through `StorageLocator`, so the
checks live in one place: unknown storages, empty, absolute or `..` paths,
and symlinks that lead out of the storage root are refused before anything
on disk is touched.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from praefect.node.errors import InvalidArgument, NotFound


@dataclass(frozen=True, slots=True)
class RepositoryLocation:
    storage_name: str
    relative_path: str
    path: Path  # absolute; never shown to callers

    def __str__(self) -> str:
        return f"{self.storage_name}:{self.relative_path}"


class StorageLocator:
    def __init__(self, storages: Mapping[str, str | os.PathLike[str]]) -> None:
        if not storages:
            raise ValueError("a node needs at least one storage")
        self._roots = {name: Path(root).resolve() for name, root in storages.items()}

    @property
    def storage_names(self) -> tuple[str, ...]:
        return tuple(self._roots)

    def storage_root(self, storage_name: str) -> Path:
        try:
            return self._roots[storage_name]
        except KeyError:
            known = ", ".join(sorted(self._roots))
            raise InvalidArgument(
                f"unknown storage {storage_name!r}: this node serves {known}"
            ) from None

    def locate(self, storage_name: str, relative_path: str) -> RepositoryLocation:
        """Resolve a repository's directory without requiring it to exist."""
        root = self.storage_root(storage_name)
        clean = validate_relative_path(relative_path)
        candidate = root.joinpath(*clean.parts)
        # A symlink anywhere along the path may point outside the root;
        # resolve what exists and check containment.
        resolved = candidate.resolve()  # follows links, also dangling ones
        if resolved != root and root not in resolved.parents:
            raise InvalidArgument(
                f"relative path {relative_path!r} escapes the storage {storage_name!r} "
                "(through a symbolic link)"
            )
        return RepositoryLocation(storage_name, relative_path, candidate)

    def locate_existing(self, storage_name: str, relative_path: str) -> RepositoryLocation:
        """Resolve a repository's directory and require it to be a git repository."""
        location = self.locate(storage_name, relative_path)
        if not is_git_directory(location.path):
            raise NotFound(
                f"repository not found: {relative_path!r} does not exist in storage "
                f"{storage_name!r}"
            )
        return location


def validate_relative_path(relative_path: str) -> PurePosixPath:
    if not relative_path:
        raise InvalidArgument("empty relative path: set repository.relative_path")
    if "\x00" in relative_path:
        raise InvalidArgument("relative path contains a NUL byte")
    path = PurePosixPath(relative_path)
    if path.is_absolute():
        raise InvalidArgument(
            f"relative path {relative_path!r} is absolute: give a path relative to the storage"
        )
    if any(part == ".." for part in path.parts):
        raise InvalidArgument(
            f"relative path {relative_path!r} escapes the storage: '..' is not allowed"
        )
    if not path.parts or path.parts == (".",):
        raise InvalidArgument(f"relative path {relative_path!r} names the storage root")
    return path


def is_git_directory(path: Path) -> bool:
    return (path / "HEAD").is_file() and (path / "objects").is_dir() and (path / "refs").is_dir()
