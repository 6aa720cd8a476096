"""Turning a request's `Repository` message into a location on disk.

Every RPC that names a repository goes through `locate_repository`, so the
same checks and the same messages hold everywhere: the field must be set,
storage and path must be non-empty, the path must stay inside the storage
(see `StorageLocator`), and it must not point into the node's own working
area (`+praefect/`, where half-created repositories live).
"""

from __future__ import annotations

from pathlib import PurePosixPath

from praefect.node.context import NodeContext
from praefect.node.errors import InvalidArgument
from praefect.node.storage import RepositoryLocation
from praefect.protos.gitaly import shared_pb2

# The node's scratch space inside every storage; never a repository.
INTERNAL_DIRECTORY = "+praefect"


def locate_repository(
    ctx: NodeContext,
    repository: shared_pb2.Repository | None,
    *,
    field: str = "repository",
    must_exist: bool = True,
) -> RepositoryLocation:
    """Validate `repository` (the request's `field`) and find it on disk.

    Raises InvalidArgument for a missing field, empty storage or path, an
    unknown storage or a path that escapes the storage; NotFound when
    `must_exist` and there is no git repository there.
    """
    if repository is None or not repository.ByteSize():
        raise InvalidArgument(f"{field} is required: set {field}.storage_name and {field}.relative_path")
    if not repository.storage_name:
        raise InvalidArgument(f"empty {field}.storage_name: name the storage that holds the repository")
    if not repository.relative_path:
        raise InvalidArgument(f"empty {field}.relative_path: give the repository's path in its storage")
    parts = PurePosixPath(repository.relative_path).parts
    if parts and parts[0] == INTERNAL_DIRECTORY:
        raise InvalidArgument(
            f"{field}.relative_path {repository.relative_path!r} is inside the node's internal "
            f"directory {INTERNAL_DIRECTORY!r}: choose another path"
        )
    if must_exist:
        return ctx.locator.locate_existing(repository.storage_name, repository.relative_path)
    return ctx.locator.locate(repository.storage_name, repository.relative_path)
