"""UserCommitFiles' file actions applied to a tree, in memory.

The tree of the parent commit is listed once; each action then checks what
it needs (the file exists, the name is free) against that listing, exactly
in the order the client sent them, and the final listing is written as the
new tree. The checks and their messages are Gitaly's, so a client that
tells "A file with this name already exists" from other failures keeps
working.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from praefect.node.commit_writer import TreeEntry
from praefect.node.errors import InvalidArgument

REGULAR_MODE = "100644"
EXECUTABLE_MODE = "100755"
GITKEEP = b".gitkeep"


class IndexUpdateError(Exception):
    """An action that does not fit the tree: Gitaly answers these in the
    response's `index_error` field, not as a gRPC error."""

    def __init__(self, message: str, path: bytes) -> None:
        super().__init__(message)
        self.path = path

    @classmethod
    def file_exists(cls, path: bytes) -> IndexUpdateError:
        return cls("A file with this name already exists", path)

    @classmethod
    def file_not_found(cls, path: bytes) -> IndexUpdateError:
        return cls("A file with this name doesn't exist", path)

    @classmethod
    def directory_exists(cls, path: bytes) -> IndexUpdateError:
        return cls("A directory with this name already exists", path)


def validate_file_path(path: bytes, *, what: str = "file_path") -> bytes:
    """A path inside the tree: relative, no `.`/`..`/`.git` component, no
    empty component, no NUL. Returns it unchanged."""
    if not path:
        raise InvalidArgument(f"You must provide a file path: {what} is empty")
    shown = path.decode(errors="replace")
    if b"\0" in path:
        raise InvalidArgument(f"invalid {what} {shown!r}: contains a NUL byte")
    if path.startswith(b"/"):
        raise InvalidArgument(f"invalid {what} {shown!r}: must be relative to the repository root")
    parts = path.split(b"/")
    if any(part == b".." for part in parts):
        raise InvalidArgument(f"Path cannot include directory traversal: {what} {shown!r}")
    if any(part == b"" for part in parts):
        raise InvalidArgument(
            f"invalid path: {what} {shown!r} has an empty component ('//' or a trailing '/')"
        )
    if any(part == b"." for part in parts):
        raise InvalidArgument(f"invalid path: {what} {shown!r} has a '.' component")
    if any(part.lower() == b".git" for part in parts):
        raise InvalidArgument(f"invalid path: {what} {shown!r} has a '.git' component")
    return path


def _parents(path: bytes) -> Iterator[bytes]:
    """`a/b/c` -> `a`, `a/b`."""
    position = path.find(b"/")
    while position != -1:
        yield path[:position]
        position = path.find(b"/", position + 1)


@dataclass(slots=True)
class _File:
    mode: str
    oid: str


class TreeEditor:
    """The files of a tree, changed by UserCommitFiles actions."""

    def __init__(self, entries: Iterable[TreeEntry]) -> None:
        self._files: dict[bytes, _File] = {}
        # How many files each directory holds: a directory exists while > 0.
        self._directories: Counter[bytes] = Counter()
        for entry in entries:
            self._add(entry.path, entry.mode, entry.oid)

    def entries(self) -> list[TreeEntry]:
        return [TreeEntry(path, file.mode, file.oid) for path, file in sorted(self._files.items())]

    def mode_of(self, path: bytes) -> str | None:
        file = self._files.get(path)
        return file.mode if file else None

    def create(self, path: bytes, oid: str, *, executable: bool) -> None:
        self._require_free(path)
        self._add(path, EXECUTABLE_MODE if executable else REGULAR_MODE, oid)

    def create_directory(self, path: bytes, empty_blob: str) -> None:
        self._require_free(path)
        self._add(path + b"/" + GITKEEP, REGULAR_MODE, empty_blob)

    def update(self, path: bytes, oid: str) -> None:
        file = self._require_file(path)
        # A blob replacing a submodule becomes a regular file; otherwise the mode stays.
        file.mode = REGULAR_MODE if file.mode == "160000" else file.mode
        file.oid = oid

    def move(self, previous: bytes, path: bytes, oid: str | None) -> None:
        """Rename `previous` to `path`; `oid` None keeps the content (infer_content)."""
        file = self._require_file(previous)
        self._require_free(path)
        self._remove(previous)
        self._add(path, file.mode, oid if oid is not None else file.oid)

    def delete(self, path: bytes) -> None:
        self._require_file(path)
        self._remove(path)

    def chmod(self, path: bytes, *, executable: bool) -> None:
        file = self._require_file(path)
        file.mode = EXECUTABLE_MODE if executable else REGULAR_MODE

    def _require_file(self, path: bytes) -> _File:
        file = self._files.get(path)
        if file is None:
            raise IndexUpdateError.file_not_found(path)
        return file

    def _require_free(self, path: bytes) -> None:
        if path in self._files:
            raise IndexUpdateError.file_exists(path)
        if self._directories[path] > 0:
            raise IndexUpdateError.directory_exists(path)
        for parent in _parents(path):
            if parent in self._files:
                # `a/b` cannot be created while `a` is a file.
                raise IndexUpdateError.file_exists(parent)

    def _add(self, path: bytes, mode: str, oid: str) -> None:
        self._files[path] = _File(mode, oid)
        for parent in _parents(path):
            self._directories[parent] += 1

    def _remove(self, path: bytes) -> None:
        del self._files[path]
        for parent in _parents(path):
            self._directories[parent] -= 1
            if self._directories[parent] == 0:
                del self._directories[parent]
