"""Bare repositories for the blob and diff service tests, made with real git.

`seed_diff_repo` builds a repository with two commits whose difference has
every kind of change the services must report: a text edit, a rename, a
binary change, a mode change, an addition, a deletion, a type change (file
to symlink), a whitespace-only edit, a long patch, paths that need quoting,
and a submodule. `copy_repo` puts a copy of it into a node's storage so that
tests can share one seeded template.
"""

from __future__ import annotations

import random
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from tests.support.gitenv import git

BIG_BLOB_SIZE = 3 * 1024 * 1024 + 12345
LONG_FILE_LINES = 4000

# Paths that git quotes or that look ambiguous in a `diff --git` header.
PATH_WITH_B_SLASH = b"dir b/x b/file.txt"
PATH_WITH_QUOTE = '\u00fcn\u00ef "q".txt'.encode()
PATH_WITH_NEWLINE = b"new\nline.txt"


@dataclass(frozen=True, slots=True)
class SeededRepo:
    """A seeded bare repository: where it is and its two commits."""

    path: Path
    relative_path: str
    object_format: str
    base: str  # first commit
    head: str  # second commit, child of base

    def object_id(self, revision: str, path: str) -> str:
        """The id of the blob, tree or submodule commit at `revision:path`."""
        return git(["--git-dir", str(self.path), "rev-parse", f"{revision}:{path}"]).strip()


@dataclass(frozen=True, slots=True)
class DiffRepo(SeededRepo):
    """The repository of `seed_diff_repo` and what the tests need to know about it."""

    big_blob: bytes  # content of big.bin (both commits)
    big_blob_oid: str
    readme_oid: str  # README.md at head
    submodule_commit: str  # the commit vendor/lib points at


def _write(root: Path, path: bytes | str, data: bytes | str) -> None:
    target = root / (path.decode() if isinstance(path, bytes) else path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data.encode() if isinstance(data, str) else data)


def seed_diff_repo(
    storage: Path, relative_path: str = "diff.git", *, object_format: str = "sha1"
) -> DiffRepo:
    """Create the bare repository `storage/relative_path` (see module docstring)."""
    rng = random.Random(5)
    big_blob = rng.randbytes(BIG_BLOB_SIZE)
    submodule_commit = ("1234abcd" * 8)[: 64 if object_format == "sha256" else 40]
    with tempfile.TemporaryDirectory(prefix="seed-diff-") as scratch:
        work = Path(scratch) / "work"
        git(["init", "-q", f"--object-format={object_format}", "-b", "main", str(work)])
        _write(work, "README.md", "hello\nworld\n")
        _write(work, "docs/guide.txt", "".join(f"guide line {i}\n" for i in range(20)))
        _write(work, "logo.bin", b"\x89PNG\r\n\x1a\n\x00\x01\x02" + bytes(range(256)))
        _write(work, "run.sh", "#!/bin/sh\necho run\n")
        _write(work, "big.bin", big_blob)
        _write(work, "long.txt", "".join(f"long line number {i}\n" for i in range(LONG_FILE_LINES)))
        _write(work, "gone.txt", "to be deleted\n")
        _write(work, "spaces.txt", "a  b\n")
        _write(work, "kind", "a regular file\n")
        _write(work, PATH_WITH_B_SLASH, "b slash\n")
        _write(work, PATH_WITH_QUOTE, "quote\n")
        _write(work, PATH_WITH_NEWLINE, "newline\n")
        (work / "link").symlink_to("README.md")
        git(["add", "-A"], cwd=work)
        git(
            ["update-index", "--add", "--cacheinfo", f"160000,{submodule_commit},vendor/lib"],
            cwd=work,
        )
        git(["commit", "-q", "-m", "base"], cwd=work)

        _write(work, "README.md", "hello\nWORLD\n")
        (work / "docs/guide.txt").rename(work / "docs/manual.txt")
        _write(work, "logo.bin", b"\x89PNG\r\n\x1a\n\x00\x03\x04" + bytes(range(255, -1, -1)))
        (work / "run.sh").chmod(0o755)
        _write(work, "long.txt", "".join(f"LONG LINE NUMBER {i}\n" for i in range(LONG_FILE_LINES)))
        (work / "gone.txt").unlink()
        _write(work, "spaces.txt", "a b\n")
        (work / "kind").unlink()
        (work / "kind").symlink_to("README.md")
        _write(work, PATH_WITH_B_SLASH, "b slash 2\n")
        _write(work, PATH_WITH_QUOTE, "quote 2\n")
        _write(work, PATH_WITH_NEWLINE, "newline 2\n")
        _write(work, "added.txt", "new file\n")
        git(["add", "-A"], cwd=work)
        # The submodule has no checkout, so `add -A` dropped it: keep it.
        git(
            ["update-index", "--add", "--cacheinfo", f"160000,{submodule_commit},vendor/lib"],
            cwd=work,
        )
        git(["commit", "-q", "-m", "head"], cwd=work)

        target = storage / relative_path
        target.parent.mkdir(parents=True, exist_ok=True)
        git(["clone", "-q", "--bare", "--no-local", str(work), str(target)])

    def rev(name: str) -> str:
        return git(["--git-dir", str(target), "rev-parse", name]).strip()

    return DiffRepo(
        path=target,
        relative_path=relative_path,
        object_format=object_format,
        base=rev("main~1"),
        head=rev("main"),
        big_blob=big_blob,
        big_blob_oid=rev("main:big.bin"),
        readme_oid=rev("main:README.md"),
        submodule_commit=submodule_commit,
    )


def seed_large_diff_repo(
    storage: Path, relative_path: str = "large.git", *, lines: int = 60000
) -> SeededRepo:
    """Two commits whose diff is a.txt and b.txt (one line each) and then
    c.txt with `lines` changed lines: megabytes of patch after two small files."""
    with tempfile.TemporaryDirectory(prefix="seed-large-diff-") as scratch:
        work = Path(scratch) / "work"
        git(["init", "-q", "-b", "main", str(work)])
        for text, message in (("before", "base"), ("after", "head")):
            _write(work, "a.txt", f"a {text}\n")
            _write(work, "b.txt", f"b {text}\n")
            _write(work, "c.txt", "".join(f"{text} line {i}\n" for i in range(lines)))
            git(["add", "-A"], cwd=work)
            git(["commit", "-q", "-m", message], cwd=work)
        target = storage / relative_path
        target.parent.mkdir(parents=True, exist_ok=True)
        git(["clone", "-q", "--bare", "--no-local", str(work), str(target)])

    def rev(name: str) -> str:
        return git(["--git-dir", str(target), "rev-parse", name]).strip()

    return SeededRepo(target, relative_path, "sha1", rev("main~1"), rev("main"))


def copy_repo(template: DiffRepo, storage: Path, relative_path: str | None = None) -> DiffRepo:
    """A copy of `template` at `storage/relative_path` (the template's path by default)."""
    relative_path = relative_path or template.relative_path
    target = storage / relative_path
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(template.path, target, symlinks=True)
    return replace(template, path=target, relative_path=relative_path)
